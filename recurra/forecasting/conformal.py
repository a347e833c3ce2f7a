"""Split-conformal forecast intervals: per horizon step and channel, from validation windows.

A fitted forecaster's quantile forecasts (for a point head: the point forecast at every
level) are shifted by offsets learned on held-out windows (Romano et al. 2019, conformalised
quantile regression, the asymmetric variant with one offset per level):

    residual_q = y - forecast_q                    (validation windows, per step and channel)
    offset_q   = Quantile(residual_q, level q')    q' = floor((n + 1) q) / n for q < 0.5,
                                                   ceil((n + 1) q) / n for q > 0.5
    interval_q = forecast_q + offset_q             (new forecasts)

With exchangeable residuals the interval between levels ``q_lo`` and ``q_hi`` then covers
at least ``q_hi - q_lo`` of new targets (Lei et al. 2018). For a point head the lower
and upper offsets are the empirical quantiles of the validation residuals.

>>> offsets = conformal_offsets(bands, y, observed, (0.1, 0.5, 0.9))   # (N, O, Q)
>>> shifted = apply_offsets(new_bands, offsets)                         # (S, N, O, Q)
"""

from __future__ import annotations

import math
import warnings

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


def conformal_offsets(bands: np.ndarray, targets: np.ndarray, observed: np.ndarray,
                      levels: tuple[float, ...]) -> np.ndarray:
    """Offsets (N, O, Q) from calibration forecasts.

    Parameters
    ----------
    bands : (W, N, O, Q) forecast quantiles at ``levels`` of W calibration windows.
    targets : (W, N, O) the true values. observed : (W, N, O) bool, False = no target.
    levels : the Q nominal levels in (0, 1).

    A (step, channel) without any observed target gets offset 0. Lower levels use the
    ``"lower"`` empirical quantile and upper levels the ``"higher"`` one (conservative).
    """
    if bands.ndim != 4 or bands.shape[:3] != targets.shape or targets.shape != observed.shape:
        raise RecurraError(f"bands {bands.shape} must be (W, N, O, Q) over targets "
                           f"{targets.shape} and observed {observed.shape} (W, N, O)")
    if bands.shape[-1] != len(levels):
        raise RecurraError(f"bands have {bands.shape[-1]} levels but levels has "
                           f"{len(levels)} ({levels})")
    if bands.shape[0] < 1:
        raise RecurraError("conformal calibration needs at least one validation window "
                           "with lookback + horizon steps")
    residual = np.where(observed[..., None], targets[..., None] - bands, np.nan)
    n_samples = int(observed.sum(axis=0).min()) or bands.shape[0]
    offsets = np.zeros(bands.shape[1:], np.float64)
    for j, level in enumerate(levels):
        method = "lower" if level < 0.5 else "higher" if level > 0.5 else "linear"
        with warnings.catch_warnings():  # an all-NaN (step, channel) gets offset 0
            warnings.simplefilter("ignore", RuntimeWarning)
            value = np.nanquantile(residual[..., j], adjusted_level(level, n_samples),
                                   axis=0, method=method)
        offsets[..., j] = np.nan_to_num(value, nan=0.0)
    return offsets


def apply_offsets(bands: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """``bands`` (..., N, O, Q) shifted by ``offsets`` (N', O, Q), N <= N' (the first N
    steps are used); quantiles stay ordered (sorted along Q)."""
    steps = bands.shape[-3]
    if offsets.ndim != 3 or offsets.shape[0] < steps or offsets.shape[1:] != bands.shape[-2:]:
        raise RecurraError(f"offsets {offsets.shape} do not match bands {bands.shape}: "
                           "expected (N >= bands' steps, O, Q)")
    return np.sort(bands + offsets[:steps], axis=-1)


def empirical_coverage(lower: np.ndarray, upper: np.ndarray, targets: np.ndarray) -> float:
    """Share of finite ``targets`` inside [lower, upper] (any equal shapes)."""
    seen = np.isfinite(targets)
    inside = (targets >= lower) & (targets <= upper)
    return float(inside[seen].mean()) if seen.any() else float("nan")

