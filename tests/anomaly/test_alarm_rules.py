"""The likelihood's re-learning after a sustained alarm and NAB's spatial rule."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from recurra.anomaly import DETECTORS, EnsembleConfig, EnsembleDetector, ThresholdConfig
from recurra.anomaly import likelihood as lk
from recurra.anomaly.scores import spatial_flags
from recurra.data.schema import RecurraError
from tests.anomaly.configs import config_for
from tests.anomaly.test_likelihood import chained_and_whole
from tests.conftest import make_frame

RULES = ThresholdConfig(kind="likelihood", likelihood_window=5, likelihood_history=200,
                        likelihood_period=20, likelihood_relearn=6, spatial_tolerance=0.1)



# likelihood re-learning --------------------------------------------------------------------
def test_likelihood_relearns_after_a_sustained_alarm_as_hand_computed():
    # history of zeros: N(0, MIN_STD); a jump to 10 is ~200 sigma -> log-likelihood ~1
    kwargs = dict(history=100, window=1, period=1000, level=0.5)
    never = lk.likelihood_init(np.zeros(100), **kwargs)
    values, _ = lk.likelihood_step(never, np.full(5, 10.0))
    assert (values >= 0.5).all()                 # without relearn the jump keeps alarming
    state = lk.likelihood_init(np.zeros(100), relearn=3, **kwargs)
    values, end = lk.likelihood_step(state, np.full(5, 10.0))
    # after 3 alarm rows the history is [10, 10, 10]: N(10, MIN_STD), so 10 has tail 0.5
    assert (values >= 0.5).tolist() == [True, True, True, False, False]
    np.testing.assert_allclose(values[3:], lk.log_likelihood(0.5))
    np.testing.assert_array_equal(end.history, np.full(5, 10.0))
    assert (end.mean, end.std, end.run) == (10.0, lk.MIN_STD, 0)


def test_relearning_in_chunks_equals_one_call():
    rng = np.random.default_rng(3)
    scores = np.concatenate([rng.normal(size=150), 9 + rng.normal(size=250)])
    scores[[20, 170]] = np.nan
    state = lk.likelihood_init(rng.normal(size=100), history=150, window=4, period=30,
                               relearn=10, level=0.5)
    whole, end, carried = chained_and_whole(state, scores, [1, 152, 155, 161, 300])
    assert carried.run == end.run
    flags = np.nan_to_num(whole) >= 0.5
    assert flags[150:170].any() and not flags[200:].any()   # one run, then the new norm


def test_bad_relearn_and_spatial_settings_are_named():
    with pytest.raises(RecurraError, match=r"likelihood relearn \(0\) must be an integer >= 1"):
        lk.likelihood_init(np.zeros(10), relearn=0)
    with pytest.raises(RecurraError, match=r"relearn \(50\) must be <= history \(20\)"):
        lk.likelihood_init(np.zeros(10), history=20, window=5, relearn=50)
    with pytest.raises(RecurraError, match=r"likelihood_relearn \(0\) must be None or an "
                                           r"integer in \[1, likelihood_history = 8640\]"):
        ThresholdConfig(likelihood_relearn=0)
    with pytest.raises(RecurraError, match=r"spatial_tolerance \(-0.1\) must be None or a "
                                           r"finite number >= 0"):
        ThresholdConfig(spatial_tolerance=-0.1)
    assert ThresholdConfig().likelihood_relearn is None and ThresholdConfig().spatial_tolerance \
        is None                                  # both off by default (backward compatible)


# spatial rule ------------------------------------------------------------------------------
def test_spatial_flags_hand_computed_two_channels():
    values = np.array([[1.0, np.nan], [2.2, 5.0], [2.3, 7.0], [np.nan, -0.5], [0.0, 6.0]])
    flags, low, high = spatial_flags(values, np.array([0.0, np.inf]),
                                     np.array([2.0, -np.inf]), 0.1)
    # ch0 range [0, 2]: 2.2 is exactly 2 + 0.1 * 2 (not above); then [0, 2.2]: 2.3 < 2.42.
    # ch1 has no value before row 1 (nothing flagged); then [5, 5]: 7 > 5, -0.5 < 5 - 0.2.
    assert flags.tolist() == [False, False, True, True, False]
    np.testing.assert_array_equal(low, [0.0, -0.5])
    np.testing.assert_array_equal(high, [2.3, 7.0])


def test_spatial_rule_in_a_detector_scores_one_and_streams_like_batch():
    frame = make_frame(n_series=1, n_steps=160, gap_share=0.05, seed=7)
    train = frame.head(100)
    low, high = train["value"].min(), train["value"].max()
    spike = frame.with_columns(pl.when(pl.int_range(pl.len()) == 130)
                               .then(high + 0.3 * (high - low))   # out of range, not extreme
                               .otherwise(pl.col("value")).alias("value"))
    zscore = DETECTORS["rolling_zscore"]
    detector = zscore(config_for(zscore, RULES)).fit(train)
    batch = detector.update(spike.slice(100))
    row = batch.filter(pl.col("timestamp") == spike["timestamp"][130])
    assert row["score"].item() == 1.0 and row["is_anomaly"].item()
    plain = zscore(config_for(zscore, replace(RULES, spatial_tolerance=None))).fit(train)
    other = plain.update(spike.slice(100)).filter(pl.col("timestamp") == row["timestamp"])
    assert other["score"].item() < 0.5 and not other["is_anomaly"].item()
    detector = zscore(config_for(zscore, RULES)).fit(train)   # the same, streamed
    stamps = spike["timestamp"].dt.replace_time_zone(None).to_numpy()
    values = spike["value"].fill_null(np.nan).to_numpy()
    parts = [detector.update(spike.slice(100, 7))]
    for i in range(107, 160):
        parts.append(detector._update_series("s0", stamps[i:i + 1], values[i:i + 1, None])[0])
    streamed = np.concatenate([parts[0]["score"].fill_null(np.nan).to_numpy(), *parts[1:]])
    np.testing.assert_allclose(streamed, batch["score"].fill_null(np.nan).to_numpy())


@pytest.mark.parametrize("name", ["forecast_error", "isolation_forest"])
def test_alarm_rules_streamed_equal_batch(name):
    frame = make_frame(n_series=2, n_steps=120, n_channels=2, gap_share=0.05, seed=4)
    detector = DETECTORS[name](config_for(DETECTORS[name], RULES)).fit(frame)
    stamps = frame["timestamp"].unique().sort()
    spiked = frame.with_columns(pl.when(pl.col("timestamp") == stamps[90]).then(100.0)
                                .otherwise(pl.col("value")).alias("value"))
    batch = detector.score(spiked).sort(["series_id", "timestamp"])
    assert batch.filter(pl.col("timestamp") == stamps[90])["score"].to_list() == [1.0, 1.0]
    detector.reset()
    streamed = pl.concat([detector.update(spiked.filter(pl.col("timestamp") < stamps[70])),
                          detector.update(spiked.filter(pl.col("timestamp") >= stamps[70]))])
    streamed = streamed.sort(["series_id", "timestamp"])
    np.testing.assert_allclose(streamed["score"].fill_null(np.nan).to_numpy(),
                               batch["score"].fill_null(np.nan).to_numpy(), atol=1e-6)
    assert streamed["is_anomaly"].to_list() == batch["is_anomaly"].to_list()


def test_ensemble_members_carry_the_rules(tmp_path):
    frame = make_frame(n_series=1, n_steps=120, seed=2)
    members = ("rolling_zscore", "isolation_forest")
    config = EnsembleConfig(members, tuple(config_for(DETECTORS[m], RULES) for m in members))
    ensemble = EnsembleDetector(config).fit(frame.head(80))
    ensemble.save(tmp_path / "e")
    loaded = EnsembleDetector.load(tmp_path / "e")
    assert loaded.members_[0].config.threshold.spatial_tolerance == 0.1
    np.testing.assert_allclose(loaded.update(frame.slice(80))["score"].to_numpy(),
                               ensemble.update(frame.slice(80))["score"].to_numpy())
