"""From contract frames to scaled arrays, training windows and stateful chunks.

``prepare_series`` turns each series of a frame into a :class:`PreparedSeries` (scaled
values, masks, deltas, forward-filled values, calendar covariates).  Stateless training
draws look-back/horizon windows (:class:`recurra.nn.batch.WindowBatch`); stateful training cuts
each series into consecutive chunks (:class:`ChunkBatch`): batch k holds chunk k of a group
of series, and every step of a chunk is supervised with the next N targets.

Size: ~460 lines: windows and chunks are cut from the same :class:`PreparedSeries`, and the
stateless and stateful paths must agree on scaling, masks and deltas step for step, so they
live together.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import polars as pl
import torch
from numpy.lib.stride_tricks import sliding_window_view

from recurra.data.arrays import SeriesArrays, forward_fill
from recurra.data.schema import SERIES_ID, RecurraError
from recurra.nn.batch import WindowBatch

SCALERS = ("standard", "robust", "none")
N_CALENDAR = 6  # sin/cos of hour of day, day of week, day of year


def calendar_features(timestamps: np.ndarray) -> np.ndarray:
    """(T, 6) float32 sin/cos of hour of day, day of week and day of year.

    ``timestamps`` are ``datetime64`` (UTC), (T,) or of any shape (..., T): the features are
    elementwise, so (S, T) stamps give (S, T, 6), row ``i`` equal to the call on row ``i``.
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
    static : (S,) float32 static features of the series, or None.
    burn_in : leading steps that only warm up a carried state (stateful segments): their
        targets are not supervised.
    """

    series_id: str
    timestamps: np.ndarray
    values: np.ndarray
    filled: np.ndarray
    observed: np.ndarray
    delta: np.ndarray
    covariates: np.ndarray
    static: np.ndarray | None = None
    burn_in: int = 0

    @property
    def n_steps(self) -> int:
        return int(self.values.shape[0])


def prepare_series(arrays: SeriesArrays, center: np.ndarray, scale: np.ndarray,
                   calendar: bool, static: np.ndarray | None = None) -> PreparedSeries:
    """Scale one series with its ``(center, scale)`` and add masks, fills and covariates."""
    scaled = (arrays.values - center) / scale
    filled = forward_fill(np.where(arrays.observed, scaled, 0.0), arrays.observed)
    covariates = (calendar_features(arrays.timestamps) if calendar
                  else np.zeros((arrays.n_steps, 0), np.float32))
    return PreparedSeries(arrays.series_id, arrays.timestamps,
                          np.where(arrays.observed, scaled, 0.0).astype(np.float32),
                          filled.astype(np.float32), arrays.observed.copy(),
                          arrays.delta.astype(np.float32), covariates, static)


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
    static = None
    if series[0].static is not None:
        static = torch.from_numpy(np.stack([series[s].static for s, _ in starts]))
    return WindowBatch(x=x, observed=stack("observed", 0, lookback),
                       delta=stack("delta", 0, lookback), x_last=stack("filled", 0, lookback),
                       y=y, y_observed=y_observed, covariates=stack("covariates", 0, end),
                       static=static, series_ids=tuple(series[s].series_id for s, _ in starts))


@dataclass
class ChunkBatch:
    """Chunk k of a group of series for stateful training (B series, L steps).

    x, observed, delta : (B, L, F); covariates : (B, L, C); last : (B, L, O) forward-filled
    targets at each step; future : (B, L, N, C) covariates of the next N steps; y, y_observed
    : (B, L, N, O) the next N targets of every step (unobserved beyond a series' end);
    reset : this chunk starts new series (the carried state must be dropped).
    static : (B, S) static features, or None.
    series_ids : the B series of the group (for error messages).
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
    static: torch.Tensor | None = None
    series_ids: tuple[str, ...] = ()

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
    supervised = np.arange(length)[None, :] >= np.array([series[i].burn_in for i in group])[:, None]
    y_observed = y_observed & supervised[:, :, None, None]        # burn-in steps: no loss
    future = sliding_window_view(covariates[:, 1:], horizon, axis=1)[:, :length]
    static = None
    if series[group[0]].static is not None:
        static = torch.from_numpy(np.stack([series[i].static for i in group]))
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
            reset=begin == 0, static=static,
            series_ids=tuple(series[i].series_id for i in group)))
    return batches


def check_length(series: list[PreparedSeries], needed: int, what: str) -> None:
    """Raise when no series has ``needed`` steps."""
    longest = max((item.n_steps for item in series), default=0)
    if longest < needed:
        raise RecurraError(f"{what}: the longest series has {longest} steps but lookback + "
                           f"horizon needs {needed}; lower lookback/horizon or pass more data")


