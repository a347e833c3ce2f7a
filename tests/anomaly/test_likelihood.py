"""Anomaly likelihood (pure functions), the likelihood threshold in detectors, the ensemble."""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch

from recurra.anomaly import (
    DETECTORS,
    AutoencoderConfig,
    EnsembleConfig,
    EnsembleDetector,
    ThresholdConfig,
)
from recurra.anomaly import likelihood as lk
from recurra.data.schema import EVENT_SCHEMA, SCORE_SCHEMA, NotFittedError, RecurraError
from tests.anomaly.configs import config_for
from tests.conftest import make_frame

LIKELY = ThresholdConfig(kind="likelihood", likelihood_window=5, likelihood_history=200,
                         likelihood_period=20)



@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return make_frame(n_series=2, n_steps=120, n_channels=2, gap_share=0.05, seed=4)


# pure functions ---------------------------------------------------------------------------
def test_hand_computed_tail_log_score_and_gaussian():
    assert lk.tail_probability(1.0, 1.0, 3.0) == 0.5
    assert lk.tail_probability(3.0, 1.0, 2.0) == pytest.approx(0.5 * math.erfc(1 / math.sqrt(2)))
    assert lk.log_likelihood(0.0) == pytest.approx(1.0)
    assert lk.log_likelihood(1e-5) == pytest.approx(0.5, abs=1e-5)
    # moving averages of [0, 2, 4, 6] with window 2: 1, 3, 5 -> mean 3, std sqrt(8/3)
    mean, std = lk.fit_gaussian(np.array([0., 2., 4., 6.]), 2)
    assert (mean, std) == pytest.approx((3.0, math.sqrt(8 / 3)))
    assert lk.fit_gaussian(np.ones(5), 2) == (1.0, lk.MIN_STD)   # floored spread


def test_init_checks_its_settings():
    with pytest.raises(RecurraError, match=r"history \(3\) must be >= window \(5\)"):
        lk.likelihood_init(np.zeros(10), history=3, window=5)
    with pytest.raises(RecurraError, match=r"period \(0\) must be an integer >= 1"):
        lk.likelihood_init(np.zeros(10), period=0)


def test_stationary_series_flags_almost_nothing():
    rng = np.random.default_rng(0)
    state = lk.likelihood_init(rng.normal(size=500), history=2000, window=10, period=100)
    values, _ = lk.likelihood_step(state, rng.normal(size=5000))
    assert np.all((values >= 0) & (values <= 1))
    assert int(np.sum(values >= 0.5)) <= 2       # tail 1e-5 over 5,000 correlated means


def test_level_shift_is_flagged_then_adapted_to():
    rng = np.random.default_rng(1)
    state = lk.likelihood_init(rng.normal(size=500), history=500, window=10, period=50)
    shifted = np.concatenate([rng.normal(size=500), 8.0 + rng.normal(size=2000)])
    values, _ = lk.likelihood_step(state, shifted)
    flags = values >= 0.5
    assert not flags[:500].any()
    assert flags[500:560].any()                  # the shift alarms as it appears ...
    assert not flags[1500:].any()                # ... and is normal once in the history


def chained_and_whole(state: lk.LikelihoodState, scores: np.ndarray, cuts: list[int]):
    """One ``likelihood_step`` over ``scores`` and a chain of steps over its pieces cut at
    ``cuts``; asserts they give the same values and history. Returns (whole, end, carried)."""
    whole, end = lk.likelihood_step(state, scores)
    parts, carried = [], state
    for chunk in np.array_split(scores, cuts):
        out, carried = lk.likelihood_step(carried, chunk)
        parts.append(out)
    np.testing.assert_array_equal(np.concatenate(parts), whole)
    np.testing.assert_array_equal(carried.history, end.history)
    return whole, end, carried


def test_chained_calls_equal_one_call_and_nan_changes_nothing():
    rng = np.random.default_rng(2)
    scores = rng.normal(size=400)
    scores[[50, 51, 300]] = np.nan
    state = lk.likelihood_init(rng.normal(size=100), history=150, window=7, period=30)
    whole, end, carried = chained_and_whole(state, scores, [1, 2, 60, 61, 250])
    assert np.isnan(whole[[50, 51, 300]]).all() and end.history.size == 150


