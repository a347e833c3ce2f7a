"""Split-conformal offsets of one pool of residuals (pure functions; the calibrator that
keeps one pool per series is :mod:`recurra.forecasting.intervals`).

A forecaster's quantile forecasts (for a point head: the point forecast at every level) are
shifted by offsets learned on held-out residuals (Romano et al. 2019, conformalised quantile
regression, the asymmetric variant with one offset per level):

    residual_q = y - forecast_q                    (calibration windows)
    offset_q   = Quantile(residual_q, level q')    q' = floor((n + 1) q) / n for q < 0.5,
                                                   ceil((n + 1) q) / n for q > 0.5
    interval_q = forecast_q + offset_q             (new forecasts)

With exchangeable residuals the interval between levels ``q_lo`` and ``q_hi`` then covers
at least ``q_hi - q_lo`` of new targets (Lei et al. 2018).

>>> offsets = pool_offsets(residuals, (0.1, 0.5, 0.9))     # (W, N, O, Q) -> (N, O, Q)
"""

from __future__ import annotations

import math

import numpy as np

from recurra.data.schema import RecurraError


def adjusted_level(level: float, n_samples: int) -> float:
    """The finite-sample level of the residual quantile for nominal ``level`` (see the
    module docstring): rounded away from the median, clipped to [0, 1]; 0.5 unchanged."""
    if n_samples < 1:
        raise RecurraError(f"n_samples ({n_samples}) must be >= 1 to calibrate intervals")
    if level > 0.5:
        return min(1.0, math.ceil((n_samples + 1) * level) / n_samples)
    if level < 0.5:
        return max(0.0, math.floor((n_samples + 1) * level) / n_samples)
    return 0.5


def pool_offsets(residuals: np.ndarray, levels: tuple[float, ...]) -> np.ndarray:
    """Conformal offsets (..., Q) of the residuals (W, ..., Q) of one pool (NaN = missing);
    a last axis of size 1 holds residuals shared by every level (a point forecast).

    Each cell (e.g. a horizon step and channel) uses its own count ``n`` of finite
    residuals in the adjusted level (:func:`adjusted_level`); lower levels take the
    ``"lower"`` empirical quantile and upper levels the ``"higher"`` one (conservative), the
    median the linear one, as ``np.nanquantile(..., method=...)``. A cell without any
    residual gets offset 0.
    """
    residuals = np.asarray(residuals, np.float64)
    if residuals.ndim < 2 or residuals.shape[-1] not in (1, len(levels)):
        raise RecurraError(f"residuals {residuals.shape} must be (W, ..., Q) with Q = "
                           f"{len(levels)} levels ({levels}) or 1 (shared by the levels)")
    ordered = np.sort(residuals, axis=0)  # NaN last
    counts = np.isfinite(residuals).sum(axis=0)  # (..., Q)
    offsets = np.zeros((*residuals.shape[1:-1], len(levels)), np.float64)
    for j, level in enumerate(levels):
        k = j if residuals.shape[-1] > 1 else 0
        n = counts[..., k]
        adjusted = np.vectorize(lambda k, q=level: adjusted_level(q, int(k)) if k else 0.5,
                                otypes=[float])(n) if n.size else n.astype(float)
        virtual = adjusted * np.maximum(n - 1, 0)
        low = np.floor(virtual).astype(np.int64)
        high = np.ceil(virtual).astype(np.int64)
        column = ordered[..., k]
        below = np.take_along_axis(column, low[None], axis=0)[0]
        above = np.take_along_axis(column, high[None], axis=0)[0]
        if level < 0.5:
            value = below
        elif level > 0.5:
            value = above
        else:
            value = below + (above - below) * (virtual - low)
        offsets[..., j] = np.where(n > 0, value, 0.0)
    return offsets


def empirical_coverage(lower: np.ndarray, upper: np.ndarray, targets: np.ndarray) -> float:
    """Share of finite ``targets`` inside [lower, upper] (any equal shapes)."""
    seen = np.isfinite(targets)
    inside = (targets >= lower) & (targets <= upper)
    return float(inside[seen].mean()) if seen.any() else float("nan")
