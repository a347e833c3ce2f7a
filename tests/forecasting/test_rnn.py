"""RNNForecaster: streaming invariants, horizons, targets, fine-tuning, quantization, errors."""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl
import pytest
import torch

from recurra.data.schema import Y_HAT, NotFittedError, RecurraError, SchemaError, quantile_column
from recurra.forecasting.quantize import compare_quantized, quantize_forecaster
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster
from recurra.nn.train import TrainConfig
from tests.conftest import flat_config, make_frame

torch.set_num_threads(1)  # tiny models: one thread is far faster on a busy CPU
TRAIN = TrainConfig(max_epochs=2, batch_size=16, device="cpu", seed=0)


def _config(**kwargs) -> ForecasterConfig:
    values = dict(hidden_size=8, lookback=16, horizon=6, train=TRAIN)
    values.update(kwargs)
    return flat_config(**values)


def _split(frame: pl.DataFrame, n_train: int) -> tuple[pl.DataFrame, list[pl.DataFrame]]:
    times = sorted(frame["timestamp"].unique().to_list())
    train = frame.filter(pl.col("timestamp") < times[n_train])
    rest = [frame.filter(pl.col("timestamp") == t) for t in times[n_train:]]
    return train, rest


def _leaves(state):
    if isinstance(state, torch.Tensor):
        return [state]
    return [leaf for part in state for leaf in _leaves(part)]


@pytest.mark.parametrize("kwargs", [dict(stateful=True, tbptt_length=20),
                                    dict(stateful=True, cell="grud", tbptt_length=20),
                                    dict(stateful=False, decoder="attention"),
                                    dict(stateful=True, cell="gru", decoder="seq2seq"),
                                    dict(stateful=False, normalization="revin",
                                         channel_independent=True, patch_length=4,
                                         linear_skip=True, linear_skip_ridge=1.0)],
                         ids=["lstm-stateful", "grud-stateful", "lstm-windows", "gru-seq2seq",
                              "lstm-windowed-options"])
def test_update_point_by_point_equals_one_pass(kwargs):
    frame = make_frame(n_series=2, n_steps=90, n_channels=2, gap_share=0.2, seed=3)
    train, new_points = _split(frame, 70)
    streamed = RNNForecaster(_config(**kwargs)).fit(train)
    one_pass = streamed.predict(frame=frame)
    for point in new_points:
        streamed.update(point)
    np.testing.assert_allclose(streamed.predict()[Y_HAT].to_numpy(),
                               one_pass[Y_HAT].to_numpy(), rtol=1e-4, atol=1e-5)
    assert streamed.predict().equals(streamed.predict())  # predict does not move the state
    if kwargs["stateful"]:
        reference = RNNForecaster(_config(**kwargs))
        reference.__dict__.update(streamed.__dict__)
        states = reference._stream_states(reference._arrays(
            frame.sort("series_id", "channel", "timestamp"), "frame"))
        for series_id, entry in states.items():
            for a, b in zip(_leaves(entry["encoder"]), _leaves(streamed.state_[series_id][
                    "encoder"]), strict=True):
                torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_update_in_chunks_and_issued_at_moves_forward():
    frame = make_frame(n_series=2, n_steps=80, seed=1)
    train, new_points = _split(frame, 60)
    fc = RNNForecaster(_config(stateful=True)).fit(train)
    before = fc.predict()
    fc.update(pl.concat(new_points[:10]))
    after = fc.update(pl.concat(new_points[10:]))
    last = frame["timestamp"].max()
    assert (after["issued_at"] == last).all()
    assert (after["timestamp"] > last).all()
    assert not before["issued_at"].equals(after["issued_at"])
    np.testing.assert_allclose(after[Y_HAT].to_numpy(),
                               fc.predict(frame=frame)[Y_HAT].to_numpy(), rtol=1e-4, atol=1e-5)


