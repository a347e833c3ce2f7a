"""RNNForecaster with interval="adaptive": ACI half-widths seeded on validation, moved by the
rows that update() matches to remembered forecasts (recurra.forecasting.adaptive)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from recurra.data.schema import RecurraError
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster
from recurra.nn.train import TrainConfig
from tests.conftest import make_frame

torch.set_num_threads(1)
SPLIT, VAL_END = 110, 150


def _config(**kwargs) -> ForecasterConfig:
    values = dict(cell="gru", hidden_size=8, lookback=16, horizon=4, calendar=False,
                  output="point", interval="adaptive", adaptive_gamma=0.05,
                  train=TrainConfig(max_epochs=2, batch_size=16, device="cpu", seed=0))
    values.update(kwargs)
    return ForecasterConfig(**values)


def _parts(noise: float = 3.0) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """Train, validation (overlapping by one lookback) and a later stream whose noise is
    ``noise`` times larger (a change the validation residuals do not know)."""
    frame = make_frame(n_series=2, n_steps=190, n_channels=2, gap_share=0.0, seed=4)
    times = sorted(frame["timestamp"].unique().to_list())
    rng = np.random.default_rng(1)
    later = frame.filter(pl.col("timestamp") >= times[VAL_END])
    later = later.with_columns(pl.col("value") + noise * rng.standard_normal(later.height))
    return (frame.filter(pl.col("timestamp") < times[SPLIT]),
            frame.filter(pl.col("timestamp") >= times[SPLIT - 16]).filter(
                pl.col("timestamp") < times[VAL_END]), later)


@pytest.fixture(scope="module")
def fitted() -> tuple[RNNForecaster, pl.DataFrame]:
    train, validation, later = _parts()
    model = RNNForecaster(_config()).fit(train, validation=validation)
    # bring the stored state up to the end of validation (update without remembered
    # forecasts feeds nothing)
    return model.update(validation.filter(pl.col("timestamp") > train["timestamp"].max())), later


def _copy(model: RNNForecaster, tmp_path, name: str) -> RNNForecaster:
    return RNNForecaster.load(model.save(tmp_path / name))


def test_one_all_miss_update_lowers_alpha_by_gamma_times_one_minus_alpha(fitted, tmp_path):
    model = _copy(fitted[0], tmp_path, "m")
    aci = model.adaptive_.aci_
    before, widths = aci.alpha_.copy(), aci.widths()
    assert before.shape == (4, 2) and np.allclose(before, 0.2)
    forecast = model.predict()
    one = forecast.filter(pl.col("series_id") == forecast["series_id"][0])
    low, high = one["q10"].to_numpy(), one["q90"].to_numpy()
    np.testing.assert_allclose((high - low) / 2, high - one["y_hat"].to_numpy())
    rows = one.select("series_id", "timestamp", "channel",
                      value=pl.col("y_hat") + 1e3)           # every target far outside
    model.update(rows)
    # ACI: alpha <- alpha + gamma * (alpha - 1) for each (step, channel) that missed
    np.testing.assert_allclose(aci.alpha_, before - 0.05 * (1 - 0.2))
    assert np.all(aci.n_updates_ == 1) and np.all(aci.widths() >= widths)
    again = model.predict().filter(pl.col("series_id") == one["series_id"][0])
    assert np.all((again["q90"] - again["q10"]).to_numpy() >= (high - low) - 1e-9)


def test_stream_with_more_noise_moves_alpha_toward_more_coverage(fitted, tmp_path):
    model, later = _copy(fitted[0], tmp_path, "m"), fitted[1]
    start = model.adaptive_.aci_.widths().copy()
    times = sorted(later["timestamp"].unique().to_list())
    for begin in range(0, 36, 4):
        model.predict()
        model.update(later.filter(pl.col("timestamp").is_in(times[begin:begin + 4])))
    aci = model.adaptive_.aci_
    assert np.all(aci.n_updates_ == 2 * 9)                   # 2 series x 9 cycles
    assert aci.alpha_.mean() < 0.2 and aci.widths().mean() > start.mean()


def test_save_load_round_trip_and_no_feedback_without_overlap(fitted, tmp_path):
    model = _copy(fitted[0], tmp_path, "m")
    forecast = model.predict()
    loaded = _copy(model, tmp_path, "again")
    np.testing.assert_array_equal(loaded.adaptive_.aci_.alpha_, model.adaptive_.aci_.alpha_)
    assert loaded.adaptive_.issued_.keys() == model.adaptive_.issued_.keys()
    for sid, queue in model.adaptive_.issued_.items():
        assert len(loaded.adaptive_.issued_[sid]) == len(queue) == 1
        for issued, again in zip(queue, loaded.adaptive_.issued_[sid], strict=True):
            for key, value in issued.items():
                np.testing.assert_array_equal(again[key], value)
    assert loaded.predict().equals(forecast)
    # rows half an hour off the forecast grid match nothing: no feedback, alpha unchanged
    before = model.adaptive_.aci_.alpha_.copy()
    first = forecast["timestamp"].min() - dt.timedelta(minutes=30)
    rows = forecast.filter(pl.col("step") == 1).select(
        "series_id", "channel", timestamp=pl.lit(first), value=pl.col("y_hat") + 1e3)
    model.update(rows)
    np.testing.assert_array_equal(model.adaptive_.aci_.alpha_, before)
    assert np.all(model.adaptive_.aci_.n_updates_ == 0)


def test_predict_from_history_remembers_nothing(fitted, tmp_path):
    model = _copy(fitted[0], tmp_path, "m")
    train, _, _ = _parts()
    model.predict(frame=train)
    assert model.adaptive_.issued_ == {}


def test_adaptive_config_errors_and_old_configs_load():
    train, validation, _ = _parts()
    with pytest.raises(RecurraError, match="validation"):
        RNNForecaster(_config()).fit(train)
    with pytest.raises(RecurraError, match="symmetric pair"):
        _config(quantiles=(0.1, 0.5, 0.8))
    with pytest.raises(RecurraError, match="symmetric pair"):
        _config(quantiles=(0.05, 0.1, 0.9, 0.95))
    with pytest.raises(RecurraError, match=r"adaptive_gamma \(0.0\)"):
        _config(adaptive_gamma=0.0)
    with pytest.raises(RecurraError, match="stateless"):
        _config(stateful=True, decoder="direct")
    assert ForecasterConfig().adaptive_gamma == 0.005     # configs without the field


def test_predicting_after_every_row_feeds_every_step_once_per_row(fitted, tmp_path):
    """Forecasts issued h rows ago get their step-h feedback: after R one-row cycles, step h
    has had R - h updates per series, and repeating predict() at one origin counts once."""
    model, later = _copy(fitted[0], tmp_path, "m"), fitted[1]
    times = sorted(later["timestamp"].unique().to_list())
    n_rows = 6
    for row in range(n_rows):
        model.predict()
        model.predict()                          # same origin: replaces, no double count
        model.update(later.filter(pl.col("timestamp") == times[row]))
    updates = model.adaptive_.aci_.n_updates_                # (steps, channels)
    expected = 2 * (n_rows - np.arange(4))                   # 2 series, step h (0-based)
    np.testing.assert_array_equal(updates, np.repeat(expected[:, None], 2, axis=1))
    assert all(len(queue) <= 4 for queue in model.adaptive_.issued_.values())
