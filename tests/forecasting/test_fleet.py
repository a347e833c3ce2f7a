"""``RNNForecaster.update`` through the fleet returns the forecast of the general path
(within float32 rounding: the fleet encodes one row per call instead of the whole chunk),
and picks the general path where the fleet does not apply."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from recurra.data.arrays import rows_to_arrays
from recurra.data.schema import RecurraError, SchemaError, validate_frame
from recurra.forecasting.config import EncoderConfig, TBPTTConfig
from recurra.forecasting.fleet import ForecasterFleet
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster
from recurra.nn.train import TrainConfig
from tests.conftest import flat_config, make_frame

N_FIT, N_STREAM = 60, 12
TRAIN = TrainConfig(max_epochs=1, batch_size=16, device="cpu", seed=0)



@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return make_frame(n_series=4, n_steps=N_FIT + N_STREAM, n_channels=2, gap_share=0.15,
                      seed=5)


def _split(frame: pl.DataFrame) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    times = sorted(frame["timestamp"].unique().to_list())
    return (frame.filter(pl.col("timestamp") < times[N_FIT]),
            [frame.filter(pl.col("timestamp") == t) for t in times[N_FIT:]])


def _arrays(rows: pl.DataFrame, fleet: ForecasterFleet) -> tuple[np.ndarray, np.ndarray]:
    wide = rows.pivot(on="channel", index=["series_id", "timestamp"], values="value").sort(
        "series_id")
    values = np.column_stack([wide[c].cast(pl.Float64).fill_null(np.nan).to_numpy()
                              for c in fleet.channels_])
    return wide["timestamp"].dt.replace_time_zone(None).to_numpy(), values


def general(forecaster: RNNForecaster, rows: pl.DataFrame) -> pl.DataFrame:
    """The general path of ``update`` (one network call over every series' rows), then
    the forecast: what ``update`` then ``predict`` gave before the fleet was its path."""
    forecaster._advance(rows_to_arrays(validate_frame(rows), forecaster.channels_))
    return forecaster.predict()


def _forecast_arrays(forecast: pl.DataFrame, n_series: int, column: str) -> np.ndarray:
    ordered = forecast.sort(["series_id", "step", "channel"])
    return ordered[column].to_numpy().reshape(n_series, -1, forecast["channel"].n_unique())


@pytest.mark.parametrize("kwargs", [dict(cell="lstm", calendar=True),
                                    dict(cell="gru", num_layers=2, target_channels=("c1",)),
                                    dict(cell="grud", calendar=False)])
def test_fleet_equals_update_and_predict(kwargs, frame):
    history, steps = _split(frame)
    config = flat_config(hidden_size=8, lookback=16, horizon=6, stateful=True,
                              tbptt_length=20, train=TRAIN, **kwargs)
    forecaster = RNNForecaster(config).fit(history)
    reference, public = copy.deepcopy(forecaster), copy.deepcopy(forecaster)
    fleet = ForecasterFleet(forecaster)
    for rows in steps:
        fleet.update(*_arrays(rows, fleet))
        expected = general(reference, rows)
        forecast = public.update(rows)
        assert public.last_update_path_ == "fleet: 4 series x 1 steps"
        assert forecast.select("series_id", "channel", "issued_at", "timestamp", "step").equals(
            expected.select("series_id", "channel", "issued_at", "timestamp", "step"))
        for column in ("y_hat", "q10", "q90"):
            np.testing.assert_allclose(forecast[column].to_numpy(),
                                       expected[column].to_numpy(), rtol=1e-5, atol=1e-5)
    got = fleet.predict()
    n_series = len(fleet.series_ids_)
    for column in ("y_hat", "q10", "q90"):
        np.testing.assert_allclose(got[column], _forecast_arrays(expected, n_series, column),
                                   rtol=1e-5, atol=1e-5)
    assert got["timestamp"][0, 0] == np.datetime64(
        expected.sort(["series_id", "step"])["timestamp"][0].replace(tzinfo=None), "us")
    partial = fleet.predict(horizon=3)
    np.testing.assert_allclose(partial["y_hat"], got["y_hat"][:, :3])


def test_write_back_lets_update_continue(frame):
    history, steps = _split(frame)
    config = ForecasterConfig(lookback=16, horizon=6, stateful=True, train=TRAIN,
                              encoder=EncoderConfig(hidden_size=8), tbptt=TBPTTConfig(length=20))
    forecaster = RNNForecaster(config).fit(history)
    reference = copy.deepcopy(forecaster)
    fleet = ForecasterFleet(forecaster)
    for rows in steps[:6]:
        fleet.update(*_arrays(rows, fleet))
        general(reference, rows)
    fleet.write_back()
    for rows in steps[6:]:
        forecast, expected = forecaster.update(rows), general(reference, rows)
    np.testing.assert_allclose(forecast["y_hat"].to_numpy(), expected["y_hat"].to_numpy(),
                               rtol=1e-5, atol=1e-5)


def test_update_takes_the_general_path_where_the_fleet_does_not_apply(frame):
    history, steps = _split(frame)
    stateful = ForecasterConfig(lookback=16, horizon=6, stateful=True, train=TRAIN,
                                encoder=EncoderConfig(hidden_size=8),
                                tbptt=TBPTTConfig(length=20))
    forecaster = RNNForecaster(stateful).fit(history)
    reference = copy.deepcopy(forecaster)
    mixed = pl.concat([steps[0], steps[1].filter(pl.col("series_id") == "s0")]).sort(
        ["series_id", "channel", "timestamp"])
    many = pl.concat(steps[2:8]).sort(["series_id", "channel", "timestamp"])
    for rows, path in [(mixed, "series with different numbers of new rows"),
                       (many, "more rows than series")]:
        forecast = forecaster.update(rows)
        assert forecaster.last_update_path_ == f"update ({path})"
        assert forecast.equals(general(reference, rows))      # the same path: exact
    stateless = RNNForecaster(replace(stateful, stateful=False)).fit(history)
    stateless.update(steps[0])
    assert stateless.last_update_path_ == ("update (not a stateful RNN with model/conformal "
                                           "intervals on levels)")


def test_fleet_rejects_bad_input(frame):
    history, steps = _split(frame)
    stateless = RNNForecaster(ForecasterConfig(lookback=16, horizon=6, train=TRAIN,
                                               encoder=EncoderConfig(hidden_size=8))).fit(history)
    with pytest.raises(RecurraError, match="stateful=True"):
        ForecasterFleet(stateless)
    forecaster = RNNForecaster(ForecasterConfig(lookback=16, horizon=6, stateful=True, train=TRAIN,
                                                encoder=EncoderConfig(hidden_size=8),
                                                tbptt=TBPTTConfig(length=20))).fit(history)
    with pytest.raises(SchemaError, match="unknown"):
        ForecasterFleet(forecaster, series_ids=["s0", "nope"])
    fleet = ForecasterFleet(forecaster)
    stamps, values = _arrays(steps[0], fleet)
    with pytest.raises(SchemaError, match="shapes"):
        fleet.update(stamps[:2], values)
    fleet.update(stamps, values)
    with pytest.raises(SchemaError, match="not after its last row"):
        fleet.update(stamps, values)
    with pytest.raises(RecurraError, match="horizon"):
        fleet.predict(horizon=7)