def test_update_rejects_old_rows_and_unknown_series():
    frame = make_frame(n_series=1, n_steps=60)
    fc = RNNForecaster(_config()).fit(frame)
    with pytest.raises(RecurraError, match="not after its last seen timestamp"):
        fc.update(frame.tail(1))
    stranger = frame.tail(1).with_columns(pl.lit("zz").alias("series_id"))
    with pytest.raises(SchemaError, match=r"series \['zz'\] are unknown"):
        fc.update(stranger)


def test_horizon_targets_and_quantile_order():
    frame = make_frame(n_series=2, n_steps=80, n_channels=3, seed=2)
    fc = RNNForecaster(_config(target_channels=("c1",), quantiles=(0.1, 0.5, 0.9))).fit(frame)
    full, short = fc.predict(), fc.predict(horizon=3)
    assert set(full["channel"]) == {"c1"}
    assert full.height == 2 * 6 and short.height == 2 * 3
    assert short["y_hat"].to_list() == full.filter(pl.col("step") <= 3)["y_hat"].to_list()
    q10, q50, q90 = (full[quantile_column(q)].to_numpy() for q in (0.1, 0.5, 0.9))
    assert np.all(q10 <= q50) and np.all(q50 <= q90)
    np.testing.assert_allclose(full[Y_HAT].to_numpy(), q50)
    with pytest.raises(RecurraError, match=r"horizon \(7\) must be an integer in \[1, 6\]"):
        fc.predict(horizon=7)


def test_forecasts_are_in_original_units():
    frame = make_frame(n_series=1, n_steps=120, gap_share=0.0).with_columns(
        pl.col("value") * 100 + 5000)
    fc = RNNForecaster(_config(output="gaussian", train=dataclasses.replace(
        TRAIN, max_epochs=5, learning_rate=0.01))).fit(frame)
    forecast = fc.predict()
    low, high = frame["value"].min(), frame["value"].max()
    assert forecast[Y_HAT].is_between(low - 200, high + 200).all()


def test_learns_a_sine_better_than_its_mean():
    frame = make_frame(n_series=2, n_steps=240, gap_share=0.1, seed=4)
    train, _ = _split(frame, 216)
    test = frame.filter(pl.col("timestamp") >= sorted(frame["timestamp"].unique())[216])
    config = _config(hidden_size=16, lookback=24, horizon=24, stateful=True, calendar=True,
                     train=dataclasses.replace(TRAIN, max_epochs=15, learning_rate=0.01))
    forecast = RNNForecaster(config).fit(train).predict()
    joined = forecast.join(test, on=["series_id", "channel", "timestamp"]).drop_nulls("value")
    model_mae = (joined["y_hat"] - joined["value"]).abs().mean()
    means = train.group_by("series_id").agg(pl.col("value").mean().alias("mean"))
    naive = joined.join(means, on="series_id")
    mean_mae = (naive["mean"] - naive["value"]).abs().mean()
    assert model_mae < 0.7 * mean_mae


def test_fine_tune_returns_new_forecaster_and_leaves_original():
    frame = make_frame(n_series=2, n_steps=80)
    fc = RNNForecaster(_config()).fit(frame)
    before = fc.predict()
    one = frame.filter(pl.col("series_id") == "s1")
    tuned = fc.fine_tune(one, epochs=2)
    assert tuned is not fc and tuned.config.train.max_epochs == 2
    assert tuned.config.train.learning_rate == pytest.approx(TRAIN.learning_rate / 10)
    assert fc.predict().equals(before)
    tuned_forecast = tuned.predict()
    assert set(tuned_forecast["series_id"]) == {"s1"}
    assert not np.allclose(tuned_forecast[Y_HAT].to_numpy(),
                           before.filter(pl.col("series_id") == "s1")[Y_HAT].to_numpy())


def test_validation_frame_and_callback():
    frame = make_frame(n_series=2, n_steps=100)
    train, _ = _split(frame, 70)
    events = []
    fc = RNNForecaster(_config(stateful=True)).fit(
        train, validation=frame, callback=lambda event, payload: events.append((event, payload)))
    ends = [p for e, p in events if e == "epoch_end"]
    assert len(ends) == 2 and all(p["val_loss"] is not None for p in ends)
    assert fc.history_[0]["val_loss"] == ends[0]["val_loss"]


