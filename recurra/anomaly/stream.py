"""What a detector carries per series, and how new rows become a model's input chunk.

* :class:`Chunk` - rows of one series prepared for an error model: normalised values,
  forward-filled values, the mask, GRU-D's time since the last observation, elapsed steps.
* :class:`StreamState` - what one series carries from one ``update`` to the next (the last
  ``tail_length`` rows, last-seen times, the EWMA, threshold and error-model states).
* :func:`prepare_chunk` - normalise new rows, carry deltas and the forward fill, prepend the
  carried tail.  Pure apart from advancing the state it is given.

These types are plain dataclasses of numpy arrays and floats (a saved detector's state is
made of them; pickles of older versions name them under ``recurra.anomaly.base``, which
re-exports them).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from recurra.anomaly import likelihood as lk
from recurra.anomaly import thresholds as th
from recurra.data.arrays import SeriesArrays, forward_fill
from recurra.data.schema import SchemaError

CHUNK_FIELDS = ("timestamps", "values", "filled", "observed", "delta", "elapsed")


@dataclass
class Chunk:
    """Rows of one series prepared for a model (normalised, n rows, F channels)."""

    timestamps: np.ndarray    # (n,) datetime64[us]
    values: np.ndarray        # (n, F) normalised, NaN where unobserved
    filled: np.ndarray        # (n, F) forward-filled (0 = training mean before any value)
    observed: np.ndarray      # (n, F) bool
    delta: np.ndarray         # (n, F) steps since the channel was last observed
    elapsed: np.ndarray       # (n,) steps since the epoch


@dataclass
class StreamState:
    """What one series carries from one ``update`` to the next."""

    tail: Chunk | None = None
    last_seen: np.ndarray | None = None
    last_filled: np.ndarray | None = None
    smooth: float | None = None
    spot: th.SpotState | None = None
    model_state: Any = None
    recent: np.ndarray | None = None
    likelihood: lk.LikelihoodState | None = None
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    n_rows: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scored:
    """Internal result of scoring one chunk of one series."""

    chunk: Chunk
    errors: np.ndarray        # (n, F)
    score: np.ndarray         # (n,)
    flags: np.ndarray         # (n,)
    thresholds: np.ndarray    # (n,)


def prepare_chunk(arrays: SeriesArrays, state: StreamState, mean: np.ndarray,
                  std: np.ndarray, time_scale: float, tail_length: int
                  ) -> tuple[Chunk, StreamState]:
    """Normalise new rows with ``mean`` / ``std`` (F,), carry deltas and forward fill,
    prepend the tail: the returned chunk's last ``arrays.n_steps`` rows are the new ones.

    ``state`` (its tail, last-seen times, last filled values, row count) is advanced in
    place and returned; its new tail is the chunk's last ``tail_length`` rows.
    """
    seconds = arrays.timestamps.astype("datetime64[us]").astype(np.int64) / 1e6
    elapsed = seconds / time_scale
    values = (arrays.values - mean) / std
    observed = arrays.observed
    n_channels = values.shape[1]
    if state.last_seen is None:
        start = elapsed[0] if elapsed.size else 0.0
        state.last_seen = np.full(n_channels, start)
        state.last_filled = np.zeros(n_channels)
    marked = np.where(observed, elapsed[:, None], -np.inf)
    upto = np.maximum(np.maximum.accumulate(marked, axis=0), state.last_seen[None, :])
    before = np.vstack([state.last_seen[None, :], upto[:-1]]) if elapsed.size else upto
    delta = elapsed[:, None] - before
    filled = forward_fill(values, observed, state.last_filled)
    new = Chunk(arrays.timestamps, values, filled, observed, delta, elapsed)
    chunk = new if state.tail is None else concat_chunks(state.tail, new)
    if elapsed.size:
        state.last_seen = upto[-1]
        state.last_filled = filled[-1]
    state.tail = take_last(chunk, tail_length)
    state.n_rows += arrays.n_steps
    return chunk, state


def check_after_tail(arrays: SeriesArrays, state: StreamState) -> None:
    """Raise when new rows do not start after the last row the state has seen."""
    if state.tail is not None and len(state.tail.elapsed) and arrays.n_steps:
        last = state.tail.timestamps[-1]
        if arrays.timestamps[0] <= last:
            raise SchemaError(f"new rows: series {arrays.series_id!r} starts at "
                              f"{arrays.timestamps[0]}, not after the last row seen "
                              f"({last}); streaming never goes back in time")


def concat_chunks(first: Chunk, second: Chunk) -> Chunk:
    """The rows of ``first`` followed by those of ``second``."""
    return Chunk(*(np.concatenate([getattr(first, f), getattr(second, f)])
                   for f in CHUNK_FIELDS))


def take_last(chunk: Chunk, n_rows: int) -> Chunk:
    """A copy of the last ``n_rows`` rows (none when ``n_rows`` <= 0)."""
    start = max(len(chunk.elapsed) - n_rows, 0) if n_rows > 0 else len(chunk.elapsed)
    return Chunk(*(getattr(chunk, f)[start:].copy() for f in CHUNK_FIELDS))


def pad_left(chunk: Chunk, n_rows: int) -> Chunk:
    """Prepend ``n_rows`` unobserved rows (value 0, delta 0) so the first rows get windows."""
    if n_rows <= 0:
        return chunk
    n_channels = chunk.values.shape[1]
    zeros = np.zeros((n_rows, n_channels))
    first_time = chunk.elapsed[0] if chunk.elapsed.size else 0.0
    pad = Chunk(np.repeat(chunk.timestamps[:1], n_rows), np.full((n_rows, n_channels), np.nan),
                zeros, np.zeros((n_rows, n_channels), bool), zeros.copy(),
                np.full(n_rows, first_time))
    return concat_chunks(pad, chunk)
