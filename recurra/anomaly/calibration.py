"""What ``fit`` learns about each series besides the error model: value scales, the scale of
the training errors and the threshold (pure functions over numpy arrays).

* :func:`value_scales` - per-channel mean / std of the training values.
* :func:`calibrate` - the median / MAD of the smoothed training errors and the threshold
  of a :class:`~recurra.anomaly.config.ThresholdConfig` fitted on the normalised training
  scores, plus the training range of the spatial rule.
* :func:`with_calibration` - a stream state with the threshold models it lacks taken from
  the calibration (a fresh state, or one saved before a field existed).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recurra.anomaly import likelihood as lk
from recurra.anomaly import scores as sc
from recurra.anomaly import thresholds as th
from recurra.anomaly.config import ThresholdConfig
from recurra.anomaly.stream import StreamState
from recurra.data.arrays import SeriesArrays


@dataclass
class Calibration:
    """What ``fit`` learned about one series (all in plain numpy / floats)."""

    mean: np.ndarray          # (F,) value centre
    std: np.ndarray           # (F,) value scale
    time_scale: float         # seconds per step
    center: float = 0.0       # median of the smoothed training errors
    spread: float = 1.0       # MAD-sigma of the smoothed training errors
    threshold: float = np.inf  # fixed threshold on normalised scores (non-SPOT methods)
    spot: th.SpotState | None = None
    recent: np.ndarray | None = None  # DSPOT's last ``depth`` training scores
    likelihood: lk.LikelihoodState | None = None  # the likelihood after the training scores
    low: np.ndarray | None = None   # (F,) normalised training minimum (spatial rule)
    high: np.ndarray | None = None  # (F,) normalised training maximum


def value_scales(arrays: SeriesArrays) -> Calibration:
    """The per-channel mean and std (1 for a constant channel) of one training series."""
    with np.errstate(all="ignore"):
        mean = np.nan_to_num(np.nanmean(arrays.values, axis=0))
        std = np.nan_to_num(np.nanstd(arrays.values, axis=0))
    std = np.where(std > 1e-9 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    return Calibration(mean=mean, std=std, time_scale=float(arrays.time_scale))


def calibrate(cal: Calibration, smoothed: np.ndarray, values: np.ndarray,
              threshold: ThresholdConfig) -> Calibration:
    """Fill ``cal`` (in place; returned) from one series' training pass.

    smoothed : (T,) EWMA-smoothed point errors of the training rows (NaN = unobserved).
    values : (T, F) normalised training values (NaN = unobserved), for the spatial rule.
    """
    center, spread = sc.robust_scale(smoothed[np.isfinite(smoothed)])
    cal.center, cal.spread = float(center), float(spread)
    normalised = sc.normalise(smoothed, cal.center, cal.spread)
    method = threshold.kind
    if method == "spot":
        cal.spot = th.spot_init(normalised, threshold.risk, threshold.level)
        cal.threshold = cal.spot.threshold
    elif method == "dspot":
        cal.spot, cal.recent = th.drift_init(normalised, threshold.depth, threshold.risk,
                                             threshold.level)
        cal.threshold = cal.spot.threshold
    elif method == "quantile":
        cal.threshold = th.quantile_threshold(normalised, threshold.level)
    elif method == "ksigma":
        cal.threshold = th.ksigma_threshold(normalised, threshold.k_sigma)
    elif method == "likelihood":
        cal.likelihood = lk.likelihood_init(normalised, threshold.likelihood_history,
                                            threshold.likelihood_window,
                                            threshold.likelihood_period,
                                            threshold.likelihood_relearn,
                                            threshold.likelihood_level)
        cal.threshold = threshold.likelihood_level
    else:
        cal.threshold = th.nonparametric_threshold(normalised)
    with np.errstate(all="ignore"):
        cal.low, cal.high = np.fmin.reduce(values), np.fmax.reduce(values)
    return cal


def with_calibration(state: StreamState, cal: Calibration) -> StreamState:
    """A series' state with the threshold models it lacks taken from its calibration."""
    if state.spot is None:
        state.spot = cal.spot
    if getattr(state, "likelihood", None) is None:
        state.likelihood = getattr(cal, "likelihood", None)
    if getattr(state, "high", None) is None:
        n_channels = cal.mean.shape[0]
        state.low = getattr(cal, "low", None)
        state.high = getattr(cal, "high", None)
        if state.high is None:  # a detector saved before the spatial rule existed
            state.low, state.high = np.full(n_channels, np.inf), np.full(n_channels, -np.inf)
    return state
