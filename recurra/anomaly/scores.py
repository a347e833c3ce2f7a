"""Pure score functions: errors to per-point scores, smoothing, normalisation, contributions.

Every function takes and returns numpy arrays; detectors compose them.  Shapes follow
PyTorch's convention: ``T`` time steps, ``F`` channels, ``W`` window length.
"""

from __future__ import annotations

import warnings

import numpy as np

from recurra.data.schema import RecurraError

MAD_TO_SIGMA = 1.4826


def masked_squared_error(values: np.ndarray, reconstruction: np.ndarray,
                         observed: np.ndarray) -> np.ndarray:
    """Squared error on observed cells, 0 elsewhere (a gap never scores by itself).

    Parameters
    ----------
    values, reconstruction : (..., F) float arrays (NaN allowed where not observed).
    observed : (..., F) bool mask.

    Examples
    --------
    >>> masked_squared_error(np.array([[1., np.nan]]), np.array([[3., 5.]]),
    ...                      np.array([[True, False]]))
    array([[4., 0.]])
    """
    diff = np.where(observed, np.nan_to_num(values) - reconstruction, 0.0)
    return diff * diff


def overlap_mean(window_errors: np.ndarray, n_steps: int) -> np.ndarray:
    """Mean error of each point over every sliding window (stride 1) that covers it.

    Parameters
    ----------
    window_errors : (N, W, F) errors of the N = T - W + 1 windows, window ``i`` covering
        points ``[i, i + W)``.
    n_steps : T.

    Returns
    -------
    (T, F) mean over the covering windows.

    Examples
    --------
    >>> overlap_mean(np.array([[[1.], [3.]], [[5.], [7.]]]), 3)[:, 0]
    array([1., 4., 7.])
    """
    n_windows, window, n_channels = window_errors.shape
    if n_windows != n_steps - window + 1:
        raise RecurraError(f"window_errors has {n_windows} windows of {window}; "
                           f"n_steps ({n_steps}) must equal n_windows + window - 1")
    total = np.zeros((n_steps, n_channels))
    count = np.zeros((n_steps, 1))
    for offset in range(window):
        total[offset:offset + n_windows] += window_errors[:, offset]
        count[offset:offset + n_windows] += 1
    return total / count


def ewma(values: np.ndarray, alpha: float, initial: np.ndarray | float | None = None
         ) -> np.ndarray:
    """Exponentially weighted moving average along axis 0 (causal, carried state, NaN skipped).

    ``s_0 = x_0`` (or ``(1 - alpha) * initial + alpha * x_0`` when ``initial`` is given),
    ``s_t = (1 - alpha) * s_{t-1} + alpha * x_t``; a NaN ``x_t`` gives a NaN output and leaves
    the state unchanged.  Chaining calls with ``initial`` set to :func:`ewma_state` of the
    previous output gives the same result as one call over the whole array.

    Examples
    --------
    >>> ewma(np.array([0., 4., np.nan, 4.]), 0.5)
    array([ 0.,  2., nan,  3.])
    >>> ewma(np.array([4.]), 0.5, initial=0.0)
    array([2.])
    """
    if not 0.0 < alpha <= 1.0:
        raise RecurraError(f"alpha ({alpha}) must be in (0, 1]")
    values = np.asarray(values, dtype=np.float64)
    out = np.full_like(values, np.nan)
    state = None if initial is None else np.asarray(initial, dtype=np.float64)
    if state is not None and not np.all(np.isfinite(state)):
        state = None
    for t in range(values.shape[0]):
        value = values[t]
        if not np.all(np.isfinite(value)):
            continue
        state = value if state is None else (1 - alpha) * state + alpha * value
        out[t] = state
    return out


def ewma_state(smoothed: np.ndarray, previous: np.ndarray | float | None = None
               ) -> np.ndarray | float | None:
    """The EWMA state after ``smoothed`` (its last finite row), else ``previous``.

    >>> ewma_state(np.array([1., 2., np.nan]))
    2.0
    """
    finite = np.nonzero(np.all(np.isfinite(np.asarray(smoothed).reshape(len(smoothed), -1)),
                               axis=1))[0] if len(smoothed) else np.zeros(0, int)
    if finite.size == 0:
        return previous
    last = smoothed[finite[-1]]
    return float(last) if np.ndim(last) == 0 else last