@pytest.mark.parametrize("scaler", ["robust", "none"])
def test_other_scalers(scaler):
    fc = RNNForecaster(_config(scaler=scaler, calendar=False)).fit(make_frame(n_steps=60))
    assert fc.predict()[Y_HAT].is_finite().all()


def test_quantized_forecast_stays_close():
    frame = make_frame(n_series=2, n_steps=80)
    fc = RNNForecaster(_config(hidden_size=16)).fit(frame)
    quantized = quantize_forecaster(fc)
    np.testing.assert_allclose(quantized.predict()[Y_HAT].to_numpy(),
                               fc.predict()[Y_HAT].to_numpy(), atol=0.05)
    report = compare_quantized(fc)
    assert report["relative_diff"] < 0.05
    assert set(report) == {"max_abs_diff", "mean_abs_diff", "relative_diff"}  # no timing
    with pytest.raises(RecurraError, match="quantized RNNForecaster cannot be saved"):
        quantized._get_state()


@pytest.mark.parametrize("kwargs,message", [
    (dict(normalization="zscore"), r"normalization \('zscore'\) must be one of \['none', "),
    (dict(patch_length=5), r"lookback \(16\) must be a multiple of window.patch_length \(5\)"),
    (dict(patch_length=0), r"patch_length \(0\) must be an integer >= 1"),
    (dict(linear_skip=True, stateful=True), r"need stateless windows of an LSTM/GRU: got "
                                            r"stateful=True"),
    (dict(normalization="last", cell="grud"), r"got stateful=False, cell 'grud'"),
    (dict(channel_independent=True, target_channels=("a",)),
     r"target_channels \(\('a',\)\) must be None"),
    (dict(linear_skip_ridge=1.0), r"linear_skip_ridge \(1.0\) must be >= 0 and needs "
                                  r"linear_skip=True \(got False\)"),
])
def test_window_option_errors(kwargs, message):
    with pytest.raises(RecurraError, match=message):
        _config(**kwargs)


def test_ridge_skip_fits_a_linear_recurrence_and_channel_independence():
    """A noiseless sine is a linear recurrence: the closed-form skip alone forecasts it, and
    the initial model is kept when no epoch beats it; channels are forecast alike."""
    frame = make_frame(n_series=2, n_steps=120, n_channels=2, gap_share=0.0, seed=1)
    row = frame.with_row_index("i")["i"].cast(pl.Float64)
    k = row // 120                                       # (series, channel) number
    frame = frame.with_columns(value=((row % 120) * 2 * np.pi / 24 + k).sin() * (1 + k))
    train, _ = _split(frame, 100)
    config = _config(output="point", normalization="last", channel_independent=True,
                     patch_length=4, linear_skip=True, linear_skip_ridge=1e-6,
                     calendar=False)
    fc = RNNForecaster(config).fit(train, validation=frame)
    forecast = fc.predict().join(frame, on=["series_id", "channel", "timestamp"])
    assert fc.kept_initial_ is True
    assert set(forecast["channel"]) == set(frame["channel"])
    assert ((forecast[Y_HAT] - forecast["value"]) ** 2).mean() < 1e-3
    assert (forecast[quantile_column(0.1)] == forecast[Y_HAT]).all()  # point: no band


def test_windowed_options_save_load_and_short_history(tmp_path):
    frame = make_frame(n_series=2, n_steps=60, n_channels=2, seed=2)
    fc = RNNForecaster(_config(normalization="revin", patch_length=4, linear_skip=True,
                               output="gaussian")).fit(frame)
    loaded = RNNForecaster.load(fc.save(tmp_path / "fc"))
    assert loaded.predict().equals(fc.predict())
    short = frame.filter(pl.col("timestamp") < sorted(frame["timestamp"].unique())[10])
    with pytest.raises(RecurraError, match=r"patch_length \(4\); pass at least lookback"):
        fc.predict(frame=short)


