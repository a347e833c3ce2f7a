"""How a detector is built, trained and thresholded: :class:`DetectorConfig`, shared by every
detector of :mod:`recurra.anomaly` (a frozen dataclass, checked in ``__post_init__``)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recurra.data.schema import RecurraError

THRESHOLDS = ("spot", "dspot", "quantile", "ksigma", "telemanom", "likelihood")
AGGREGATES = ("causal", "overlap")
CELLS = ("lstm", "gru")


@dataclass(frozen=True)
class DetectorConfig:
    """How a detector is built, trained and thresholded (shared by every detector).

    window : rows per sliding window (autoencoders, isolation forest, rolling z-score).
    hidden_size, latent_size, num_layers, bidirectional, cell : network shape (``cell`` is
        the encoder of :class:`ReconstructionDetector` and the forecaster's recurrent cell).
    aggregate : ``"causal"`` (a row's error comes from the window ending at it: streaming
        capable) or ``"overlap"`` (mean over every window covering it: offline only).
    max_epochs, batch_size, learning_rate, seed, device, n_threads : training.
    smoothing : EWMA alpha applied to point errors (1.0 = none; telemanom uses ~0.05-0.2).
    threshold : ``"spot"`` (EVT, updated online), ``"dspot"`` (SPOT on the score minus its
        mean over the last ``depth`` normal scores), ``"quantile"``, ``"ksigma"``,
        ``"telemanom"``, ``"likelihood"`` (the anomaly likelihood of
        :mod:`recurra.anomaly.likelihood`: the score becomes the log-likelihood in [0, 1], judged
        against a rolling history of the series' own scores, so it adapts to level and
        variance shifts; an alarm is a log-likelihood >= ``likelihood_level``).
    depth : DSPOT's local window.
    level : quantile level of ``"quantile"``, initial level of ``"spot"``.
    risk : SPOT's target false-alarm probability per point.
    k_sigma : ``"ksigma"`` multiplier.
    min_gap : alarm runs separated by fewer normal rows are merged into one event.
    max_gap : a silence longer than this many median spacings is a data_quality event.
    min_share : a channel is named in an event when its mean error share is at least this.
    n_estimators : trees of the isolation forest.
    likelihood_window, likelihood_history, likelihood_period : the likelihood's short-term
        average, its rolling history and how often its Gaussian is re-fitted (rows; NAB's
        defaults 10, 8640, 100).
    likelihood_level : the log-likelihood alarm level (0.5 = tail probability 1e-5).
    likelihood_relearn : after this many consecutive alarm rows the likelihood re-learns from
        its last ``likelihood_relearn`` scores (a sustained change becomes the norm after one
        alarm run; None: never; see :mod:`recurra.anomaly.likelihood`).
    spatial_tolerance : NAB's spatial rule (:func:`recurra.anomaly.scores.spatial_flags`): a value
        outside the range seen so far (training rows included), widened by this share of
        the range, is an anomaly (score 1 with ``threshold="likelihood"``); None: off.
    """

    window: int = 32
    hidden_size: int = 16
    latent_size: int = 8
    num_layers: int = 1
    bidirectional: bool = False
    cell: str = "lstm"
    aggregate: str = "causal"
    max_epochs: int = 10
    batch_size: int = 64
    learning_rate: float = 3e-3
    seed: int = 0
    device: str = "cpu"
    n_threads: int | None = None
    smoothing: float = 1.0
    threshold: str = "spot"
    level: float = 0.98
    risk: float = 1e-3
    k_sigma: float = 4.0
    min_gap: int = 0
    max_gap: float = 12.0
    min_share: float = 0.2
    n_estimators: int = 100
    depth: int = 20
    likelihood_window: int = 10
    likelihood_history: int = 8640
    likelihood_period: int = 100
    likelihood_level: float = 0.5
    likelihood_relearn: int | None = None
    spatial_tolerance: float | None = None

    def __post_init__(self) -> None:
        for name in ("window", "hidden_size", "latent_size", "num_layers", "max_epochs",
                     "batch_size", "n_estimators", "depth", "likelihood_window",
                     "likelihood_history", "likelihood_period"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RecurraError(f"DetectorConfig.{name} ({value!r}) must be an integer >= 1")
        if self.window < 2:
            raise RecurraError(f"DetectorConfig.window ({self.window}) must be >= 2")
        for name, choices in (("threshold", THRESHOLDS), ("aggregate", AGGREGATES),
                              ("cell", CELLS)):
            if getattr(self, name) not in choices:
                raise RecurraError(f"DetectorConfig.{name} ({getattr(self, name)!r}) must be "
                                   f"one of {list(choices)}")
        if not 0.0 < self.smoothing <= 1.0:
            raise RecurraError(f"DetectorConfig.smoothing ({self.smoothing}) must be in (0, 1]")
        if not 0.0 < self.level < 1.0:
            raise RecurraError(f"DetectorConfig.level ({self.level}) must be in (0, 1)")
        if self.threshold in ("spot", "dspot") and not 0.0 < self.risk < 1.0 - self.level:
            raise RecurraError(f"DetectorConfig.risk ({self.risk}) must be in (0, 1 - level = "
                               f"{1.0 - self.level:g}) for threshold={self.threshold!r}")
        if self.likelihood_history < self.likelihood_window:
            raise RecurraError(f"DetectorConfig.likelihood_history ({self.likelihood_history})"
                               f" must be >= likelihood_window ({self.likelihood_window})")
        relearn = self.likelihood_relearn
        if relearn is not None and (not isinstance(relearn, int) or isinstance(relearn, bool)
                                    or not 1 <= relearn <= self.likelihood_history):
            raise RecurraError(f"DetectorConfig.likelihood_relearn ({relearn!r}) must be None "
                               f"or an integer in [1, likelihood_history = "
                               f"{self.likelihood_history}]")
        tolerance = self.spatial_tolerance
        if tolerance is not None and not (isinstance(tolerance, (int, float))
                                          and 0.0 <= tolerance < np.inf):
            raise RecurraError(f"DetectorConfig.spatial_tolerance ({tolerance!r}) must be None "
                               "or a finite number >= 0")
        if not 0.0 < self.likelihood_level < 1.0:
            raise RecurraError(f"DetectorConfig.likelihood_level ({self.likelihood_level}) "
                               "must be in (0, 1)")
        if self.learning_rate <= 0 or self.k_sigma <= 0 or self.max_gap <= 0:
            raise RecurraError("DetectorConfig.learning_rate, k_sigma and max_gap must be > 0 "
                               f"(got {self.learning_rate}, {self.k_sigma}, {self.max_gap})")
        if self.min_gap < 0 or not 0.0 <= self.min_share <= 1.0 or self.seed < 0:
            raise RecurraError(f"DetectorConfig.min_gap ({self.min_gap}) and seed ({self.seed})"
                               f" must be >= 0, min_share ({self.min_share}) in [0, 1]")