def continue_rows(arrays: SeriesArrays, center: np.ndarray, scale: np.ndarray,
                  calendar: bool, origin: np.datetime64, time_scale: float,
                  filled_last: np.ndarray, last_observed: np.ndarray
                  ) -> tuple[PreparedSeries, np.ndarray]:
    """Prepare new rows of a known series as if they were the tail of its whole history.

    ``filled_last`` (F,) is the last forward-filled scaled value and ``last_observed`` (F,)
    the elapsed time (in ``time_scale`` units since ``origin``) of the last observation of
    each channel (0 when none): the deltas and fills then equal those of one pass over the
    whole series.  Returns the prepared rows and the updated ``last_observed``.
    """
    seconds = (arrays.timestamps - origin) / np.timedelta64(1, "s")
    elapsed = seconds.astype(np.float64) / time_scale
    observed = arrays.observed
    marked = np.where(observed, elapsed[:, None], -np.inf)
    running = np.maximum.accumulate(np.vstack([last_observed[None, :], marked]), axis=0)
    delta = elapsed[:, None] - running[:-1]
    scaled = (arrays.values - center) / scale
    zeroed = np.where(observed, scaled, 0.0)
    filled = forward_fill(zeroed, observed, fill=filled_last)
    covariates = (calendar_features(arrays.timestamps) if calendar
                  else np.zeros((arrays.n_steps, 0), np.float32))
    rows = PreparedSeries(arrays.series_id, arrays.timestamps, zeroed.astype(np.float32),
                          filled.astype(np.float32), observed.copy(),
                          delta.astype(np.float32), covariates)
    return rows, running[-1]


def last_observed_elapsed(arrays: SeriesArrays) -> np.ndarray:
    """(F,) elapsed time of the last observation per channel (0 when never observed)."""
    elapsed = arrays.elapsed()
    marked = np.where(arrays.observed, elapsed[:, None], 0.0)
    return marked.max(axis=0) if arrays.n_steps else np.zeros(arrays.n_channels)


# Stateful training sources ---------------------------------------------------------------

def stateful_sources(prepared: list[PreparedSeries], val_prepared: list[PreparedSeries] | None,
                     config: Any, targets: list[int], schedule: Any):
    """Batch sources and the stateful step function (see
    :func:`recurra.nn.train.fit_module`).

    Each epoch the series are shuffled into groups of ``train.batch_size``; the chunks of a
    group come in order, the first flagged ``reset``.  With ``config.tbptt.segments`` k
    > 1 each training series is first cut into k consecutive segments, each starting from a
    fresh state, so that a few long series still fill a batch.  When every series fits in
    one batch the chunks are built once and reused each epoch (the row order inside a batch
    does not change the loss).  ``config.max_windows_per_epoch`` is a budget of supervised
    positions (a stateless window supervises one): each epoch takes whole random groups
    until their steps (burn-in excluded) reach it, at least one group, so that an epoch over
    10,000 series costs what one over a few hundred does.
    """
    raw = config.encoder.cell == "grud"
    size = config.train.batch_size
    rng = np.random.default_rng(config.train.seed)
    prepared = split_segments(prepared, config.tbptt.segments, config.tbptt.length,
                              config.tbptt.burn_in)

    built: dict[int, list[ChunkBatch]] = {}

    def batches(series: list[PreparedSeries], order: np.ndarray):
        if len(series) <= size:  # one group (e.g. the segments of one series): build it once
            if id(series) not in built:
                built[id(series)] = chunk_batches(series, list(range(len(series))),
                                                  config.tbptt.length, config.horizon,
                                                  targets, raw)
            yield from built[id(series)]
            return
        for begin in range(0, len(order), size):
            group = [int(i) for i in order[begin:begin + size]]
            yield from chunk_batches(series, group, config.tbptt.length, config.horizon,
                                     targets, raw)

    budget = getattr(config, "max_windows_per_epoch", None)
    positions = np.array([max(0, item.n_steps - item.burn_in) for item in prepared])

    def train_batches():
        order = rng.permutation(len(prepared))
        if budget is not None and len(order) > size:
            group_positions = np.add.reduceat(positions[order], np.arange(0, len(order), size))
            n_groups = int(np.searchsorted(np.cumsum(group_positions), budget)) + 1
            order = order[:n_groups * size]
        return batches(prepared, order)

    val_batches = None
    if val_prepared:
        def val_batches():
            return batches(val_prepared, np.arange(len(val_prepared)))

    def step(module: Any, batch: ChunkBatch, state: Any) -> tuple[torch.Tensor | None, Any]:
        if batch.reset:
            state = None
        output, state = module.encode(batch.x, batch.observed, batch.delta, state,
                                      batch.covariates)
        if not bool(batch.y_observed.any()):
            return None, state
        n_batch, length, size_out = output.shape
        flat = n_batch * length
        y = batch.y.reshape(flat, *batch.y.shape[2:])
        mask = batch.y_observed.reshape(flat, *batch.y_observed.shape[2:])
        static = None
        if batch.static is not None:
            static = batch.static.repeat_interleave(length, dim=0)
        params = module.decode(output.reshape(flat, size_out),
                               batch.last.reshape(flat, -1),
                               batch.future.reshape(flat, *batch.future.shape[2:]),
                               torch.nan_to_num(y), mask, schedule.current(module.training),
                               static=static)
        return module.head.loss(params, y, mask), state

    return train_batches, val_batches, step


