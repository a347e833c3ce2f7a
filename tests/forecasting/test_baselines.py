"""Baseline forecasters: hand-computed forecasts, intervals, streaming, persistence, errors."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from recurra.data.schema import FORECAST_SCHEMA, NotFittedError, SchemaError
from recurra.forecasting.baselines import (
    LinearLagConfig,
    LinearLagForecaster,
    NaiveConfig,
    NaiveForecaster,
    SeasonalNaiveConfig,
    SeasonalNaiveForecaster,
)
from tests.conftest import make_frame


def _frame(values, series_id="a", start=dt.datetime(2024, 1, 1, tzinfo=dt.UTC)):
    return pl.DataFrame({
        "series_id": [series_id] * len(values),
        "timestamp": [start + dt.timedelta(hours=i) for i in range(len(values))],
        "value": values,
    })


ESTIMATORS = [
    (NaiveForecaster, NaiveConfig(horizon=6)),
    (SeasonalNaiveForecaster, SeasonalNaiveConfig(season=24, horizon=6)),
    (LinearLagForecaster, LinearLagConfig(n_lags=24, horizon=6)),
]


def test_naive_repeats_last_observed_value():
    values = [float(i) for i in range(30)] + [None, None]
    forecast = NaiveForecaster(NaiveConfig(horizon=3)).fit(_frame(values)).predict()
    assert forecast["y_hat"].to_list() == [29.0, 29.0, 29.0]
    assert forecast["step"].to_list() == [1, 2, 3]
    last = dt.datetime(2024, 1, 1, tzinfo=dt.UTC) + dt.timedelta(hours=31)
    assert forecast["issued_at"][0] == last
    assert forecast["timestamp"].to_list() == [last + dt.timedelta(hours=h) for h in (1, 2, 3)]


def test_naive_intervals_are_the_error_quantiles_of_a_random_walk():
    # a line with slope 1: the h-step error of repeat-last is exactly h
    forecast = NaiveForecaster(NaiveConfig(horizon=3)).fit(_frame(
        [float(i) for i in range(60)])).predict()
    assert forecast["q10"].to_list() == pytest.approx([60.0, 61.0, 62.0])
    assert forecast["q90"].to_list() == pytest.approx([60.0, 61.0, 62.0])


def test_seasonal_naive_repeats_the_last_season():
    values = [float(i % 4) * 10 for i in range(12)]  # 0 10 20 30 | ... ends with 30
    fc = SeasonalNaiveForecaster(SeasonalNaiveConfig(season=4, horizon=6)).fit(_frame(values))
    assert fc.predict()["y_hat"].to_list() == [0.0, 10.0, 20.0, 30.0, 0.0, 10.0]
    assert fc.predict(horizon=2)["y_hat"].to_list() == [0.0, 10.0]


def test_linear_lag_learns_an_exact_linear_recursion():
    season = 12
    t = np.arange(400)
    values = (np.sin(2 * np.pi * t / season) + 0.01 * t).tolist()
    config = LinearLagConfig(n_lags=24, horizon=5, alpha=1e-6, normalize="last")
    fc = LinearLagForecaster(config).fit(_frame(values))
    future = np.sin(2 * np.pi * np.arange(400, 405) / season) + 0.01 * np.arange(400, 405)
    assert fc.predict()["y_hat"].to_numpy() == pytest.approx(future, abs=1e-3)
    assert fc.coef_.shape == (5, 24) and fc.intercept_.shape == (5,)


@pytest.mark.parametrize("normalize", ["none", "mean", "last"])
def test_linear_lag_handles_gaps_in_targets(normalize):
    frame = make_frame(n_series=2, n_steps=150, gap_share=0.2, seed=3)
    config = LinearLagConfig(n_lags=24, horizon=4, normalize=normalize)
    forecast = LinearLagForecaster(config).fit(frame).predict()
    assert forecast.height == 2 * 4
    assert np.isfinite(forecast["y_hat"].to_numpy()).all()


@pytest.mark.parametrize(("cls", "config"), ESTIMATORS)
def test_output_frame_contract_and_interval_order(cls, config):
    frame = make_frame(n_series=2, n_steps=120, n_channels=2, seed=1)
    forecast = cls(config).fit(frame).predict()
    for column, dtype in FORECAST_SCHEMA.items():
        assert forecast.schema[column] == dtype, column
    assert forecast.height == 2 * 2 * config.horizon
    assert (forecast["q10"] <= forecast["q90"]).all()
    assert forecast.select(["series_id", "channel", "step"]).is_duplicated().sum() == 0


@pytest.mark.parametrize(("cls", "config"), ESTIMATORS)
def test_update_equals_fitting_state_on_the_longer_history(cls, config):
    full = make_frame(n_series=2, n_steps=160, seed=2)
    cut = full["timestamp"].unique().sort()[119]
    fitted = cls(config).fit(full.filter(pl.col("timestamp") <= cut))
    streamed = fitted.update(full.filter(pl.col("timestamp") > cut))
    from_frame = fitted.predict(frame=full)
    assert streamed.equals(from_frame)
    assert streamed["issued_at"].max() == full["timestamp"].max()


@pytest.mark.parametrize(("cls", "config"), ESTIMATORS)
def test_save_load_round_trip(cls, config, tmp_path):
    fc = cls(config).fit(make_frame(seed=4))
    fc.save(tmp_path / "model")
    loaded = cls.load(tmp_path / "model")
    assert loaded.config == config
    assert loaded.predict().equals(fc.predict())


@pytest.mark.parametrize(("cls", "config"), ESTIMATORS)
def test_predict_before_fit_names_the_class(cls, config):
    with pytest.raises(NotFittedError, match=cls.__name__):
        cls(config).predict()


def test_errors_name_parameter_value_and_rule():
    with pytest.raises(SchemaError, match=r"`season` \(0\) must be an integer >= 1"):
        SeasonalNaiveConfig(season=0)
    with pytest.raises(SchemaError, match=r"`normalize` \('median'\) must be one of"):
        LinearLagConfig(normalize="median")
    with pytest.raises(SchemaError, match="`quantiles`"):
        NaiveConfig(quantiles=(0.1, 1.5))
    fc = NaiveForecaster(NaiveConfig(horizon=4)).fit(make_frame())
    with pytest.raises(SchemaError, match=r"`horizon` \(5\) must be an integer in \[1, 4\]"):
        fc.predict(horizon=5)
    with pytest.raises(SchemaError, match="needs >= context"):
        LinearLagForecaster(LinearLagConfig(n_lags=96, horizon=24)).fit(make_frame(n_steps=100))


def test_predict_windows_matches_frame_predict():
    frame = make_frame(n_series=1, n_steps=100, gap_share=0.0, seed=5)
    fc = LinearLagForecaster(LinearLagConfig(n_lags=24, horizon=6)).fit(frame)
    history = frame["value"].to_numpy()[None, -24:, None]
    point = fc.predict_windows(history)
    assert point.shape == (1, 6, 1)
    assert point[0, :, 0] == pytest.approx(fc.predict()["y_hat"].to_numpy())
