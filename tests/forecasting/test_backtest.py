"""Rolling-origin backtesting: origins, no look-ahead, refit modes, errors."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from recurra.data.schema import SchemaError, contract
from recurra.forecasting.backtest import backtest
from recurra.forecasting.baselines import (
    LinearLagConfig,
    LinearLagForecaster,
    NaiveConfig,
    NaiveForecaster,
    SeasonalNaiveConfig,
    SeasonalNaiveForecaster,
)
from tests.conftest import make_frame

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _ramp(n_steps: int, series_ids=("a",)) -> pl.DataFrame:
    return pl.DataFrame({
        "series_id": [s for s in series_ids for _ in range(n_steps)],
        "timestamp": [START + dt.timedelta(hours=i) for i in range(n_steps)] * len(series_ids),
        "value": [float(i) for i in range(n_steps)] * len(series_ids),
    })


def test_naive_on_a_ramp_by_hand():
    result = backtest(lambda: NaiveForecaster(NaiveConfig(horizon=2)), _ramp(30),
                      n_origins=3, horizon=2, stride=4)
    metrics = result.metrics
    assert metrics["origin"].to_list() == [0, 1, 2]
    # last origin leaves 2 steps: index 27; then 23, 19
    hours = [19, 23, 27]
    assert metrics["origin_at"].to_list() == [START + dt.timedelta(hours=h) for h in hours]
    assert metrics["mae"].to_list() == pytest.approx([1.5] * 3)  # errors 1 and 2
    assert metrics["mse"].to_list() == pytest.approx([2.5] * 3)
    assert metrics["mase"].to_list() == pytest.approx([1.5] * 3)  # naive in-sample MAE = 1
    forecasts = result.forecasts
    assert forecasts.height == 3 * 2
    assert forecasts.filter(pl.col("origin") == 2)["y_hat"].to_list() == [27.0, 27.0]
    summary = result.summary()
    assert summary.row(0, named=True)["n"] == 6
    assert summary.row(0, named=True)["n_origins"] == 3


def test_forecasts_never_look_past_their_origin():
    result = backtest(lambda: NaiveForecaster(NaiveConfig(horizon=3)), _ramp(40, ("a", "b")),
                      n_origins=4, horizon=3, stride=2)
    forecasts = result.forecasts
    assert (forecasts["timestamp"] > forecasts["issued_at"]).all()
    origins = result.metrics.select(["origin", "origin_at"]).unique()
    joined = forecasts.join(origins, on="origin")
    assert (joined["issued_at"] == joined["origin_at"]).all()
    assert result.metrics.height == 4 * 2


@pytest.mark.parametrize("factory", [
    lambda: NaiveForecaster(NaiveConfig(horizon=4)),
    lambda: SeasonalNaiveForecaster(SeasonalNaiveConfig(season=24, horizon=4)),
])
def test_refit_never_streaming_equals_refit_every_for_model_free_baselines(factory):
    frame = make_frame(n_series=2, n_steps=120, seed=7)
    never = backtest(factory, frame, n_origins=3, horizon=4, stride=5, refit="never")
    every = backtest(factory, frame, n_origins=3, horizon=4, stride=5, refit="every")
    columns = ["origin", "series_id", "channel", "step", "y_hat"]
    assert never.forecasts.select(columns).equals(every.forecasts.select(columns))


def test_linear_backtest_runs_with_gaps_and_refit():
    frame = make_frame(n_series=1, n_steps=150, seed=8)
    result = backtest(lambda: LinearLagForecaster(LinearLagConfig(n_lags=24, horizon=6)),
                      frame, n_origins=2, horizon=6, stride=6, refit="every", season=24)
    assert result.metrics.height == 2
    assert result.metrics["mae"].is_finite().all()


def test_errors_name_parameter_value_and_rule():
    factory = lambda: NaiveForecaster(NaiveConfig(horizon=2))  # noqa: E731
    with pytest.raises(SchemaError, match=r"`refit` \('sometimes'\) must be one of"):
        backtest(factory, _ramp(30), n_origins=2, horizon=2, refit="sometimes")
    with pytest.raises(SchemaError, match=r"`stride` \(0\) must be an integer >= 1"):
        backtest(factory, _ramp(30), n_origins=2, horizon=2, stride=0)
    with pytest.raises(SchemaError, match=r"frame has 10 timestamps.*= 13"):
        backtest(factory, _ramp(10), n_origins=3, horizon=2, stride=5)
    with pytest.raises(SchemaError, match="`estimator_factory`"):
        backtest(NaiveForecaster(), _ramp(30), n_origins=2, horizon=2)
    with pytest.raises(SchemaError, match="backtest origin 0"):
        backtest(lambda: LinearLagForecaster(LinearLagConfig(n_lags=48, horizon=2)),
                 _ramp(30), n_origins=2, horizon=2)


@pytest.mark.parametrize("refit", ["never", "every"])
def test_backtest_checks_its_frame_once(refit, contract_checks):
    frame = make_frame(n_series=2, n_steps=120, seed=7)
    factory = lambda: SeasonalNaiveForecaster(SeasonalNaiveConfig(season=24, horizon=4))  # noqa: E731
    backtest(factory, frame, n_origins=3, horizon=4, stride=5, refit=refit)
    assert contract_checks == ["frame"]  # the fits, updates and scores get its row filters
    checked = contract(frame)
    contract_checks.clear()
    backtest(factory, checked, n_origins=3, horizon=4, stride=5, refit=refit)
    assert contract_checks == []
