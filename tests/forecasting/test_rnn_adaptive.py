"""RNNForecaster with interval="adaptive": ACI half-widths per series seeded on validation,
moved by the rows that update() matches to remembered forecasts of that series
(recurra.forecasting.intervals). Since per-series pools, each series has its own levels: the
tests below check that feedback of one series moves its levels only (they asserted one
shared level per (step, channel) before)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest
import torch

from recurra.data.schema import RecurraError
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster
from recurra.nn.train import TrainConfig
from tests.conftest import flat_config, make_frame

torch.set_num_threads(1)
SPLIT, VAL_END = 110, 150


def _config(**kwargs) -> ForecasterConfig:
    values = dict(cell="gru", hidden_size=8, lookback=16, horizon=4, calendar=False,
                  output="point", interval="adaptive", adaptive_gamma=0.05,
                  train=TrainConfig(max_epochs=2, batch_size=16, device="cpu", seed=0))
    values.update(kwargs)
    return flat_config(**values)


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
    # forecasts feeds nothing; it remembers the forecast it returns, as predict() does)
    forecast = model.update(validation.filter(pl.col("timestamp") > train["timestamp"].max()))
    assert forecast.equals(model.predict())          # the same origin again: replaced
    assert all(len(queue) == 1 for queue in model.interval_.issued_.values())
    return model, later


def _copy(model: RNNForecaster, tmp_path, name: str) -> RNNForecaster:
    return RNNForecaster.load(model.save(tmp_path / name))


def test_one_all_miss_update_lowers_alpha_by_gamma_times_one_minus_alpha(fitted, tmp_path):
    model = _copy(fitted[0], tmp_path, "m")
    aci = model.interval_
    ids = aci.series_ids_
    before, widths = aci.alpha_.copy(), aci.widths(ids, 4)
    assert before.shape == (2, 4, 2) and np.allclose(before, 0.2)   # (series, steps, channels)
    forecast = model.predict()
    one = forecast.filter(pl.col("series_id") == ids[0])
    low, high = one["q10"].to_numpy(), one["q90"].to_numpy()
    np.testing.assert_allclose((high - low) / 2, high - one["y_hat"].to_numpy())
    rows = one.select("series_id", "timestamp", "channel",
                      value=pl.col("y_hat") + 1e3)           # every target far outside
    model.update(rows)
    # ACI: alpha <- alpha + gamma * (alpha - 1) for each (step, channel) of that series
    np.testing.assert_allclose(aci.alpha_[0], before[0] - 0.05 * (1 - 0.2))
    np.testing.assert_array_equal(aci.alpha_[1], before[1])    # the other series: unchanged
    assert np.all(aci.n_updates_[0] == 1) and np.all(aci.n_updates_[1] == 0)
    assert np.all(aci.widths(ids, 4) >= widths)
    again = model.predict().filter(pl.col("series_id") == ids[0])
    assert np.all((again["q90"] - again["q10"]).to_numpy() >= (high - low) - 1e-9)


def test_stream_with_more_noise_moves_alpha_toward_more_coverage(fitted, tmp_path):
    model, later = _copy(fitted[0], tmp_path, "m"), fitted[1]
    start = model.interval_.widths(model.interval_.series_ids_, 4)
    times = sorted(later["timestamp"].unique().to_list())
    for begin in range(0, 36, 4):
        model.predict()
        model.update(later.filter(pl.col("timestamp").is_in(times[begin:begin + 4])))
    aci = model.interval_
    assert np.all(aci.n_updates_ == 9)                       # 9 cycles, each series its own
    assert aci.alpha_.mean() < 0.2 and aci.widths(aci.series_ids_, 4).mean() > start.mean()


def test_save_load_round_trip_and_no_feedback_without_overlap(fitted, tmp_path):
    model = _copy(fitted[0], tmp_path, "m")
    forecast = model.predict()
    loaded = _copy(model, tmp_path, "again")
    np.testing.assert_array_equal(loaded.interval_.alpha_, model.interval_.alpha_)
    assert loaded.interval_.issued_.keys() == model.interval_.issued_.keys()
    for sid, queue in model.interval_.issued_.items():
        assert len(loaded.interval_.issued_[sid]) == len(queue) == 1
        for issued, again in zip(queue, loaded.interval_.issued_[sid], strict=True):
            for key, value in issued.items():
                np.testing.assert_array_equal(again[key], value)
    assert loaded.predict().equals(forecast)
    # rows half an hour off the forecast grid match nothing: no feedback, alpha unchanged
    before = model.interval_.alpha_.copy()
    first = forecast["timestamp"].min() - dt.timedelta(minutes=30)
    rows = forecast.filter(pl.col("step") == 1).select(
        "series_id", "channel", timestamp=pl.lit(first), value=pl.col("y_hat") + 1e3)
    model.update(rows)
    np.testing.assert_array_equal(model.interval_.alpha_, before)
    assert np.all(model.interval_.n_updates_ == 0)


def test_predict_from_history_remembers_nothing(fitted, tmp_path):
    model = _copy(fitted[0], tmp_path, "m")
    train, _, _ = _parts()
    origins = {sid: [q["timestamps"][0] for q in queue]
               for sid, queue in model.interval_.issued_.items()}
    model.predict(frame=train)
    assert {sid: [q["timestamps"][0] for q in queue]
            for sid, queue in model.interval_.issued_.items()} == origins


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
    assert ForecasterConfig().interval.adaptive_gamma == 0.005     # configs without the field


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
    updates = model.interval_.n_updates_                # (series, steps, channels)
    expected = n_rows - np.arange(4)                         # per series, step h (0-based)
    np.testing.assert_array_equal(updates, np.broadcast_to(expected[None, :, None], (2, 4, 2)))
    assert all(len(queue) <= 4 for queue in model.interval_.issued_.values())