# detectors -------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_likelihood_streaming_equals_batch_for_every_detector(name, frame):
    detector = DETECTORS[name](config_for(DETECTORS[name], LIKELY)).fit(frame)
    batch = detector.score(frame).sort(["series_id", "timestamp"])
    scores = batch["score"].drop_nulls().to_numpy()
    assert ((scores >= 0) & (scores <= 1)).all()
    detector.reset()
    timestamps = frame["timestamp"].unique().sort().to_list()
    parts = [detector.update(frame.filter(pl.col("timestamp") == t)) for t in timestamps[:15]]
    parts.append(detector.update(frame.filter(pl.col("timestamp") > timestamps[14])))
    streamed = pl.concat(parts).sort(["series_id", "timestamp"])
    np.testing.assert_allclose(streamed["score"].fill_null(np.nan).to_numpy(),
                               batch["score"].fill_null(np.nan).to_numpy(), atol=1e-6)
    assert streamed["is_anomaly"].to_list() == batch["is_anomaly"].to_list()


def test_config_checks_likelihood_settings():
    with pytest.raises(RecurraError, match=r"likelihood_level \(1.5\) must be in \(0, 1\)"):
        ThresholdConfig(kind="likelihood", likelihood_level=1.5)
    with pytest.raises(RecurraError, match=r"likelihood_history \(5\) must be >= "
                                           r"likelihood_window \(10\)"):
        ThresholdConfig(likelihood_history=5)


# ensemble --------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def ensemble(frame) -> EnsembleDetector:
    torch.set_num_threads(1)
    config = EnsembleConfig(("rolling_zscore", "forecast_error"),
                            (config_for(DETECTORS["rolling_zscore"], LIKELY),
                             config_for(DETECTORS["forecast_error"],
                                        replace(LIKELY, likelihood_window=3))))
    return EnsembleDetector(config).fit(frame)


def test_ensemble_is_the_max_of_its_members(ensemble, frame):
    scores = ensemble.score(frame)
    for column, dtype in SCORE_SCHEMA.items():
        assert scores.schema[column] == dtype
    members = [m.score(frame) for m in ensemble.members_]
    stacked = np.vstack([m["score"].fill_null(np.nan).to_numpy() for m in members])
    np.testing.assert_allclose(scores["score"].fill_null(np.nan).to_numpy(),
                               np.nanmax(stacked, axis=0))
    flags = np.vstack([m["is_anomaly"].to_numpy() for m in members]).any(axis=0)
    assert scores["is_anomaly"].to_list() == flags.tolist()
    assert dict(ensemble.predict(frame).schema) == EVENT_SCHEMA


def test_ensemble_streams_and_round_trips(ensemble, frame, tmp_path):
    batch = ensemble.score(frame).sort(["series_id", "timestamp"])
    ensemble.reset()
    cut = frame["timestamp"].unique().sort()[40]
    streamed = pl.concat([ensemble.update(frame.filter(pl.col("timestamp") < cut)),
                          ensemble.update(frame.filter(pl.col("timestamp") >= cut))])
    streamed = streamed.sort(["series_id", "timestamp"])
    np.testing.assert_allclose(streamed["score"].fill_null(np.nan).to_numpy(),
                               batch["score"].fill_null(np.nan).to_numpy(), atol=1e-6)
    folder = ensemble.save(tmp_path / "ensemble")
    assert not (folder / "state.pkl").exists()  # format 3
    loaded = EnsembleDetector.load(tmp_path / "ensemble")
    assert loaded.config == ensemble.config
    assert loaded.score(frame).equals(ensemble.score(frame))
    span = frame["timestamp"].max() - frame["timestamp"].min()
    later = frame.with_columns(pl.col("timestamp") + span * 2)  # after what was streamed
    assert loaded.update(later).equals(ensemble.update(later))


def test_ensemble_config_errors_and_not_fitted(frame):
    with pytest.raises(RecurraError, match=r"'nope' must be one of"):
        EnsembleConfig(("nope",))
    with pytest.raises(RecurraError, match="threshold.kind='likelihood'"):
        EnsembleConfig(("lstm_ae",), (AutoencoderConfig(),))
    with pytest.raises(RecurraError, match="'lstm_ae' must be of class AutoencoderConfig"):
        EnsembleConfig(("lstm_ae",), (config_for(DETECTORS["rolling_zscore"], LIKELY),))
    with pytest.raises(RecurraError, match=r"one per member \(2\)"):
        EnsembleConfig(("lstm_ae", "grud_ae"), (config_for(DETECTORS["lstm_ae"], LIKELY),))
    with pytest.raises(NotFittedError, match="EnsembleDetector"):
        EnsembleDetector().score(frame)
