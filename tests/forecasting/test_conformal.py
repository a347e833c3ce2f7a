"""Split-conformal intervals (recurra.forecasting.conformal, through the calibrator of
recurra.forecasting.intervals) and their use by RNNForecaster; the point losses and the
ridge initialisation options of the forecaster."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
import torch

from recurra.data.schema import RecurraError, quantile_column
from recurra.forecasting.config import OutputConfig
from recurra.forecasting.conformal import adjusted_level, empirical_coverage, pool_offsets
from recurra.forecasting.intervals import IntervalCalibrator, IntervalConfig
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster
from recurra.forecasting.windows import ridge
from recurra.nn.heads import DistributionHead
from recurra.nn.train import TrainConfig
from tests.conftest import flat_config, make_frame

torch.set_num_threads(1)
LEVELS = (0.1, 0.5, 0.9)


def test_adjusted_level_hand_computed():
    assert adjusted_level(0.9, 9) == 1.0             # ceil(10 * 0.9) / 9
    assert adjusted_level(0.1, 9) == pytest.approx(1 / 9)  # floor(10 * 0.1) / 9
    assert adjusted_level(0.9, 99) == pytest.approx(90 / 99)
    assert adjusted_level(0.5, 7) == 0.5
    with pytest.raises(RecurraError, match="n_samples"):
        adjusted_level(0.9, 0)


def test_coverage_near_nominal_on_exchangeable_data():
    rng = np.random.default_rng(0)
    n_cal, n_test, steps, channels = 2000, 4000, 3, 2
    scale = np.array([1.0, 3.0])[None, None, :] * (1 + np.arange(steps))[None, :, None]
    forecast = rng.normal(size=(n_cal, steps, channels))
    y_cal = forecast + rng.standard_t(5, size=forecast.shape) * scale
    residuals = np.repeat((y_cal - forecast)[..., None], len(LEVELS), axis=-1)  # point
    calibrator = IntervalCalibrator(IntervalConfig("conformal", LEVELS)).fit(
        residuals, np.zeros(n_cal))                                   # one series
    assert calibrator.offsets_.shape == (1, steps, channels, len(LEVELS))
    new = rng.normal(size=(n_test, steps, channels))
    y_new = new + rng.standard_t(5, size=new.shape) * scale
    shifted = calibrator.apply(["0"] * n_test, np.repeat(new[..., None], len(LEVELS), axis=-1))
    got = empirical_coverage(shifted[..., 0], shifted[..., 2], y_new)
    assert abs(got - 0.8) < 0.03
    for step in range(steps):  # per step and channel too (each cell has its own offsets)
        for channel in range(channels):
            cell = empirical_coverage(shifted[:, step, channel, 0], shifted[:, step, channel, 2],
                                      y_new[:, step, channel])
            assert abs(cell - 0.8) < 0.05


def test_offsets_ignore_unobserved_targets_and_keep_order():
    y = np.array([1.0, 2.0, 3.0, 100.0])[:, None, None].repeat(2, axis=2)
    residuals = np.repeat(y[..., None], 3, axis=-1)   # y - 0 at every level
    residuals[3] = np.nan                             # the outlier is not observed
    residuals[:, :, 1] = np.nan                       # channel 1 never observed -> 0
    offsets = pool_offsets(residuals, LEVELS)
    # n = 3: lower level floor(0.4) / 3 = 0 ('lower' -> min 1), upper min(1, ceil(3.6)/3)
    np.testing.assert_allclose(offsets[0, 0], [1.0, 2.0, 3.0])
    np.testing.assert_allclose(offsets[0, 1], [0.0, 0.0, 0.0])
    calibrator = IntervalCalibrator.pooled(IntervalConfig("conformal", LEVELS),
                                           offsets=np.array([[[1.0, 0.0, -1.0]]]))
    crossing = calibrator.apply(["a"], np.array([[[[0.0, 0.0, 0.0]]]]))
    assert np.all(np.diff(crossing, axis=-1) >= 0)
    with pytest.raises(RecurraError, match="levels"):
        pool_offsets(residuals, (0.1, 0.9))


def _config(**kwargs) -> ForecasterConfig:
    values = dict(cell="gru", hidden_size=8, lookback=16, horizon=4, calendar=False,
                  scaler="standard", output="point", interval="conformal",
                  normalization="last", channel_independent=True, patch_length=4,
                  linear_skip=True, linear_skip_ridge=1.0,
                  train=TrainConfig(max_epochs=2, batch_size=16, device="cpu", seed=0))
    values.update(kwargs)
    return flat_config(**values)


def _parts() -> tuple[pl.DataFrame, pl.DataFrame]:
    frame = make_frame(n_series=1, n_steps=160, n_channels=2, gap_share=0.0, seed=4)
    times = sorted(frame["timestamp"].unique().to_list())
    return (frame.filter(pl.col("timestamp") < times[110]),
            frame.filter(pl.col("timestamp") >= times[110 - 16]))


@pytest.mark.parametrize("kwargs", [dict(loss="mae"), dict(output="quantile")],
                         ids=["point-mae", "quantile-cqr"])
def test_forecaster_conformal_intervals_ordered_and_saved(kwargs, tmp_path):
    train, validation = _parts()
    model = RNNForecaster(_config(**kwargs)).fit(train, validation=validation)
    assert model.interval_.offsets_.shape == (1, 4, 2, 3)  # (series, steps, channels, levels)
    assert model.interval_.fallback_ == {}                  # 47 windows >= 20 of its own
    forecast = model.predict()
    low, mid, high = (forecast[quantile_column(q)].to_numpy() for q in LEVELS)
    assert np.all(low <= mid) and np.all(mid <= high) and np.all(high - low > 0)
    loaded = RNNForecaster.load(model.save(tmp_path / "m"))
    np.testing.assert_array_equal(loaded.interval_.offsets_, model.interval_.offsets_)
    assert loaded.predict().equals(forecast)


def test_conformal_needs_validation_and_recalibration_after_fine_tune():
    train, validation = _parts()
    with pytest.raises(RecurraError, match="validation"):
        RNNForecaster(_config()).fit(train)
    model = RNNForecaster(_config()).fit(train, validation=validation)
    tuned = model.fine_tune(train, epochs=1)
    with pytest.raises(RecurraError, match="calibrate"):
        tuned.predict()
    assert tuned.calibrate(validation).predict().height == model.predict().height


def test_model_interval_of_point_head_is_degenerate_and_old_state_loads(tmp_path):
    train, validation = _parts()
    model = RNNForecaster(_config(interval="model")).fit(train, validation=validation)
    forecast = model.predict()
    np.testing.assert_array_equal(forecast["q10"].to_numpy(), forecast["y_hat"].to_numpy())
    state = model._get_state()
    del state["interval"]                             # a model saved before this option
    old = RNNForecaster(model.config)
    old._set_state(state)
    assert old.predict().equals(forecast)


def test_point_losses_hand_computed():
    target = torch.tensor([[0.0, 0.0, 0.0]])
    params = torch.tensor([[0.5, -2.0, 3.0]]).unsqueeze(-1)
    mask = torch.tensor([[True, True, False]])
    expected = {"mse": (0.25 + 4.0) / 2, "mae": (0.5 + 2.0) / 2,
                "huber": (0.5 * 0.25 + (2.0 - 0.5)) / 2}
    for kind, want in expected.items():
        head = DistributionHead("point", 4, 3, point_loss=kind)
        assert float(head.loss(params, target, mask)) == pytest.approx(want)
    with pytest.raises(RecurraError, match="loss"):
        DistributionHead("point", 4, 3, point_loss="l3")


def test_config_rejects_bad_loss_and_interval_options():
    with pytest.raises(RecurraError, match="output.loss .'mae'. applies to kind 'point'"):
        ForecasterConfig(output=OutputConfig(kind="quantile", loss="mae"))
    with pytest.raises(RecurraError, match="interval"):
        ForecasterConfig(interval="bootstrap")
    with pytest.raises(RecurraError, match="stateless"):
        ForecasterConfig(interval="conformal", stateful=True)
    with pytest.raises(RecurraError, match="huber_delta"):
        ForecasterConfig(output=OutputConfig(kind="point", loss="huber", huber_delta=0.0))


def test_ridge_infinite_penalty_and_no_intercept():
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(50, 4)), rng.normal(size=(50, 2)) + 3.0
    weight, bias = ridge(x, y, math.inf)
    assert not weight.any()
    np.testing.assert_allclose(bias, y.mean(axis=0), rtol=1e-6)
    weight, bias = ridge(x, y, math.inf, intercept=False)
    assert not weight.any() and not bias.any()
    weight, bias = ridge(x, y, 0.0, intercept=False)
    np.testing.assert_allclose(weight.T, np.linalg.lstsq(x, y, rcond=None)[0], rtol=1e-4,
                               atol=1e-5)
    assert not bias.any()
