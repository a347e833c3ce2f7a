"""Baseline detectors: rolling z-score and isolation forest on windows.

They share the causal scoring, thresholds, events and streaming of
:class:`recurra.anomaly.base.BaseDetector`, so their figures compare like for like with the neural
detectors.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.ensemble import IsolationForest

from recurra.anomaly import scores as sc
from recurra.anomaly.base import BaseDetector, Chunk, DetectorConfig, pad_left

__all__ = ["DetectorConfig", "FlatForest", "IsolationForestDetector", "RollingZScoreDetector"]
FLAT_CHUNK = 4096  # rows per vectorised descent (memory: trees x rows indexes)


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
    window shapes without training a network; multivariate by construction.  It saves the
    forest as its :class:`FlatForest` node arrays (what scoring reads), so a loaded detector
    scores the same but has no scikit-learn ``model_``.
    """

    model_: IsolationForest | None = None
    _flat: FlatForest | None = None

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
        anomaly = self.flat_forest().score(windows.reshape(n_new, -1))
        deviation = (windows[:, -1] - windows.mean(axis=1)) ** 2
        n_channels = deviation.shape[1]
        shares = np.where(deviation.sum(axis=1, keepdims=True) > 0,
                          sc.contributions(deviation), 1.0 / n_channels)
        return anomaly[:, None] * shares * n_channels, model_state

    def flat_forest(self) -> FlatForest:
        """The fitted forest as stacked node arrays (built from ``model_`` once)."""
        if self._flat is None:
            self._flat = FlatForest(self.model_)
        return self._flat

    def _model_state(self) -> dict[str, Any]:
        # the flat arrays, not the scikit-learn object: format 3 stores no foreign classes
        return {"forest": self.flat_forest()}

    def _set_model_state(self, state: dict[str, Any]) -> None:
        forest = state["forest"]
        if isinstance(forest, FlatForest):  # format 3: a loaded detector has no model_
            self.model_, self._flat = None, forest
        else:  # formats 1 and 2 pickled the scikit-learn forest
            self.model_, self._flat = forest, None


class FlatForest:
    """A fitted ``IsolationForest`` as stacked node arrays: ``score`` descends every tree at
    once with array indexing, so a single streamed row costs a few numpy calls instead of one
    ``tree.apply`` per tree (scikit-learn's ``score_samples`` spends ~10-20 ms per call on
    100 trees, whatever the number of rows).  Same values as ``-forest.score_samples`` (a
    row's path lengths are summed tree by tree in the forest's order, as scikit-learn does).
    """

    def __init__(self, forest: IsolationForest) -> None:
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
