"""Baseline detectors: rolling z-score and isolation forest on windows.

They share the causal scoring, thresholds, events and streaming of
:class:`anomaly.base.BaseDetector`, so their figures compare like for like with the neural
detectors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest

from anomaly import scores as sc
from anomaly.base import BaseDetector, Chunk, DetectorConfig, pad_left

__all__ = ["DetectorConfig", "IsolationForestDetector", "RollingZScoreDetector"]


class RollingZScoreDetector(BaseDetector):
    """Squared z-score of each value against the ``window`` observed rows before it.

    No model: ``fit`` only calibrates the per-series normalisation and threshold.  Good as a
    first line for spikes and level shifts on noisy series; blind to shape anomalies.
    """

    @property
    def tail_length(self) -> int:
        return self.config.window

    def _fit_model(self, chunks: list[Chunk]) -> None:
        del chunks

    def _errors(self, chunk: Chunk, n_new: int, model_state: Any) -> tuple[np.ndarray, Any]:
        z = sc.rolling_zscore(chunk.values, chunk.observed, self.config.window)
        return z[-n_new:] ** 2, model_state


class IsolationForestDetector(BaseDetector):
    """scikit-learn ``IsolationForest`` over the window ending at each row (filled values,
    z-scored per channel).  The row's error is the forest's anomaly score, shared out over
    the channels by how far each one's last value lies from its window mean.  Good for odd
    window shapes without training a network; multivariate by construction.
    """

    model_: IsolationForest | None = None

    @property
    def tail_length(self) -> int:
        return self.config.window - 1

    def _features(self, chunk: Chunk) -> np.ndarray:
        windows = sc.sliding_windows(chunk.filled, self.config.window)
        return windows.reshape(windows.shape[0], -1)

    def _fit_model(self, chunks: list[Chunk]) -> None:
        features = np.concatenate([self._features(c) for c in chunks])
        self.model_ = IsolationForest(n_estimators=self.config.n_estimators,
                                      random_state=self.config.seed, n_jobs=1)
        self.model_.fit(features)

    def _errors(self, chunk: Chunk, n_new: int, model_state: Any) -> tuple[np.ndarray, Any]:
        window = self.config.window
        padded = pad_left(chunk, window - 1 - (len(chunk.elapsed) - n_new))
        windows = sc.sliding_windows(padded.filled, window)[-n_new:]
        anomaly = -self.model_.score_samples(windows.reshape(n_new, -1))
        deviation = (windows[:, -1] - windows.mean(axis=1)) ** 2
        n_channels = deviation.shape[1]
        shares = np.where(deviation.sum(axis=1, keepdims=True) > 0,
                          sc.contributions(deviation), 1.0 / n_channels)
        return anomaly[:, None] * shares * n_channels, model_state

    def _model_state(self) -> dict[str, Any]:
        return {"forest": self.model_}

    def _set_model_state(self, state: dict[str, Any]) -> None:
        self.model_ = state["forest"]
