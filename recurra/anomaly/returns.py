"""Anomalies of returns: jumps and volatility bursts of price-like series.

:class:`ReturnZScoreDetector` scores each row by the squared z-score of its one-step change
(the difference from the last observed value, on the per-series normalised scale) against
the ``window`` changes before it. Over a window of a few weeks a price barely moves, so this
is the z-score of the day's return against recent volatility: a jump scores high at once, a
volatility burst keeps scoring high until the window has absorbed it. Price levels
themselves never alarm (a trend is not an anomaly), unlike a z-score of the levels.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recurra.anomaly import scores as sc
from recurra.anomaly.base import BaseDetector
from recurra.anomaly.config import ZScoreConfig
from recurra.anomaly.stream import Chunk

__all__ = ["ReturnZScoreDetector", "ReturnZScoreErrors", "ZScoreConfig"]


class ReturnZScoreErrors:
    """Squared z-score of each row's change (from the last observed value) against the
    ``window`` changes before it (an :class:`~recurra.anomaly.protocol.ErrorModel` with
    nothing to learn)."""

    streaming = True
    float32_inputs = False

    def __init__(self, config: ZScoreConfig) -> None:
        self.config = config

    @property
    def tail_length(self) -> int:
        return self.config.window + 1

    def fit(self, chunks: list[Chunk], series_ids: list[str]) -> None:
        del chunks, series_ids

    def errors(self, chunk: Chunk, n_new: int, model_state: Any) -> tuple[np.ndarray, Any]:
        previous = np.vstack([np.full((1, chunk.filled.shape[1]), np.nan), chunk.filled[:-1]])
        seen_before = np.vstack([np.zeros((1, chunk.observed.shape[1]), bool),
                                 np.cumsum(chunk.observed, axis=0)[:-1] > 0])
        changed = chunk.observed & seen_before
        changes = np.where(changed, chunk.values - previous, np.nan)
        z = sc.rolling_zscore(changes, changed, self.config.window)
        return z[-n_new:] ** 2, model_state

    def get_state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any], n_channels: int) -> None:
        del state, n_channels


class ReturnZScoreDetector(BaseDetector):
    """Squared z-score of each row's change against the ``window`` changes before it."""

    config_class = ZScoreConfig
    error_model_factory = staticmethod(ReturnZScoreErrors)
