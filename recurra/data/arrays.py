"""From contract frames to dense per-series arrays with masks and deltas, and back.

Every model input starts here: :func:`frame_to_arrays` pivots the channels of each series
onto the union of its timestamps, keeping the observed-mask and computing ``delta``, the
time since the last observation of each variable (Che et al. 2018, GRU-D)::

    delta_0 = 0
    delta_t = s_t - s_{t-1} + delta_{t-1}   if m_{t-1} = 0
    delta_t = s_t - s_{t-1}                 if m_{t-1} = 1

Windows reach models as :class:`WindowBatch`, a small dataclass of named tensors.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from recurra.data.schema import (
    CHANNEL,
    OBSERVED,
    SERIES_ID,
    TIMESTAMP,
    TIMESTAMP_DTYPE,
    VALUE,
    SchemaError,
    validate_frame,
)

if TYPE_CHECKING:  # pragma: no cover
    import torch


@dataclass(frozen=True)
class SeriesArrays:
    """One series as dense arrays (T time steps x F channels).

    Attributes
    ----------
    series_id : the entity.
    channels : the F channel names, in column order.
    timestamps : (T,) ``datetime64[us]`` (UTC), strictly increasing.
    values : (T, F) float64, NaN where not observed.
    observed : (T, F) bool mask.
    delta : (T, F) float64, time since the last observation in units of ``time_scale``.
    time_scale : seconds per delta unit (the median spacing by default: 1.0 per step on a
        regular series).
    """

    series_id: str
    channels: tuple[str, ...]
    timestamps: np.ndarray
    values: np.ndarray
    observed: np.ndarray
    delta: np.ndarray
    time_scale: float

    @property
    def n_steps(self) -> int:
        return int(self.values.shape[0])

    @property
    def n_channels(self) -> int:
        return int(self.values.shape[1])

    def elapsed(self) -> np.ndarray:
        """(T,) time since the first timestamp, in units of ``time_scale``."""
        seconds = (self.timestamps - self.timestamps[0]) / np.timedelta64(1, "s")
        return seconds.astype(np.float64) / self.time_scale

    def slice(self, start: int, stop: int) -> SeriesArrays:
        """Rows [start, stop); ``delta`` is kept as computed on the whole series."""
        return SeriesArrays(self.series_id, self.channels, self.timestamps[start:stop],
                            self.values[start:stop], self.observed[start:stop],
                            self.delta[start:stop], self.time_scale)


def compute_delta(elapsed: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """Time since the last observation per variable, vectorised.

    Parameters
    ----------
    elapsed : (T,) increasing times (any unit).
    observed : (T, F) bool mask.

    Returns
    -------
    (T, F) float64: ``delta[t] = elapsed[t] - elapsed[j]`` where ``j`` is the last step
    before ``t`` with the variable observed, or step 0 when there is none; ``delta[0] = 0``.

    Examples
    --------
    >>> compute_delta(np.array([0., 1., 2., 4.]), np.array([[1], [0], [0], [1]], bool))[:, 0]
    array([0., 1., 2., 4.])
    """
    n_steps, n_channels = observed.shape
    if n_steps == 0:
        return np.zeros((0, n_channels))
    index = np.arange(n_steps)[:, None]
    # index of the last observation strictly before t (0 when none)
    marked = np.where(observed, index, 0)
    last_at_or_before = np.maximum.accumulate(marked, axis=0)
    last_before = np.vstack([np.zeros((1, n_channels), dtype=int), last_at_or_before[:-1]])
    return elapsed[:, None] - elapsed[last_before]


def forward_fill(values: np.ndarray, observed: np.ndarray, fill: np.ndarray | None = None
                 ) -> np.ndarray:
    """Last observed value per variable; before the first observation, ``fill`` (or 0).

    ``values`` and ``observed`` are (T, F); ``fill`` is (F,).
    """
    n_steps, n_channels = values.shape
    if n_steps == 0:
        return values.copy()
    index = np.arange(n_steps)[:, None]
    last = np.maximum.accumulate(np.where(observed, index, -1), axis=0)
    start = np.zeros(n_channels) if fill is None else np.asarray(fill, dtype=np.float64)
    filled = values[np.maximum(last, 0), np.arange(n_channels)[None, :]]
    return np.where(last >= 0, filled, start[None, :])


def frame_to_arrays(frame: pl.DataFrame, *, channels: list[str] | None = None,
                    time_scale: float | None = None) -> list[SeriesArrays]:
    """Pivot a contract frame into one :class:`SeriesArrays` per series.

    Parameters
    ----------
    frame : a contract frame (validated here).
    channels : the channels to keep, in this order; default: all channels of the frame,
        sorted. A channel absent from a series becomes an all-unobserved column.
    time_scale : seconds per delta unit; default: the median spacing of each series.
    """
    frame = validate_frame(frame)
    return _frame_arrays(frame, channels, time_scale)


def _frame_arrays(frame: pl.DataFrame, channels: list[str] | None,
                  time_scale: float | None) -> list[SeriesArrays]:
    """:func:`frame_to_arrays` of a validated frame, in numpy: the frame is sorted by
    (series_id, channel, timestamp), so each series is one run of rows; a few whole-column
    conversions, then one dense assembly per series (no per-series query plans, so one row
    for each of 10,000 series costs what 10,000 rows of one series do)."""
    names = sorted(frame[CHANNEL].unique().to_list()) if channels is None else list(channels)
    codes = frame.get_column(CHANNEL).replace_strict(
        names, list(range(len(names))), default=-1, return_dtype=pl.Int32)
    if channels is not None and bool((codes < 0).any()):
        kept = codes >= 0
        frame, codes = frame.filter(kept), codes.filter(kept)
    if frame.is_empty():
        return []
    columns = codes.to_numpy()
    stamps = frame.get_column(TIMESTAMP).to_numpy().astype("datetime64[us]")
    values = frame.get_column(VALUE).to_numpy()           # null -> NaN (Float64)
    observed = frame.get_column(OBSERVED).to_numpy()
    runs = frame.select(pl.col(SERIES_ID).rle()).unnest(SERIES_ID)
    result, start = [], 0
    for series_id, length in zip(runs["value"].to_list(), runs["len"].to_list(), strict=True):
        stop = start + length
        result.append(_assemble(str(series_id), names, stamps[start:stop], values[start:stop],
                                observed[start:stop], columns[start:stop], time_scale))
        start = stop
    return result


def _assemble(series_id: str, names: list[str], stamps: np.ndarray, cell_values: np.ndarray,
              cell_observed: np.ndarray, columns: np.ndarray, time_scale: float | None
              ) -> SeriesArrays:
    """Dense (T, F) arrays from long cells: (n,) stamps, values, observed and column index."""
    timestamps, row = np.unique(stamps, return_inverse=True)
    n_steps = timestamps.size
    values = np.full((n_steps, len(names)), np.nan)
    observed = np.zeros((n_steps, len(names)), dtype=bool)
    values[row, columns] = cell_values
    observed[row, columns] = cell_observed
    values[~observed] = np.nan
    return _finish(series_id, names, timestamps, values, observed, time_scale)


def _finish(series_id: str, names: list[str], timestamps: np.ndarray, values: np.ndarray,
            observed: np.ndarray, time_scale: float | None) -> SeriesArrays:
    n_steps = timestamps.size
    seconds = (timestamps - timestamps[0]) / np.timedelta64(1, "s") if n_steps else np.zeros(0)
    scale = time_scale if time_scale is not None else _median_spacing(seconds)
    if scale <= 0:
        raise SchemaError(f"time_scale ({scale}) must be > 0 seconds")
    delta = compute_delta(seconds.astype(np.float64) / scale, observed)
    return SeriesArrays(series_id, tuple(names), timestamps, values, observed, delta, scale)


def _median_spacing(seconds: np.ndarray) -> float:
    if seconds.size < 2:
        return 1.0
    spacing = float(np.median(np.diff(seconds)))
    return spacing if spacing > 0 else 1.0


def arrays_to_frame(arrays: SeriesArrays) -> pl.DataFrame:
    """The inverse of :func:`frame_to_arrays` for one series (all cells become rows)."""
    n_steps, n_channels = arrays.values.shape
    values = np.where(arrays.observed, arrays.values, np.nan).reshape(-1)
    frame = pl.DataFrame({
        SERIES_ID: [arrays.series_id] * (n_steps * n_channels),
        CHANNEL: list(arrays.channels) * n_steps,
        TIMESTAMP: pl.Series(np.repeat(arrays.timestamps, n_channels)).cast(
            pl.Datetime("us")).dt.replace_time_zone("UTC"),
        VALUE: pl.Series(values, nan_to_null=True),
        OBSERVED: arrays.observed.reshape(-1),
    })
    return validate_frame(frame.with_columns(pl.col(TIMESTAMP).cast(TIMESTAMP_DTYPE)))


@dataclass
class WindowBatch:
    """A batch of windows as named tensors (B batch, T look-back, H horizon, F channels).

    x, observed, delta, x_last : (B, T, F) inputs; ``x`` is 0 where not observed and
        ``x_last`` holds the last observed value (the empirical mean before any).
    y, y_observed : (B, H, F_out) targets and their mask (losses use observed targets only);
        ``None`` at prediction time.
    covariates : optional (B, T + H, C) known covariates (calendar features).
    static : optional (B, S) static features.
    series_ids : the series of each window (B names), for error messages; may be empty.
    """

    x: torch.Tensor
    observed: torch.Tensor
    delta: torch.Tensor
    x_last: torch.Tensor | None = None
    y: torch.Tensor | None = None
    y_observed: torch.Tensor | None = None
    covariates: torch.Tensor | None = None
    static: torch.Tensor | None = None
    series_ids: tuple[str, ...] = ()

    def to(self, device: torch.device | str, non_blocking: bool = False) -> WindowBatch:
        """The same batch on ``device`` (None fields stay None)."""
        moved = {}
        for field in fields(self):
            tensor = getattr(self, field.name)
            moved[field.name] = (tensor.to(device, non_blocking=non_blocking)
                                 if hasattr(tensor, "to") else tensor)
        return WindowBatch(**moved)

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[0])
