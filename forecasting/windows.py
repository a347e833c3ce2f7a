"""From contract frames to scaled arrays, training windows and stateful chunks.

``prepare_series`` turns each series of a frame into a :class:`PreparedSeries` (scaled
values, masks, deltas, forward-filled values, calendar covariates).  Stateless training
draws look-back/horizon windows (:class:`data.arrays.WindowBatch`); stateful training cuts
each series into consecutive chunks (:class:`ChunkBatch`): batch k holds chunk k of a group
of series, and every step of a chunk is supervised with the next N targets.
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import torch
from numpy.lib.stride_tricks import sliding_window_view

from data.arrays import SeriesArrays, WindowBatch, forward_fill
from data.schema import RecurraError

SCALERS = ("standard", "robust", "none")
N_CALENDAR = 6  # sin/cos of hour of day, day of week, day of year


def calendar_features(timestamps: np.ndarray) -> np.ndarray:
    """(T, 6) float32 sin/cos of hour of day, day of week and day of year.

    ``timestamps`` are ``datetime64`` (UTC).
    """
    seconds = timestamps.astype("datetime64[s]").astype(np.int64).astype(np.float64)
    day = seconds / 86400.0
    hour_angle = 2 * np.pi * (day % 1.0)
    week_angle = 2 * np.pi * (((day + 3.0) % 7.0) / 7.0)  # 1970-01-01 was a Thursday
    year_angle = 2 * np.pi * ((day % 365.25) / 365.25)
    angles = np.stack([hour_angle, week_angle, year_angle], axis=-1)
    return np.concatenate([np.sin(angles), np.cos(angles)], axis=-1).astype(np.float32)


def fit_scaler(values: np.ndarray, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel ``(center, scale)`` of (T, F) values with NaN, via scikit-learn.

    A channel with no observation or no spread gets center 0 / scale 1 where undefined.
    """
    n_channels = values.shape[1]
    center, scale = np.zeros(n_channels), np.ones(n_channels)
    if kind == "none" or values.shape[0] == 0:
        return center, scale
    from sklearn.preprocessing import RobustScaler, StandardScaler

    observed = ~np.isnan(values).all(axis=0)
    if observed.any():
        scaler = StandardScaler() if kind == "standard" else RobustScaler()
        scaler.fit(values[:, observed])
        fitted_center = scaler.mean_ if kind == "standard" else scaler.center_
        center[observed] = np.nan_to_num(fitted_center)
        fitted_scale = np.nan_to_num(np.asarray(scaler.scale_, dtype=np.float64), nan=1.0)
        scale[observed] = np.where(fitted_scale > 1e-12, fitted_scale, 1.0)
    return center, scale


@dataclass
class PreparedSeries:
    """One series ready for the network (T steps, F channels, C covariates).

    values : (T, F) scaled, 0 where unobserved (GRU-D input).
    filled : (T, F) scaled and forward-filled (0, the training mean, before any value).
    observed : (T, F) bool. delta : (T, F) float32. covariates : (T, C) float32.
    """

    series_id: str
    timestamps: np.ndarray
    values: np.ndarray
    filled: np.ndarray
    observed: np.ndarray
    delta: np.ndarray
    covariates: np.ndarray

    @property
    def n_steps(self) -> int:
        return int(self.values.shape[0])


def prepare_series(arrays: SeriesArrays, center: np.ndarray, scale: np.ndarray,
                   calendar: bool) -> PreparedSeries:
    """Scale one series with its ``(center, scale)`` and add masks, fills and covariates."""
    scaled = (arrays.values - center) / scale
    filled = forward_fill(np.where(arrays.observed, scaled, 0.0), arrays.observed)
    covariates = (calendar_features(arrays.timestamps) if calendar
                  else np.zeros((arrays.n_steps, 0), np.float32))
    return PreparedSeries(arrays.series_id, arrays.timestamps,
                          np.where(arrays.observed, scaled, 0.0).astype(np.float32),
                          filled.astype(np.float32), arrays.observed.copy(),
                          arrays.delta.astype(np.float32), covariates)


def window_starts(series: list[PreparedSeries], lookback: int, horizon: int,
                  stride: int = 1) -> np.ndarray:
    """(W, 2) int64 (series index, start) of every window with a full look-back/horizon."""
    rows = []
    for index, item in enumerate(series):
        n_windows = item.n_steps - lookback - horizon + 1
        if n_windows > 0:
            starts = np.arange(0, n_windows, stride)
            rows.append(np.stack([np.full(starts.size, index), starts], axis=1))
    return np.concatenate(rows) if rows else np.zeros((0, 2), np.int64)