def robust_scale(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Median and MAD-based sigma per column of a (T, ...) array, ignoring NaN.

    The sigma is floored at 1e-6 times the largest absolute median (and at 1e-12) so that a
    constant training signal does not give an infinite score.

    Examples
    --------
    >>> robust_scale(np.array([1., 2., 3., 4., 100.]))
    (array(3.), array(1.4826))
    """
    values = np.asarray(values, dtype=np.float64)
    center = np.nanmedian(values, axis=0)
    mad = np.nanmedian(np.abs(values - center), axis=0) * MAD_TO_SIGMA
    floor = max(1e-12, 1e-6 * float(np.nanmax(np.abs(center))) if np.size(center) else 1e-12)
    spread = np.where(np.isfinite(mad) & (mad > floor), mad, floor)
    return np.asarray(np.nan_to_num(center)), np.asarray(spread)


def normalise(values: np.ndarray, center: np.ndarray | float, spread: np.ndarray | float
              ) -> np.ndarray:
    """``(values - center) / spread``: scores in robust-sigma units of the training errors."""
    return (np.asarray(values, dtype=np.float64) - center) / spread


def contributions(channel_errors: np.ndarray) -> np.ndarray:
    """Share of each channel in the total error of each point (rows sum to 1, or 0 if no error).

    Examples
    --------
    >>> contributions(np.array([[1., 3.], [0., 0.]]))
    array([[0.25, 0.75],
           [0.  , 0.  ]])
    """
    errors = np.clip(np.asarray(channel_errors, dtype=np.float64), 0.0, None)
    total = errors.sum(axis=-1, keepdims=True)
    return np.divide(errors, total, out=np.zeros_like(errors), where=total > 0)


def sliding_windows(values: np.ndarray, window: int) -> np.ndarray:
    """All windows of length ``window`` (stride 1) of a (T, F) array, as a (T-W+1, W, F) view.

    Examples
    --------
    >>> sliding_windows(np.arange(4.)[:, None], 3)[:, :, 0]
    array([[0., 1., 2.],
           [1., 2., 3.]])
    """
    if window < 1:
        raise RecurraError(f"window ({window}) must be >= 1")
    if values.shape[0] < window:
        return np.zeros((0, window, *values.shape[1:]), dtype=values.dtype)
    view = np.lib.stride_tricks.sliding_window_view(values, window, axis=0)
    return np.moveaxis(view, -1, 1)


def rolling_zscore(values: np.ndarray, observed: np.ndarray, window: int) -> np.ndarray:
    """Causal z-score of each point against the ``window`` observed points before it.

    Parameters
    ----------
    values : (T, F), NaN where not observed.
    observed : (T, F) mask.
    window : number of past rows used for the mean and standard deviation.

    Returns
    -------
    (T, F) absolute z-scores; 0 where the point is unobserved or fewer than 2 past points
    are observed.

    Examples
    --------
    >>> v = np.array([[1.], [3.], [1.], [3.], [10.]])
    >>> float(rolling_zscore(v, np.ones_like(v, bool), 4)[-1, 0])
    8.0
    """
    n_steps, n_channels = values.shape
    padded = np.vstack([np.full((window, n_channels), np.nan), values])
    past = sliding_windows(padded, window)[:n_steps]            # (T, W, F): rows t-W..t-1
    count = np.sum(np.isfinite(past), axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nanmean(past, axis=1) if n_steps else np.zeros((0, n_channels))
        std = np.nanstd(past, axis=1) if n_steps else np.zeros((0, n_channels))
    mean, std = np.nan_to_num(mean), np.nan_to_num(std)
    floor = 1e-6 * np.maximum(np.abs(mean), 1.0)
    z = np.abs(np.nan_to_num(values) - mean) / np.maximum(std, floor)
    return np.where(observed & (count >= 2), z, 0.0)


def spatial_flags(values: np.ndarray, low: np.ndarray, high: np.ndarray, tolerance: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NAB's "spatial anomaly": a value outside the range seen so far, widened by ``tolerance``
    times that range, is anomalous whatever the model says (a reconstruction smooths it away).

    A row is flagged when any channel's ``x > high + tolerance (high - low)`` or
    ``x < low - tolerance (high - low)``, where ``low`` / ``high`` are the channel's extremes
    *before* the row (causal; a channel with no value yet flags nothing).

    Parameters
    ----------
    values : (T, F) in time order (NaN where not observed).
    low, high : (F,) the extremes before the first row (+inf / -inf: nothing seen yet).
    tolerance : >= 0, the widening as a share of the range.

    Returns
    -------
    flags (T,) bool, and the (F,) ``low`` and ``high`` after the last row.

    Examples
    --------
    >>> flags, low, high = spatial_flags(np.array([[5.], [11.], [11.5], [-1.]]),
    ...                                  np.array([0.]), np.array([10.]), 0.05)
    >>> flags.tolist(), low.tolist(), high.tolist()
    ([False, True, False, True], [-1.0], [11.5])
    """
    values = np.asarray(values, dtype=np.float64)
    with np.errstate(invalid="ignore"):  # inf - inf before a channel's first value
        upper = np.fmax.accumulate(np.vstack([high[None, :], values]), axis=0)
        lower = np.fmin.accumulate(np.vstack([low[None, :], values]), axis=0)
        before_high, before_low = upper[:-1], lower[:-1]
        margin = tolerance * (before_high - before_low)
        known = np.isfinite(before_high) & np.isfinite(before_low)
        outside = (values > before_high + margin) | (values < before_low - margin)
    return (known & outside).any(axis=1), lower[-1].copy(), upper[-1].copy()
