"""The shared scoring pipeline of one series, as functions of an error model and states.

    rows -> prepare_chunk (normalise, deltas, forward fill, carried tail)
         -> error_model.errors (n, F) on observed cells -> point error (mean over observed
         channels) -> EWMA (``smoothing``) -> robust normalisation (training median / MAD)
         -> threshold (SPOT online, DSPOT, quantile, k-sigma, telemanom, likelihood)
         -> spatial rule -> score, is_anomaly

Every stage is causal and carries its state in :class:`~recurra.anomaly.stream.StreamState`,
so :func:`score_series` chunk by chunk equals one pass.  :class:`recurra.anomaly.base.BaseDetector`
runs these per series; :class:`recurra.anomaly.fleet.DetectorFleet` runs the same stages
stacked over many series.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from recurra.anomaly import likelihood as lk
from recurra.anomaly import scores as sc
from recurra.anomaly import thresholds as th
from recurra.anomaly.calibration import Calibration, calibrate
from recurra.anomaly.config import DetectorConfig, ThresholdConfig
from recurra.anomaly.protocol import ErrorModel
from recurra.anomaly.stream import (
    Chunk,
    Scored,
    StreamState,
    check_after_tail,
    prepare_chunk,
)
from recurra.data.arrays import SeriesArrays


def point_error(errors: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """(n,) mean error over the observed channels of each row; NaN for an unobserved row.

    >>> point_error(np.array([[1.0, 3.0], [2.0, 0.0]]), np.array([[1, 1], [1, 0]], bool))
    array([2., 2.])
    """
    mask = observed[-errors.shape[0]:] if errors.shape[0] else observed[:0]
    count = mask.sum(axis=1)
    total = np.where(mask, errors, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def model_errors(model: ErrorModel, chunk: Chunk, n_new: int, model_state: Any,
                 n_channels: int) -> tuple[np.ndarray, Any]:
    """(n_new, F) errors of the last ``n_new`` rows (0 at unobserved cells) and the model
    state to carry."""
    if n_new == 0:
        return np.zeros((0, n_channels)), model_state
    errors, model_state = model.errors(chunk, n_new, model_state)
    return np.where(chunk.observed[-n_new:], errors, 0.0), model_state


def prepare(arrays: SeriesArrays, state: StreamState, cal: Calibration, tail_length: int
            ) -> tuple[Chunk, StreamState]:
    """:func:`~recurra.anomaly.stream.prepare_chunk` with the series' calibrated scales."""
    return prepare_chunk(arrays, state, cal.mean, cal.std, cal.time_scale, tail_length)


def calibrate_series(model: ErrorModel, config: DetectorConfig, cal: Calibration,
                     arrays: SeriesArrays) -> StreamState:
    """Score the training rows of one series with the fitted ``model``, fill ``cal``
    (:func:`~recurra.anomaly.calibration.calibrate`) and return the series' stream state
    after its training rows (so ``update`` continues the training series)."""
    chunk, state = prepare(arrays, StreamState(), cal, model.tail_length)
    errors, state.model_state = model_errors(model, chunk, len(chunk.elapsed), None,
                                             chunk.values.shape[1])
    smoothed = sc.ewma(point_error(errors, chunk.observed), config.smoothing)
    state.smooth = sc.ewma_state(smoothed)
    calibrate(cal, smoothed, chunk.values, config.threshold)
    state.spot, state.recent, state.likelihood = cal.spot, cal.recent, cal.likelihood
    state.low, state.high = cal.low, cal.high
    return state


def score_series(model: ErrorModel, config: DetectorConfig, cal: Calibration,
                 arrays: SeriesArrays, state: StreamState) -> tuple[Scored, StreamState]:
    """Score the rows of ``arrays`` after those ``state`` has seen; returns the result and
    the advanced state (``state`` itself is left as it was)."""
    state = copy.copy(state)
    check_after_tail(arrays, state)
    chunk, state = prepare(arrays, state, cal, model.tail_length)
    errors, state.model_state = model_errors(model, chunk, arrays.n_steps, state.model_state,
                                             chunk.values.shape[1])
    smoothed = sc.ewma(point_error(errors, chunk.observed), config.smoothing, state.smooth)
    state.smooth = sc.ewma_state(smoothed, state.smooth)
    score = sc.normalise(smoothed, cal.center, cal.spread)
    threshold = config.threshold
    score, flags, used = threshold_step(threshold, cal, state, score)
    if threshold.spatial_tolerance is not None:
        spatial, state.low, state.high = sc.spatial_flags(
            chunk.values[len(chunk.elapsed) - arrays.n_steps:], state.low, state.high,
            threshold.spatial_tolerance)
        flags = flags | spatial
        if threshold.kind == "likelihood":
            score = np.where(spatial, 1.0, score)
    return Scored(chunk, errors, score, flags, used), state


def threshold_step(threshold: ThresholdConfig, cal: Calibration, state: StreamState,
                   score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(score, flags, thresholds)`` of normalised scores (n,); the likelihood threshold
    replaces the score by its log-likelihood.  Advances the threshold state of ``state``."""
    method = threshold.kind
    if method == "spot":
        flags, used, state.spot = th.spot_step(state.spot, score)
    elif method == "dspot":
        recent = state.recent if state.recent is not None else cal.recent
        flags, used, state.spot, state.recent = th.drift_step(state.spot, recent, score)
    elif method == "likelihood":
        score, state.likelihood = lk.likelihood_step(state.likelihood, score)
        used = np.full(score.shape, cal.threshold)
        flags = np.nan_to_num(score, nan=-np.inf) >= cal.threshold
    else:
        used = np.full(score.shape, cal.threshold)
        flags = np.nan_to_num(score, nan=-np.inf) > cal.threshold
    return score, flags, used