def window_batch(series: list[PreparedSeries], starts: np.ndarray, lookback: int,
                 horizon: int, targets: list[int], raw_values: bool) -> WindowBatch:
    """Stack windows into a :class:`WindowBatch`.

    ``x`` holds the GRU-D values (0 where unobserved) when ``raw_values``, else the
    forward-filled values; ``x_last`` always the forward-filled ones; ``covariates`` covers
    look-back + horizon; ``y``/``y_observed`` are (B, N, O) over the ``targets`` channels.
    """
    def stack(name: str, begin: int, end: int) -> torch.Tensor:
        return torch.from_numpy(np.stack(
            [getattr(series[s], name)[t + begin:t + end] for s, t in starts]))

    end = lookback + horizon
    x = stack("values" if raw_values else "filled", 0, lookback)
    y = stack("values", lookback, end)[..., targets]
    y_observed = stack("observed", lookback, end)[..., targets]
    return WindowBatch(x=x, observed=stack("observed", 0, lookback),
                       delta=stack("delta", 0, lookback), x_last=stack("filled", 0, lookback),
                       y=y, y_observed=y_observed, covariates=stack("covariates", 0, end))


@dataclass
class ChunkBatch:
    """Chunk k of a group of series for stateful training (B series, L steps).

    x, observed, delta : (B, L, F); covariates : (B, L, C); last : (B, L, O) forward-filled
    targets at each step; future : (B, L, N, C) covariates of the next N steps; y, y_observed
    : (B, L, N, O) the next N targets of every step (unobserved beyond a series' end);
    reset : this chunk starts new series (the carried state must be dropped).
    """

    x: torch.Tensor
    observed: torch.Tensor
    delta: torch.Tensor
    covariates: torch.Tensor
    last: torch.Tensor
    future: torch.Tensor
    y: torch.Tensor
    y_observed: torch.Tensor
    reset: bool = False

    def to(self, device: torch.device | str) -> ChunkBatch:
        moved = {f.name: getattr(self, f.name) for f in fields(self)}
        for name, value in moved.items():
            if isinstance(value, torch.Tensor):
                moved[name] = value.to(device)
        return ChunkBatch(**moved)


def chunk_batches(series: list[PreparedSeries], group: list[int], chunk_length: int,
                  horizon: int, targets: list[int], raw_values: bool) -> list[ChunkBatch]:
    """The consecutive chunks of the series ``group`` (indices into ``series``), padded."""
    length = max(series[i].n_steps for i in group)
    n_features = series[group[0]].values.shape[1]
    n_cov = series[group[0]].covariates.shape[1]

    def padded(name: str, width: int, dtype: type) -> np.ndarray:
        out = np.zeros((len(group), length + horizon, width), dtype)
        for row, index in enumerate(group):
            data = getattr(series[index], name)
            out[row, :data.shape[0]] = data
        return out

    values = padded("values", n_features, np.float32)
    filled = padded("filled", n_features, np.float32)
    observed = padded("observed", n_features, bool)
    delta = padded("delta", n_features, np.float32)
    covariates = padded("covariates", n_cov, np.float32)
    # targets of step t are steps t+1 .. t+N: windows over [1, length + N)
    y = sliding_window_view(values[:, 1:, targets], horizon, axis=1)[:, :length]
    y_observed = sliding_window_view(observed[:, 1:, targets], horizon, axis=1)[:, :length]
    future = sliding_window_view(covariates[:, 1:], horizon, axis=1)[:, :length]
    batches = []
    for begin in range(0, length, chunk_length):
        end = min(begin + chunk_length, length)
        part = slice(begin, end)
        batches.append(ChunkBatch(
            x=torch.from_numpy((values if raw_values else filled)[:, part].copy()),
            observed=torch.from_numpy(observed[:, part].copy()),
            delta=torch.from_numpy(delta[:, part].copy()),
            covariates=torch.from_numpy(covariates[:, part].copy()),
            last=torch.from_numpy(filled[:, part][..., targets].copy()),
            future=torch.from_numpy(np.moveaxis(future[:, part], -1, -2).copy()),
            y=torch.from_numpy(np.moveaxis(y[:, part], -1, -2).copy()),
            y_observed=torch.from_numpy(np.moveaxis(y_observed[:, part], -1, -2).copy()),
            reset=begin == 0))
    return batches


def check_length(series: list[PreparedSeries], needed: int, what: str) -> None:
    """Raise when no series has ``needed`` steps."""
    longest = max((item.n_steps for item in series), default=0)
    if longest < needed:
        raise RecurraError(f"{what}: the longest series has {longest} steps but lookback + "
                           f"horizon needs {needed}; lower lookback/horizon or pass more data")
