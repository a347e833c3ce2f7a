"""The interval calibrator (recurra.forecasting.intervals): per-series pools, the recorded
scale-aware fallback, the finite-sample guarantee, ACI per series under drift, config errors,
the fleet path and save/load of forecasters that use it."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import torch

from recurra.data.schema import RecurraError
from recurra.forecasting import RNNForecaster
from recurra.forecasting.baselines import NaiveConfig, NaiveForecaster
from recurra.forecasting.config import EncoderConfig, ForecasterConfig, TBPTTConfig
from recurra.forecasting.conformal import empirical_coverage
from recurra.forecasting.fleet import ForecasterFleet
from recurra.forecasting.intervals import IntervalCalibrator, IntervalConfig
from recurra.nn.train import TrainConfig
from tests.conftest import make_frame

torch.set_num_threads(1)
LEVELS = (0.1, 0.5, 0.9)


def _conformal(min_residuals: int = 20) -> IntervalCalibrator:
    return IntervalCalibrator(IntervalConfig("conformal", LEVELS, min_residuals))


def _point(errors: np.ndarray) -> np.ndarray:
    """(W, N, O) point-forecast residuals as (W, N, O, Q) (the same at every level)."""
    return np.repeat(errors[..., None], len(LEVELS), axis=-1)


def _coverage(calibrator: IntervalCalibrator, series: str, errors: np.ndarray) -> float:
    bands = calibrator.apply([series], np.zeros((1, *errors.shape[1:], len(LEVELS))))[0]
    return empirical_coverage(bands[..., 0], bands[..., -1], errors)


def test_each_series_gets_its_own_width():
    rng = np.random.default_rng(0)
    small, large = rng.normal(size=(500, 2, 1)), 100 * rng.normal(size=(500, 2, 1))
    calibrator = _conformal().fit(_point(np.concatenate([small, large])),
                                  ["small"] * 500 + ["large"] * 500, ["value"])
    width = {s: calibrator.offsets([s], 2)[0, ..., -1] - calibrator.offsets([s], 2)[0, ..., 0]
             for s in ("small", "large")}
    assert np.allclose(width["large"] / width["small"], 100, rtol=0.2)
    for name, scale in (("small", 1.0), ("large", 100.0)):  # held-out errors of each series
        held_out = scale * rng.normal(size=(4000, 2, 1))
        assert abs(_coverage(calibrator, name, held_out) - 0.8) < 0.03
    pooled = _conformal().fit(_point(np.concatenate([small, large])), ["all"] * 1000)
    assert _coverage(pooled, "all", rng.normal(size=(4000, 2, 1))) > 0.99  # the old band
    assert calibrator.fallback_ == {}


def test_short_series_falls_back_scale_aware_and_is_reported():
    rng = np.random.default_rng(1)
    errors = np.concatenate([rng.normal(size=(300, 2, 2)), 50 * rng.normal(size=(300, 2, 2)),
                             10 * rng.normal(size=(5, 2, 2))])
    errors[-5:, :, 1] = np.nan                     # channel b of the short series: no errors
    series = ["a"] * 300 + ["b"] * 300 + ["short"] * 5
    calibrator = _conformal().fit(_point(errors), series, ["x", "y"])
    assert calibrator.fallback_ == {"short": {"x": "channel", "y": "channel"}}
    # the pooled offsets are scaled back to the short series' own error size (~10), not
    # the mixture of 1 and 50
    width = calibrator.offsets(["short"], 2)[0, :, 0, -1] - calibrator.offsets(
        ["short"], 2)[0, :, 0, 0]
    assert np.all((width > 10 * 1.5) & (width < 10 * 4.0))   # N(0, 10): q90 - q10 ~ 25.6
    # with a channel pool that is short too: every channel and series
    tiny = _conformal(min_residuals=700).fit(_point(errors), series, ["x", "y"])
    assert set(tiny.fallback_) == {"a", "b", "short"}
    assert tiny.fallback_["a"] == {"x": "all", "y": "all"}


def test_finite_sample_coverage_is_at_least_nominal_on_exchangeable_data():
    rng = np.random.default_rng(2)
    n_cal, runs, hits = 19, 4000, []
    for _ in range(runs):  # small pools: the guarantee holds on average over calibrations
        errors = rng.standard_t(3, size=(n_cal + 1, 1, 1))
        calibrator = _conformal(min_residuals=1).fit(_point(errors[:-1]), ["s"] * n_cal)
        band = calibrator.offsets(["s"], 1)[0, 0, 0]
        hits.append(band[0] <= errors[-1, 0, 0] <= band[-1])
    assert np.mean(hits) >= 0.8 - 2 * np.sqrt(0.16 / runs)
    assert np.mean(hits) < 0.9                       # and not trivially wide


def test_aci_long_run_miss_rate_near_alpha_under_drift_per_series():
    rng = np.random.default_rng(3)
    config = IntervalConfig("adaptive", LEVELS, adaptive_gamma=0.02)
    seeds = np.abs(np.concatenate([rng.normal(size=(200, 1, 1)),
                                   100 * rng.normal(size=(200, 1, 1))]))
    calibrator = IntervalCalibrator(config).fit(seeds, ["a"] * 200 + ["b"] * 200)
    misses = {"a": [], "b": []}
    for t in range(4000):  # noise of both series grows 3x over the stream
        drift = 1 + 2 * t / 4000
        for name, scale in (("a", 1.0), ("b", 100.0)):
            width = calibrator.widths([name], 1)[0]
            score = np.abs(rng.normal(size=(1, 1))) * scale * drift
            misses[name].append(float(score[0, 0] > width[0, 0]))
            calibrator.update(name, score, width)
    for name in misses:
        assert abs(np.mean(misses[name]) - 0.2) < 0.02
    assert calibrator.n_updates_.tolist() == [[[4000]], [[4000]]]
    assert calibrator.widths(["b"], 1)[0, 0, 0] > 50 * calibrator.widths(["a"], 1)[0, 0, 0]


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(method="bootstrap"), r"method \('bootstrap'\) must be one of"),
    (dict(min_residuals=0), r"min_residuals \(0\) must be an integer >= 1"),
    (dict(adaptive_gamma=1.5), r"adaptive_gamma \(1.5\) must be in \(0, 1\]"),
    (dict(levels=(0.9, 0.1)), r"levels \(\(0.9, 0.1\)\) must be strictly increasing"),
    (dict(method="adaptive", levels=(0.1, 0.8)), "symmetric pair"),
])
def test_config_errors_name_parameter_value_and_rule(kwargs, match):
    with pytest.raises(RecurraError, match=match):
        IntervalConfig(**kwargs)
    with pytest.raises(RecurraError, match=r"min_residuals \(0\) must be an integer >= 1"):
        ForecasterConfig(interval=IntervalConfig(min_residuals=0))


def test_state_is_plain_and_round_trips():
    rng = np.random.default_rng(4)
    for config, errors in ((IntervalConfig("conformal", LEVELS), _point(rng.normal(
            size=(60, 2, 1)))), (IntervalConfig("adaptive", LEVELS), np.abs(rng.normal(
            size=(60, 2, 1))))):
        calibrator = IntervalCalibrator(config).fit(errors, ["a"] * 50 + ["b"] * 10)
        state = calibrator.get_state()
        assert all(isinstance(v, np.ndarray | list | dict) for v in state.values())
        again = IntervalCalibrator.from_state(config, state)
        point = np.zeros((2, 2, 1))
        np.testing.assert_array_equal(again.apply(["a", "b"], _point(point), point),
                                      calibrator.apply(["a", "b"], _point(point), point))
        assert again.fallback_ == calibrator.fallback_ == {"b": {"0": "channel"}}


def _rnn_parts() -> tuple[pl.DataFrame, pl.DataFrame]:
    frame = make_frame(n_series=2, n_steps=150, n_channels=1, gap_share=0.0, seed=5)
    frame = frame.with_columns(pl.when(pl.col("series_id") == pl.col("series_id").min())
                               .then(pl.col("value") * 100).otherwise(pl.col("value")))
    times = sorted(frame["timestamp"].unique().to_list())
    return (frame.filter(pl.col("timestamp") < times[100]),
            frame.filter(pl.col("timestamp") >= times[100 - 16]))


def test_forecaster_save_load_and_old_pooled_offsets(tmp_path):
    train, validation = _rnn_parts()
    config = ForecasterConfig(lookback=16, horizon=4, calendar=False,
                              train=TrainConfig(max_epochs=1, batch_size=16, seed=0),
                              encoder=EncoderConfig(cell="gru", hidden_size=8), output="point",
                              interval="conformal")
    model = RNNForecaster(config).fit(train, validation=validation)
    assert model.interval_.series_ids_ == sorted(train["series_id"].unique().to_list())
    forecast = model.predict()
    loaded = RNNForecaster.load(model.save(tmp_path / "m"))
    assert loaded.predict().equals(forecast)
    state = model._get_state()       # saved before the calibrator: one pooled (N, O, Q)
    pooled = model.interval_.offsets_.mean(axis=0)
    state["conformal"] = pooled
    del state["interval"]
    old = RNNForecaster(model.config)
    old._set_state(state)
    got = old.predict()                      # every series: the one pool, in its own scale
    for series_id in model.interval_.series_ids_:
        one = got.filter(pl.col("series_id") == series_id)
        assert (one["q90"] - one["q10"]).to_numpy() == pytest.approx(
            (pooled[:, 0, 2] - pooled[:, 0, 0]) * model.scaler_[series_id][1][0])


def test_fleet_path_equals_the_per_series_path():
    frame = make_frame(n_series=3, n_steps=90, n_channels=1, gap_share=0.0, seed=6)
    config = ForecasterConfig(lookback=16, horizon=3, calendar=False, stateful=True,
                              train=TrainConfig(max_epochs=1, batch_size=4, seed=0),
                              encoder=EncoderConfig(cell="gru", hidden_size=8),
                              tbptt=TBPTTConfig(length=16))
    model = RNNForecaster(config).fit(frame)
    rng = np.random.default_rng(6)   # stateful RNNs do not calibrate: give it per-series pools
    ids = sorted(model.state_)
    model.interval_ = IntervalCalibrator(IntervalConfig("conformal", config.quantiles)).fit(
        _point(rng.normal(size=(90, 3, 1)) * np.repeat([1.0, 10.0, 100.0], 30)[:, None, None]),
        np.repeat(ids, 30))
    fleet = ForecasterFleet(model).predict()
    frame_forecast = model.predict()
    for j, series_id in enumerate(ids):
        one = frame_forecast.filter(pl.col("series_id") == series_id).sort("step")
        for column in ("y_hat", "q10", "q90"):
            np.testing.assert_allclose(fleet[column][j, :, 0], one[column].to_numpy(),
                                       rtol=1e-5, atol=1e-5)


def test_naive_baseline_short_series_falls_back_and_old_table_loads(tmp_path):
    frame = make_frame(n_series=2, n_steps=120, n_channels=1, gap_share=0.0, seed=7)
    ids = sorted(frame["series_id"].unique().to_list())
    short = frame.filter((pl.col("series_id") != ids[1]) | (
        pl.col("timestamp") < pl.col("timestamp").min() + pl.duration(hours=12)))
    model = NaiveForecaster(NaiveConfig(horizon=3)).fit(short)
    assert model.interval_.fallback_ == {ids[1]: {"value": "channel"}}
    forecast = model.predict()
    loaded = NaiveForecaster.load(model.save(tmp_path / "naive"))
    assert loaded.predict().equals(forecast)
    table = {"pair": {(ids[0], "value"): np.array([[-1.0, 1.0], [-2.0, 2.0], [-3.0, 3.0]])},
             "channel": {"value": np.full((3, 2), np.nan)},
             "all": np.array([[-5.0, 5.0]] * 3)}
    state = {**model._get_state(), "error_quantiles": table}
    del state["interval"]
    old = NaiveForecaster(dataclasses.replace(model.config))
    old._set_state(state)
    got = old.predict()
    width = (got["q90"] - got["q10"]).to_list()
    assert width == [2.0, 4.0, 6.0, 10.0, 10.0, 10.0]   # pair, then (channel NaN) all


def test_an_old_shared_aci_state_loads_as_one_pool_and_then_moves_per_series(tmp_path):
    from recurra.forecasting.adaptive import (
        AdaptiveConfig,
        AdaptiveConformal,
        AdaptiveForecastIntervals,
    )

    train, validation = _rnn_parts()
    config = ForecasterConfig(lookback=16, horizon=4, calendar=False,
                              train=TrainConfig(max_epochs=1, batch_size=16, seed=0),
                              encoder=EncoderConfig(cell="gru", hidden_size=8), output="point",
                              interval="adaptive")
    model = RNNForecaster(config).fit(train, validation=validation)
    old = AdaptiveForecastIntervals()           # what such models pickled
    old.aci_ = AdaptiveConformal(AdaptiveConfig(0.2, 0.005)).fit(
        np.linspace(0.0, 2.0, 50).reshape(50, 1, 1).repeat(4, axis=1))
    old.aci_.alpha_ = np.full((4, 1), 0.3)
    old.issued_ = {}
    state = {**model._get_state(), "adaptive": old}
    del state["interval"]
    loaded = RNNForecaster(config)
    loaded._set_state(state)
    width = old.aci_.widths()[:, 0]              # the old shared half-widths (scaled units)
    forecast = loaded.predict()
    for series_id in model.interval_.series_ids_:
        one = forecast.filter(pl.col("series_id") == series_id)
        scale = model.scaler_[series_id][1][0]
        assert (one["q90"] - one["y_hat"]).to_numpy() == pytest.approx(width * scale)
    loaded = RNNForecaster.load(loaded.save(tmp_path / "again"))   # saved in the new form
    assert loaded.predict().equals(forecast)
    ids = model.interval_.series_ids_
    rows = forecast.filter(pl.col("series_id") == ids[0]).select(
        "series_id", "channel", "timestamp", value=pl.col("y_hat") + 1e3)
    loaded.update(rows)                          # only the first series' levels move
    assert loaded.interval_.series_ids_ == [ids[0]]
    np.testing.assert_allclose(loaded.interval_.alpha_[0, :, 0], 0.3 - 0.005 * 0.8)
    assert loaded.interval_.fallback_ == {ids[0]: {"0": "channel"}}
    again = loaded.predict()
    moved = again.filter(pl.col("series_id") == ids[0])
    assert np.all((moved["q90"] - moved["y_hat"]).to_numpy() >= width * model.scaler_[ids[0]][1][0]
                  - 1e-9)
