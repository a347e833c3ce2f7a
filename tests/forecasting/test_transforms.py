"""Target transforms: returns -> prices round trips, streaming == one pass with a transform,
forecasts in price units."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from recurra.data.schema import (
    Y_HAT,
    ContractFrame,
    SchemaError,
    contract,
    quantile_column,
    validate_frame,
)
from recurra.forecasting import transforms as tfm
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster
from recurra.nn.train import TrainConfig
from tests.conftest import flat_config, make_frame

torch.set_num_threads(1)
TRAIN = TrainConfig(max_epochs=2, batch_size=16, device="cpu", seed=0)


def prices(n_steps: int = 90, seed: int = 3) -> pl.DataFrame:
    """Positive random-walk 'prices' with gaps (two series, two channels)."""
    frame = make_frame(n_series=2, n_steps=n_steps, n_channels=2, gap_share=0.2, seed=seed)
    return frame.with_columns(pl.col("value").cum_sum().over("series_id", "channel")
                              .mul(0.01).exp().mul(100.0))


@pytest.mark.parametrize("kind", ["log_return", "difference"])
def test_returns_back_to_prices_equals_the_input_prices(kind):
    frame = prices()
    returns = tfm.to_returns(frame, kind)
    validate_frame(returns)
    back = tfm.from_returns(returns, tfm.first_levels(frame), kind)
    expected = frame.sort("series_id", "channel", "timestamp")
    assert back["observed"].to_list() == expected["observed"].to_list()   # gaps stay gaps
    np.testing.assert_allclose(back["value"].drop_nulls().to_numpy(),
                               expected["value"].drop_nulls().to_numpy(), rtol=1e-12)


def test_a_return_spans_a_gap_and_anchors_start_new_rows():
    frame = pl.DataFrame({"series_id": "s", "channel": "close",
                          "timestamp": pl.datetime_range(pl.datetime(2024, 1, 1, time_zone="UTC"),
                                                         pl.datetime(2024, 1, 4, time_zone="UTC"),
                                                         "1d", eager=True),
                          "value": [100.0, None, 110.0, 121.0]})
    frame = validate_frame(frame.with_columns(pl.col("value").is_not_null().alias("observed")))
    returns = tfm.to_returns(frame, "log_return")
    assert returns["observed"].to_list() == [False, False, True, True]
    np.testing.assert_allclose(returns["value"].to_list()[2:], np.log([1.1, 1.1]))
    later = tfm.to_returns(frame.tail(1), "difference", anchors={("s", "close"): 110.0})
    assert later["value"].to_list() == [11.0]
    with pytest.raises(SchemaError, match="positive values.*'close'"):
        tfm.to_returns(frame.with_columns(pl.col("value") - 105), "log_return")


def test_forecast_to_levels_cumulates_points_and_widens_quantiles():
    forecast = pl.DataFrame({"series_id": "s", "channel": "close", "step": [1, 2],
                             Y_HAT: [0.1, 0.1], "q10": [0.0, 0.0], "q90": [0.2, 0.2]})
    levels = tfm.forecast_to_levels(forecast, {("s", "close"): 10.0}, "difference",
                                    ["q10", "q90"])
    np.testing.assert_allclose(levels[Y_HAT], [10.1, 10.2])
    np.testing.assert_allclose(levels["q90"], [10.2, 10.2 + np.sqrt(0.02)])
    np.testing.assert_allclose(levels["q10"], [10.0, 10.2 - np.sqrt(0.02)])


def _config(**kwargs) -> ForecasterConfig:
    values = dict(hidden_size=8, lookback=16, horizon=6, train=TRAIN,
                  target_transform="log_return")
    values.update(kwargs)
    return flat_config(**values)


@pytest.mark.parametrize("kwargs", [dict(stateful=True, tbptt_length=20), dict(stateful=False)],
                         ids=["stateful", "windows"])
def test_streaming_with_a_transform_equals_one_pass(kwargs, tmp_path):
    frame = prices()
    times = sorted(frame["timestamp"].unique().to_list())
    train = frame.filter(pl.col("timestamp") < times[70])
    streamed = RNNForecaster(_config(**kwargs)).fit(train)
    one_pass = streamed.predict(frame=frame)
    for t in times[70:]:
        streamed.update(frame.filter(pl.col("timestamp") == t))
    np.testing.assert_allclose(streamed.predict()[Y_HAT].to_numpy(),
                               one_pass[Y_HAT].to_numpy(), rtol=1e-4)
    # forecasts are in price units, near the last observed price, quantiles ordered
    forecast = streamed.predict()
    last = tfm.last_levels(frame)
    first = forecast.filter(pl.col("step") == 1)
    for row in first.iter_rows(named=True):
        assert abs(row[Y_HAT] / last[(row["series_id"], row["channel"])] - 1) < 0.2
    q10, q90 = quantile_column(0.1), quantile_column(0.9)
    assert (forecast[q10] <= forecast[Y_HAT]).all() and (forecast[Y_HAT] <= forecast[q90]).all()
    loaded = RNNForecaster.load(streamed.save(tmp_path / "fc"))
    assert loaded.predict().equals(forecast)


def test_transform_scales_on_training_returns_and_rejects_unknown_kind():
    frame = prices()
    fitted = RNNForecaster(_config()).fit(frame)
    center, scale = next(iter(fitted.scaler_.values()))
    assert np.all(np.abs(center) < 0.1) and np.all(scale < 1.0)   # returns, not prices ~100
    with pytest.raises(Exception, match="target_transform.*log_return"):
        ForecasterConfig(target_transform="percent")


@pytest.mark.parametrize("kind", ["log_return", "difference"])
def test_returns_of_a_contract_frame_keep_its_rows_without_a_second_check(kind,
                                                                          contract_checks):
    frame = prices()
    checked = contract(frame)
    contract_checks.clear()
    returns = tfm.to_returns(checked, kind)
    later = tfm.to_returns(checked.rows(pl.col("timestamp") > frame["timestamp"].min()), kind,
                           anchors=tfm.last_levels(frame))
    assert isinstance(returns, ContractFrame) and isinstance(later, ContractFrame)
    assert contract_checks == []
    assert returns.frame.equals(validate_frame(tfm.to_returns(frame, kind)))


def test_rnn_fit_with_returns_validation_and_intervals_checks_each_frame_once(contract_checks):
    frame = prices()
    times = sorted(frame["timestamp"].unique().to_list())
    train, validation = (frame.filter(pl.col("timestamp") < times[60]),
                         frame.filter(pl.col("timestamp") >= times[40]))
    config = _config(interval="conformal")
    contract_checks.clear()
    RNNForecaster(config).fit(train, validation=validation).predict(frame=train)
    assert contract_checks == ["train", "validation", "history"]  # plain frames: once each
    train, validation = contract(train), contract(validation)
    contract_checks.clear()
    RNNForecaster(config).fit(train, validation=validation).predict(frame=train)
    assert contract_checks == []  # returns, exclusions, calibration: no check again
