"""Adaptive conformal inference (recurra.forecasting.adaptive): the alpha update by hand, delayed
feedback without look-ahead, coverage under a scale shift, and config/input errors."""

from __future__ import annotations

import numpy as np
import pytest

from recurra.data.schema import RecurraError
from recurra.forecasting.adaptive import AdaptiveConfig, AdaptiveConformal


def test_alpha_update_and_widths_hand_computed():
    seed = np.array([1.0, 2.0, 3.0, 4.0]).reshape(4, 1, 1)
    aci = AdaptiveConformal(AdaptiveConfig(alpha=0.2, gamma=0.1)).fit(seed)
    # rank ceil((4 + 1) * 0.8) = 4 -> the 4th smallest seed score
    assert aci.widths()[0, 0] == 4.0
    aci.update(np.array([[5.0]]), np.array([[4.0]]))  # miss: 0.2 + 0.1 * (0.2 - 1) = 0.12
    assert aci.alpha_[0, 0] == pytest.approx(0.12)
    # rank ceil(5 * 0.88) = 5 > n -> the largest score seen (the streamed 5.0)
    assert aci.widths()[0, 0] == 5.0
    aci.update(np.array([[0.5]]), np.array([[5.0]]))  # cover: 0.12 + 0.1 * 0.2 = 0.14
    assert aci.alpha_[0, 0] == pytest.approx(0.14)
    aci.update(np.array([[np.nan]]), np.array([[5.0]]))  # nothing arrived: unchanged
    assert aci.alpha_[0, 0] == pytest.approx(0.14) and aci.n_updates_[0, 0] == 2
    aci.alpha_ = np.array([[0.5]])  # rank ceil(5 * 0.5) = 3
    assert aci.widths()[0, 0] == 3.0
    aci.alpha_ = np.array([[-0.3]])
    assert aci.widths()[0, 0] == 5.0
    aci.alpha_ = np.array([[1.2]])
    assert aci.widths()[0, 0] == 0.0


def test_run_uses_only_feedback_whose_target_is_past():
    rng = np.random.default_rng(0)
    scores = np.abs(rng.normal(size=(40, 4, 2)))
    config = AdaptiveConfig(alpha=0.2, gamma=0.2)
    seed = np.abs(rng.normal(size=(10, 4, 2)))
    widths = AdaptiveConformal(config).fit(seed).run(scores)
    origin, step = np.meshgrid(np.arange(40), np.arange(4), indexing="ij")
    for t in (0, 3, 17, 38):
        future = origin + step + 1 > t  # targets not yet known at origin t
        changed = np.where(future[..., None], 100.0, scores)
        again = AdaptiveConformal(config).fit(seed).run(changed)
        np.testing.assert_array_equal(again[:t + 1], widths[:t + 1])
        # the step-0 score of origin t arrives at t + 1: a miss (100) and a cover (0) there
        # leave step 0's levels gamma apart
        levels = [AdaptiveConformal(config).fit(seed), AdaptiveConformal(config).fit(seed)]
        for aci, value in zip(levels, (0.0, 100.0), strict=True):
            aci.run(np.where(future[..., None], value, scores)[:t + 2])
        np.testing.assert_allclose(levels[0].alpha_[0] - levels[1].alpha_[0], config.gamma)
    # at origin 0 nothing has arrived; at origin 1 only step 0 of origin 0
    first = AdaptiveConformal(config).fit(seed)
    np.testing.assert_array_equal(widths[0], first.widths())
    np.testing.assert_array_equal(widths[1, 1:], first.widths()[1:])


def test_adaptive_band_keeps_nominal_coverage_when_noise_doubles():
    rng = np.random.default_rng(1)
    seed = np.abs(rng.normal(size=(2000, 3, 2)))
    scale = np.repeat([1.0, 2.0], 2000)[:, None, None]
    scores = np.abs(rng.normal(size=(4000, 3, 2))) * scale
    aci = AdaptiveConformal(AdaptiveConfig(alpha=0.2, gamma=0.01)).fit(seed)
    widths = aci.run(scores)
    static = np.quantile(seed, 0.8, axis=0)
    adaptive_cov = float(np.mean(scores <= widths))
    static_cov = float(np.mean(scores <= static))
    assert abs(adaptive_cov - 0.8) < 0.02
    assert static_cov < 0.7  # ~0.5 after the shift
    assert abs(float(np.mean(scores[2000:] <= widths[2000:])) - 0.8) < 0.04
    assert widths[-1].mean() > 1.5 * widths[1000].mean()


@pytest.mark.parametrize("kwargs,match", [
    (dict(gamma=0.0), "gamma"), (dict(gamma=1.5), "gamma"), (dict(gamma=float("nan")), "gamma"),
    (dict(alpha=0.0), "alpha"), (dict(alpha=1.0), "alpha"), (dict(alpha=float("nan")), "alpha"),
])
def test_bad_config_raises(kwargs, match):
    with pytest.raises(RecurraError, match=match):
        AdaptiveConfig(**kwargs)


def test_bad_inputs_raise():
    with pytest.raises(RecurraError, match="not fitted"):
        AdaptiveConformal().widths()
    with pytest.raises(RecurraError, match=r"\(n >= 1, H, C\)"):
        AdaptiveConformal().fit(np.ones((5, 3)))
    with pytest.raises(RecurraError, match=">= 0"):
        AdaptiveConformal().fit(-np.ones((5, 2, 1)))
    with pytest.raises(RecurraError, match="finite"):
        AdaptiveConformal().fit(np.full((5, 2, 1), np.nan))
    aci = AdaptiveConformal().fit(np.ones((5, 2, 1)))
    with pytest.raises(RecurraError, match=r"\(H, C\)"):
        aci.update(np.ones((3, 1)), np.ones((3, 1)))
    with pytest.raises(RecurraError, match=r"\(T, 2, 1\)"):
        aci.run(np.ones((4, 3, 1)))