@pytest.mark.parametrize("field,value,message", [
    ("cell", "rnn", r"cell \('rnn'\) must be one of \['lstm', 'gru', 'grud'\]"),
    ("horizon", 0, r"horizon \(0\) must be an integer >= 1"),
    ("quantiles", (0.9, 0.1), r"quantiles \(\(0.9, 0.1\)\) must be strictly increasing"),
    ("dropout", 1.0, r"dropout \(1.0\) must be in \[0, 1\)"),
    ("decoder", "transformer", r"decoder.kind \('transformer'\) must be one of"),
])
def test_config_errors(field, value, message):
    with pytest.raises(RecurraError, match=message):
        flat_config(**{field: value})
    with pytest.raises(RecurraError, match="decoder 'attention' needs stateless windows"):
        ForecasterConfig(decoder="attention", stateful=True)


def test_data_errors():
    frame = make_frame(n_series=1, n_steps=20)
    with pytest.raises(RecurraError, match="lookback \\+ horizon needs 22"):
        RNNForecaster(_config()).fit(frame)
    with pytest.raises(SchemaError, match=r"target_channels \['nope'\]"):
        RNNForecaster(_config(target_channels=("nope",))).fit(make_frame(n_steps=60))
    with pytest.raises(NotFittedError, match="RNNForecaster is not fitted yet"):
        RNNForecaster().update(frame)


@pytest.mark.parametrize("stateful", [False, True])
def test_static_features(stateful, tmp_path):
    frame = make_frame(n_series=2, n_steps=60)
    static = pl.DataFrame({"series_id": ["s0", "s1"], "capacity": [1.0, 3.0],
                           "rack": [0, 1]})
    fc = RNNForecaster(_config(stateful=stateful)).fit(frame, static=static)
    assert fc.static_columns_ == ["capacity", "rack"]
    forecast = fc.predict()
    stranger = frame.filter(pl.col("series_id") == "s0").with_columns(
        pl.lit("new").alias("series_id"))
    with pytest.raises(SchemaError, match="series 'new' has no static features"):
        fc.predict(frame=stranger)
    like_s0 = fc.predict(frame=stranger, static=static.head(1).with_columns(
        pl.lit("new").alias("series_id")))
    np.testing.assert_allclose(like_s0[Y_HAT].to_numpy(),
                               forecast.filter(pl.col("series_id") == "s0")[Y_HAT].to_numpy(),
                               rtol=1e-5)
    other = fc.predict(frame=stranger, static=pl.DataFrame(
        {"series_id": ["new"], "capacity": [30.0], "rack": [5]}))
    assert not np.allclose(other[Y_HAT].to_numpy(), like_s0[Y_HAT].to_numpy())
    fc.save(tmp_path / "m")
    assert RNNForecaster.load(tmp_path / "m").predict().equals(forecast)
    with pytest.raises(SchemaError, match=r"static: columns \['label'\] must be numeric"):
        RNNForecaster(_config()).fit(frame, static=static.with_columns(
            pl.lit("x").alias("label")))


def test_stateful_segments_split_one_long_series():
    from recurra.data.arrays import frame_to_arrays
    from recurra.forecasting.windows import prepare_series, split_segments

    frame = make_frame(n_series=1, n_steps=100)
    (arrays,) = frame_to_arrays(frame)
    prepared = [prepare_series(arrays, np.zeros(1), np.ones(1), calendar=True)]
    parts = split_segments(prepared, 4, min_length=20)
    assert [p.n_steps for p in parts] == [25, 25, 25, 25]
    np.testing.assert_array_equal(np.concatenate([p.filled for p in parts]), prepared[0].filled)
    assert len(split_segments(prepared, 10, min_length=20)) == 5  # parts keep >= min_length
    fc = RNNForecaster(_config(stateful=True, tbptt_length=10, stateful_segments=4)).fit(frame)
    assert fc.predict()[Y_HAT].is_finite().all()