def split_segments(series: list[PreparedSeries], n_segments: int, min_length: int,
                   burn_in: int = 0) -> list[PreparedSeries]:
    """Cut each series into ``n_segments`` consecutive parts (each >= ``min_length`` steps).

    The last ``horizon`` targets of a part are its successor's first steps; they are not
    supervised from that part (the chunk padding masks them).  With ``burn_in`` > 0 every
    part but the first also starts up to ``burn_in`` steps earlier (its ``burn_in``
    attribute): those steps warm up the fresh state and are left out of the loss, so each
    step is still supervised exactly once.
    """
    if n_segments <= 1:
        return series
    parts = []
    for item in series:
        count = max(1, min(n_segments, item.n_steps // max(1, min_length)))
        bounds = np.linspace(0, item.n_steps, count + 1).astype(int)
        for begin, end in zip(bounds[:-1], bounds[1:], strict=True):
            start = max(0, begin - burn_in)
            parts.append(PreparedSeries(item.series_id, item.timestamps[start:end], *(
                getattr(item, name)[start:end] for name in
                ("values", "filled", "observed", "delta", "covariates")), item.static,
                burn_in=item.burn_in if begin == 0 else begin - start))
    return parts


def skip_design(series: list[PreparedSeries], starts: np.ndarray, lookback: int,
                horizon: int, normalization: str) -> tuple[np.ndarray, np.ndarray]:
    """Rows of a linear look-back -> horizon map, one per (window, channel) whose targets
    are all observed: inputs (M, T) and outputs (M, N), normalised per window as the
    network does (:func:`recurra.nn.modules.window_level`)."""
    from recurra.nn.modules import window_level

    inputs, outputs = [], []
    for begin in range(0, len(starts), 4096):
        part = starts[begin:begin + 4096]
        x = np.stack([series[s].filled[t:t + lookback] for s, t in part])
        y = np.stack([series[s].values[t + lookback:t + lookback + horizon] for s, t in part])
        seen = np.stack([series[s].observed[t + lookback:t + lookback + horizon].all(axis=0)
                         for s, t in part])                              # (B, F)
        level, spread = (v.numpy() for v in window_level(torch.from_numpy(x), normalization))
        inputs.append(((x - level) / spread).transpose(0, 2, 1)[seen])
        outputs.append(((y - level) / spread).transpose(0, 2, 1)[seen])
    return np.concatenate(inputs), np.concatenate(outputs)


def ridge(inputs: np.ndarray, outputs: np.ndarray, alpha: float, intercept: bool = True
          ) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression: weight (N, T) and bias (N,) as float32.

    ``alpha = inf`` gives a zero weight (the bias is then the mean output, or 0 without
    ``intercept``).
    """
    if inputs.shape[0] == 0:
        raise RecurraError("linear_skip_ridge: no training window has all its targets "
                           "observed; set linear_skip_ridge=None")
    x = inputs.astype(np.float64)
    y = outputs.astype(np.float64)
    x_mean = x.mean(axis=0) if intercept else np.zeros(x.shape[1])
    y_mean = y.mean(axis=0) if intercept else np.zeros(y.shape[1])
    if np.isinf(alpha):
        coef = np.zeros((x.shape[1], y.shape[1]))
    else:
        xc, yc = x - x_mean, y - y_mean
        coef = np.linalg.solve(xc.T @ xc + alpha * np.eye(x.shape[1]), xc.T @ yc)  # (T, N)
    bias = y_mean - x_mean @ coef
    return coef.T.astype(np.float32), bias.astype(np.float32)


def read_static(static: Any, columns: list[str] | None = None
                ) -> tuple[list[str], list[str], np.ndarray]:
    """Check a static-features frame: ``series_id`` + numeric columns, one row per series.

    Returns (series ids, column names, (n_series, S) float64 values); ``columns`` fixes the
    expected columns (those seen at fit time).
    """
    from recurra.data.schema import SchemaError, to_polars

    frame = to_polars(static)
    if SERIES_ID not in frame.columns:
        raise SchemaError(f"static: missing column '{SERIES_ID}'; a static frame has one row "
                          "per series: series_id + numeric columns")
    names = [c for c in frame.columns if c != SERIES_ID] if columns is None else list(columns)
    missing = [c for c in names if c not in frame.columns]
    if missing or not names:
        raise SchemaError(f"static: columns {missing or names} are missing (expected "
                          f"{names or 'at least one numeric column'})")
    bad = [c for c in names if not frame.schema[c].is_numeric()]
    if bad:
        raise SchemaError(f"static: columns {bad} must be numeric")
    if frame[SERIES_ID].is_duplicated().any():
        raise SchemaError("static: series_id must be unique (one row per series)")
    values = frame.select(names).cast(pl.Float64).to_numpy()
    if not np.isfinite(values).all():
        raise SchemaError(f"static: columns {names} must be finite and not null")
    return [str(v) for v in frame[SERIES_ID].to_list()], names, values
