"""The training pieces of :class:`recurra.forecasting.rnn.RNNForecaster`: the
teacher-forcing schedule, the batch sources and step function of stateless (windowed)
training, the calibration bands of validation windows and the frames of forecasts.
Pure functions of a module, its config and prepared series; the estimator wires them."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
import torch

from recurra.data.schema import (
    CHANNEL,
    FORECAST_SCHEMA,
    ISSUED_AT,
    SERIES_ID,
    STEP,
    TIMESTAMP,
    RecurraError,
    quantile_column,
)
from recurra.forecasting.config import (
    ForecasterConfig,  # re-exported: the config lives in config.py
)
from recurra.forecasting.windows import (
    window_batch,
    window_starts,
)
from recurra.nn.modules import (
    ForecastNet,
)
from recurra.nn.state import module_device
from recurra.nn.train import Callback


class _TeacherSchedule:
    """Scheduled sampling: the teacher-forcing probability for the current epoch."""

    def __init__(self, config: ForecasterConfig) -> None:
        self.kind, self.k = config.decoder.teacher_forcing, config.decoder.teacher_forcing_k
        self.max_epochs = config.train.max_epochs
        self.probability = 0.0 if self.kind == "never" else 1.0

    def chain(self, callback: Callback | None) -> Callback:
        def hook(event: str, payload: dict[str, Any]) -> None:
            if event == "epoch_start":
                self.set_epoch(payload["epoch"])
            if callback is not None:
                callback(event, payload)
        return hook

    def set_epoch(self, epoch: int) -> None:
        step = epoch - 1
        if self.kind == "linear":
            self.probability = max(0.0, 1.0 - step / max(1, self.max_epochs - 1))
        elif self.kind == "inverse_sigmoid":
            self.probability = float(self.k / (self.k + np.exp(step / self.k)))

    def current(self, training: bool) -> float:
        return self.probability if training else 0.0


def _window_sources(prepared: list, val_prepared: list | None, config: ForecasterConfig,
                    targets: list[int], schedule: _TeacherSchedule):
    """Batch sources and the step function of stateless (windowed) training."""
    raw = config.encoder.cell == "grud"
    starts = window_starts(prepared, config.lookback, config.horizon, config.stride)
    rng = np.random.default_rng(config.train.seed)
    size = config.train.batch_size

    def train_batches():
        order = rng.permutation(len(starts))
        if config.max_windows_per_epoch is not None:
            order = order[:config.max_windows_per_epoch]
        for begin in range(0, len(order), size):
            yield window_batch(prepared, starts[order[begin:begin + size]], config.lookback,
                               config.horizon, targets, raw)

    val_src = None
    if val_prepared is not None:
        val_starts = window_starts(val_prepared, config.lookback, config.horizon,
                                   config.stride)

        def val_src():
            for begin in range(0, len(val_starts), size):
                yield window_batch(val_prepared, val_starts[begin:begin + size],
                                   config.lookback, config.horizon, targets, raw)

    def step(module: ForecastNet, batch: Any) -> torch.Tensor | None:
        if not bool(batch.y_observed.any()):
            return None
        params = _window_params(module, batch, config, targets,
                                schedule.current(module.training))
        return module.head.loss(params, batch.y, batch.y_observed)

    return train_batches, val_src, step


def _window_params(module: ForecastNet, batch: Any, config: ForecasterConfig,
                   targets: list[int], teacher_prob: float = 0.0) -> torch.Tensor:
    """(B, N, O, P) head parameters of a stateless :class:`WindowBatch` (scaled units)."""
    lookback = batch.x.shape[1]
    covariates = batch.covariates
    if config.windowed:
        return module.forecast_window(
            batch.x, batch.observed, batch.delta, covariates[:, :lookback],
            covariates[:, lookback:], batch.x_last[:, -1, targets], torch.nan_to_num(batch.y),
            batch.y_observed, teacher_prob, batch.static, targets)
    output, _ = module.encode(batch.x, batch.observed, batch.delta, None,
                              covariates[:, :lookback])
    return module.decode(module.encoder.last_hidden(output), batch.x_last[:, -1, targets],
                         covariates[:, lookback:], torch.nan_to_num(batch.y),
                         batch.y_observed, teacher_prob, memory=output, static=batch.static)


@torch.no_grad()
def _calibration_bands(module: ForecastNet, prepared: list, config: ForecasterConfig,
                       targets: list[int], point: bool = False
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Quantile forecasts (W, N, O, Q) (``point``: y_hat, (W, N, O, 1)), targets and masks
    (W, N, O) of every stride-1 window of ``prepared`` (scaled units), and the index into
    ``prepared`` of each window's series (W,)."""
    module.eval()
    starts = window_starts(prepared, config.lookback, config.horizon, 1)
    raw = config.encoder.cell == "grud"
    bands, ys, seen = [], [], []
    device = module_device(module)
    for begin in range(0, len(starts), 1024):
        batch = window_batch(prepared, starts[begin:begin + 1024], config.lookback,
                             config.horizon, targets, raw)
        params = _window_params(module, batch.to(device), config, targets)
        band = (module.head.point(params)[..., None] if point else
                module.head.quantiles(params, tuple(config.quantiles)))
        bands.append(band.double().cpu().numpy())
        ys.append(batch.y.double().numpy())
        seen.append(batch.y_observed.numpy().astype(bool))
    if not bands:
        raise RecurraError(f"calibrate: no validation window of lookback + horizon "
                           f"({config.lookback + config.horizon}) steps; pass a longer "
                           "validation frame")
    return np.concatenate(bands), np.concatenate(ys), np.concatenate(seen), starts[:, 0]


def _to_frame(columns: dict[str, np.ndarray], levels: tuple[float, ...]) -> pl.DataFrame:
    schema = {**FORECAST_SCHEMA, **{quantile_column(q): pl.Float64 for q in levels}}
    frame = pl.DataFrame({
        name: pl.Series(name, values.tolist() if values.dtype == object else values)
        for name, values in columns.items()})
    frame = frame.with_columns(pl.col(ISSUED_AT, TIMESTAMP).dt.replace_time_zone("UTC"))
    return frame.cast(schema).select(list(schema)).sort([SERIES_ID, CHANNEL, STEP])


def _scaled_means(prepared: list, input_size: int) -> torch.Tensor:
    """GRU-D's ``x_mean``: the mean of the observed scaled values per channel (0 for the
    always-observed covariates that follow the channels)."""
    total = sum(np.where(p.observed, p.values, 0.0).sum(axis=0) for p in prepared)
    count = sum(p.observed.sum(axis=0) for p in prepared)
    means = np.zeros(input_size, np.float32)
    means[:len(total)] = np.where(count > 0, total / np.maximum(count, 1), 0.0)
    return torch.from_numpy(means)

