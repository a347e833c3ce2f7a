"""Baseline detectors: rolling z-score and isolation forest on windows.

They are :class:`recurra.anomaly.base.BaseDetector` with a model-free error model
(:class:`RollingZScoreErrors`) or a scikit-learn one (:class:`ForestErrors`), so they share
the causal scoring, thresholds, events and streaming of the neural detectors and their
figures compare like for like.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from recurra.anomaly import scores as sc
from recurra.anomaly.base import BaseDetector
from recurra.anomaly.config import ForestConfig, ZScoreConfig
from recurra.anomaly.stream import Chunk, pad_left

__all__ = ["FlatForest", "ForestConfig", "ForestErrors", "IsolationForestDetector",
           "RollingZScoreDetector", "RollingZScoreErrors", "ZScoreConfig"]
FLAT_CHUNK = 4096  # rows per vectorised descent (memory: trees x rows indexes)


class RollingZScoreErrors:
    """Squared z-score of each value against the ``window`` observed rows before it (an
    :class:`~recurra.anomaly.protocol.ErrorModel` with nothing to learn)."""

    streaming = True
    float32_inputs = False

    def __init__(self, config: ZScoreConfig) -> None:
        self.config = config

    @property
    def tail_length(self) -> int:
        return self.config.window

    def fit(self, chunks: list[Chunk], series_ids: list[str]) -> None:
        del chunks, series_ids

    def errors(self, chunk: Chunk, n_new: int, model_state: Any) -> tuple[np.ndarray, Any]:
        z = sc.rolling_zscore(chunk.values, chunk.observed, self.config.window)
        return z[-n_new:] ** 2, model_state

    def get_state(self) -> dict[str, Any]:
        return {}

    def set_state(self, state: dict[str, Any], n_channels: int) -> None:
        del state, n_channels


class ForestErrors:
    """Anomaly scores of a scikit-learn ``IsolationForest`` over the window ending at each
    row (filled values), shared out over the channels by how far each one's last value lies
    from its window mean (an :class:`~recurra.anomaly.protocol.ErrorModel`).

    ``forest_`` is the fitted forest (None after loading a saved detector); scoring descends
    its trees as a :class:`FlatForest`, which is also what is saved.
    """

    streaming = True
    float32_inputs = False

    def __init__(self, config: ForestConfig) -> None:
        self.config = config
        self.forest_: Any = None  # sklearn.ensemble.IsolationForest once fitted
        self._flat: FlatForest | None = None

    @property
    def tail_length(self) -> int:
        return self.config.window - 1

    @property
    def flat(self) -> FlatForest:
        """The fitted forest as stacked node arrays (built once)."""
        if self._flat is None:
            self._flat = FlatForest(self.forest_)
        return self._flat

    def _features(self, chunk: Chunk) -> np.ndarray:
        windows = sc.sliding_windows(chunk.filled, self.config.window)
        return windows.reshape(windows.shape[0], -1)

    def fit(self, chunks: list[Chunk], series_ids: list[str]) -> None:
        del series_ids
        features = np.concatenate([self._features(c) for c in chunks])
        from sklearn.ensemble import IsolationForest  # imported on use: ~1.5 s

        self.forest_ = IsolationForest(n_estimators=self.config.n_estimators,
                                       random_state=self.config.seed, n_jobs=1)
        self.forest_.fit(features)
        self._flat = None

    def errors(self, chunk: Chunk, n_new: int, model_state: Any) -> tuple[np.ndarray, Any]:
        window = self.config.window
        padded = pad_left(chunk, window - 1 - (len(chunk.elapsed) - n_new))
        windows = sc.sliding_windows(padded.filled, window)[-n_new:]
        anomaly = self.flat.score(windows.reshape(n_new, -1))
        return share_out(anomaly, windows), model_state

    def get_state(self) -> dict[str, Any]:
        # the flat node arrays, not the scikit-learn object: saved models hold no foreign
        # classes (persistence format 3)
        return {"forest": self.flat}

    def set_state(self, state: dict[str, Any], n_channels: int) -> None:
        del n_channels
        forest = state["forest"]
        if isinstance(forest, FlatForest):  # a loaded detector scores; it has no forest_
            self.forest_, self._flat = None, forest
        else:  # formats 1 and 2 saved the scikit-learn forest
            self.forest_, self._flat = forest, None


def share_out(anomaly: np.ndarray, windows: np.ndarray) -> np.ndarray:
    """(..., F) channel errors of (...,) window anomaly scores of (..., W, F) windows: each
    channel's share is its last value's squared distance from its window mean (equal shares
    when all are 0), times F, so the mean over channels is the anomaly score."""
    deviation = (windows[..., -1, :] - windows.mean(axis=-2)) ** 2
    n_channels = deviation.shape[-1]
    shares = np.where(deviation.sum(axis=-1, keepdims=True) > 0,
                      sc.contributions(deviation), 1.0 / n_channels)
    return anomaly[..., None] * shares * n_channels


class RollingZScoreDetector(BaseDetector):
    """Squared z-score of each value against the ``window`` observed rows before it.

    No model: ``fit`` only calibrates the per-series normalisation and threshold.  Good as a
    first line for spikes and level shifts on noisy series; blind to shape anomalies.
    """

    config_class = ZScoreConfig
    error_model_factory = staticmethod(RollingZScoreErrors)


class IsolationForestDetector(BaseDetector):
    """scikit-learn ``IsolationForest`` over the window ending at each row (filled values,
    z-scored per channel).  The row's error is the forest's anomaly score, shared out over
    the channels by how far each one's last value lies from its window mean.  Good for odd
    window shapes without training a network; multivariate by construction.
    """

    config_class = ForestConfig
    error_model_factory = staticmethod(ForestErrors)

    @property
    def model_(self) -> Any:
        """The fitted scikit-learn forest."""
        return self.error_model.forest_


class FlatForest:
    """A fitted ``IsolationForest`` as stacked node arrays: ``score`` descends every tree at
    once with array indexing, so a single streamed row costs a few numpy calls instead of one
    ``tree.apply`` per tree (scikit-learn's ``score_samples`` spends ~10-20 ms per call on
    100 trees, whatever the number of rows).  Same values as ``-forest.score_samples`` (a
    row's path lengths are summed tree by tree in the forest's order, as scikit-learn does).
    """

    def __init__(self, forest: Any) -> None:
        trees = [estimator.tree_ for estimator in forest.estimators_]
        n_trees, width = len(trees), max(t.node_count for t in trees)
        self.left = np.full((n_trees, width), -1, dtype=np.intp)
        self.right = np.full((n_trees, width), -1, dtype=np.intp)
        self.feature = np.zeros((n_trees, width), dtype=np.intp)
        self.threshold = np.zeros((n_trees, width))
        self.leaf_depth = np.zeros((n_trees, width))
        subsample = forest._max_features != forest.n_features_in_
        for i, (tree, features) in enumerate(zip(trees, forest.estimators_features_,
                                                 strict=True)):
            k = tree.node_count
            self.left[i, :k], self.right[i, :k] = tree.children_left, tree.children_right
            feature = np.maximum(tree.feature, 0)  # leaves (-2) are never read
            self.feature[i, :k] = np.asarray(features)[feature] if subsample else feature
            self.threshold[i, :k] = tree.threshold
            self.leaf_depth[i, :k] = (forest._decision_path_lengths[i]
                                      + forest._average_path_length_per_tree[i] - 1.0)
        self.max_depth = max(t.max_depth for t in trees)
        samples = forest._max_samples  # c(n) of Liu et al.: the mean unsuccessful search
        self.denominator = n_trees * (1.0 if samples == 2 else 0.0 if samples <= 1 else
                                      2.0 * (np.log(samples - 1.0) + np.euler_gamma)
                                      - 2.0 * (samples - 1.0) / samples)

    def score(self, features: np.ndarray) -> np.ndarray:
        """(n,) anomaly scores in (0, 1] of (n, D) feature rows (``-score_samples``)."""
        rows = np.asarray(features, dtype=np.float32).astype(np.float64)  # trees compare f32
        return np.concatenate([self._score(rows[i:i + FLAT_CHUNK])
                               for i in range(0, rows.shape[0], FLAT_CHUNK)] or [np.zeros(0)])

    def _score(self, rows: np.ndarray) -> np.ndarray:
        trees = np.arange(self.left.shape[0])[:, None]
        columns = np.arange(rows.shape[0])[None, :]
        node = np.zeros((trees.shape[0], rows.shape[0]), dtype=np.intp)
        for _ in range(self.max_depth):
            left = self.left[trees, node]
            goes_left = rows[columns, self.feature[trees, node]] <= self.threshold[trees, node]
            node = np.where(left < 0, node, np.where(goes_left, left, self.right[trees, node]))
        lengths = self.leaf_depth[trees, node]
        depths = np.zeros(rows.shape[0])
        for tree_lengths in lengths:  # tree by tree, as scikit-learn adds them
            depths += tree_lengths
        if self.denominator == 0:
            return np.ones(rows.shape[0])
        return 2.0 ** (-depths / self.denominator)
