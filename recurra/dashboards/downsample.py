"""Downsampling long series for display, keeping extremes and gaps visible.

A browser draws a few thousand points per trace smoothly; a million is not. The dashboard
and the reports therefore send at most :data:`MAX_POINTS` points per trace (5,000 by
default) and pick them so that the picture does not lie:

- :func:`minmax_indices` (the default) splits the series into equal-count buckets and keeps,
  per bucket, the first and last point plus the minimum and the maximum of the observed
  values, and the first unobserved point together with the observed points right before
  and after its gap (so a gap still breaks the line, exactly where it is). Spikes, the very
  thing an anomaly analyst looks for, are never averaged away. Vectorised: a million points
  take a few tens of milliseconds.
- :func:`lttb_indices`: Largest-Triangle-Three-Buckets (Steinarsson 2013), visually
  smoother for dense oscillating signals; one Python step per bucket.

Both return sorted integer indices into the input, so any other column (observed mask,
hover text) can be taken with the same indices.
"""

from __future__ import annotations

import numpy as np

from recurra.data.schema import RecurraError

MAX_POINTS = 5_000
METHODS = ("minmax", "lttb")


def _check_max_points(max_points: int, minimum: int) -> None:
    if int(max_points) != max_points or max_points < minimum:
        raise RecurraError(f"max_points ({max_points}) must be an integer >= {minimum}")


def minmax_indices(values: np.ndarray, max_points: int = MAX_POINTS) -> np.ndarray:
    """Indices keeping first/last/min/max and the first gap (with its observed neighbours)
    of each of ``max_points // 7`` buckets.

    Parameters
    ----------
    values : (T,) float, NaN where not observed.
    max_points : upper bound on the number of indices returned (>= 7).

    Returns
    -------
    (K,) int64 sorted unique indices, K <= max_points; ``arange(T)`` when T <= max_points.

    Examples
    --------
    >>> minmax_indices(np.array([0., 5., 1., 2., 3., -4., 1., 0., 2., 1., 0.]), 7).tolist()
    [0, 1, 5, 10]
    >>> minmax_indices(np.array([0., 5., 1., np.nan, np.nan, -4., 1., 0., 2., 1.]), 7).tolist()
    [0, 1, 2, 3, 5, 9]
    """
    _check_max_points(max_points, 7)
    values = np.asarray(values, dtype=np.float64)
    n_steps = values.shape[0]
    if n_steps <= max_points:
        return np.arange(n_steps, dtype=np.int64)
    n_buckets = max(1, max_points // 7)
    edges = np.linspace(0, n_steps, n_buckets + 1).astype(np.int64)
    starts, stops = edges[:-1], edges[1:]
    missing = np.isnan(values)
    high = np.where(missing, -np.inf, values)
    low = np.where(missing, np.inf, values)
    # argmax per bucket via reduceat of the maxima, then the first position reaching it
    bucket_of = np.repeat(np.arange(n_buckets), stops - starts)
    arg_max = _first_where(high == np.maximum.reduceat(high, starts)[bucket_of], starts, stops)
    arg_min = _first_where(low == np.minimum.reduceat(low, starts)[bucket_of], starts, stops)
    arg_gap = _first_where(missing, starts, stops)
    has_gap = arg_gap >= 0
    # the observed neighbours of that gap: the step before it, the first observed after it
    positions = np.where(missing, n_steps, np.arange(n_steps))
    next_observed = np.minimum.accumulate(positions[::-1])[::-1]
    before = np.where(has_gap, arg_gap - 1, -1)
    after = np.where(has_gap, next_observed[np.maximum(arg_gap, 0)], n_steps)
    after = np.where(after < n_steps, after, -1)
    chosen = np.concatenate([starts, stops - 1, arg_max, arg_min, arg_gap, before, after])
    chosen = chosen[chosen >= 0]
    return np.unique(chosen)


def _first_where(flags: np.ndarray, starts: np.ndarray, stops: np.ndarray) -> np.ndarray:
    """First index in each [start, stop) where ``flags`` holds, -1 where it never does."""
    positions = np.where(flags, np.arange(flags.shape[0]), flags.shape[0])
    first = np.minimum.reduceat(positions, starts)
    return np.where(first < stops, first, -1)


def lttb_indices(x: np.ndarray, values: np.ndarray, max_points: int = MAX_POINTS
                 ) -> np.ndarray:
    """Largest-Triangle-Three-Buckets over the observed points; gaps keep one NaN each.

    Parameters
    ----------
    x : (T,) float positions (e.g. seconds), increasing.
    values : (T,) float, NaN where not observed.
    max_points : upper bound on the number of indices returned (>= 7); when the series has
        gaps, half the budget goes to gap markers (at most one per bucket).

    Returns
    -------
    (K,) int64 sorted unique indices.
    """
    _check_max_points(max_points, 7)
    x = np.asarray(x, dtype=np.float64)
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] <= max_points:
        return np.arange(values.shape[0], dtype=np.int64)
    observed = np.flatnonzero(~np.isnan(values))
    n_gap_buckets = 0 if observed.size == values.shape[0] else max_points // 2
    n_kept = max_points - n_gap_buckets
    kept = observed if observed.size <= n_kept else observed[
        _lttb(x[observed], values[observed], n_kept)]
    if not n_gap_buckets:
        return kept.astype(np.int64)
    edges = np.linspace(0, values.shape[0], n_gap_buckets + 1).astype(np.int64)
    gaps = _first_where(np.isnan(values), edges[:-1], edges[1:])
    return np.unique(np.concatenate([kept, gaps[gaps >= 0]]))


def _lttb(x: np.ndarray, y: np.ndarray, n_out: int) -> np.ndarray:
    n_in = x.shape[0]
    edges = np.linspace(1, n_in - 1, n_out - 1).astype(np.int64)
    chosen = np.empty(n_out, dtype=np.int64)
    chosen[0], chosen[-1] = 0, n_in - 1
    previous = 0
    for bucket in range(n_out - 2):
        lo, hi = edges[bucket], max(edges[bucket + 1], edges[bucket] + 1)
        next_lo = hi
        next_hi = edges[bucket + 2] if bucket + 2 < n_out - 1 else n_in
        next_hi = max(next_hi, next_lo + 1)
        mean_x, mean_y = x[next_lo:next_hi].mean(), y[next_lo:next_hi].mean()
        area = np.abs((x[previous] - mean_x) * (y[lo:hi] - y[previous])
                      - (x[previous] - x[lo:hi]) * (mean_y - y[previous]))
        previous = lo + int(np.argmax(area))
        chosen[bucket + 1] = previous
    return chosen


def downsample_indices(x: np.ndarray, values: np.ndarray, max_points: int = MAX_POINTS,
                       method: str = "minmax") -> np.ndarray:
    """Dispatch to :func:`minmax_indices` or :func:`lttb_indices` by ``method``."""
    if method == "minmax":
        return minmax_indices(values, max_points)
    if method == "lttb":
        return lttb_indices(x, values, max_points)
    raise RecurraError(f"method ({method!r}) must be one of {list(METHODS)}")
