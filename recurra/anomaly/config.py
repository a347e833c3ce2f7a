"""How a detector is built, trained and thresholded: small frozen parts shared by the
detectors of :mod:`recurra.anomaly`, and one config class per kind of detector.

Parts (each checked in its own ``__post_init__``):

* :class:`ThresholdConfig` (``threshold``): the threshold method and its settings, the
  anomaly likelihood's, the spatial rule;
* :class:`EventConfig` (``events``): how alarm rows become events;
* :class:`NetworkConfig` (``network``): the shape of a neural detector's network;
* :class:`recurra.nn.train.TrainConfig` (``train``): the shared training loop's settings
  (weight decay, schedules, early stopping, clipping...), default :data:`DETECTOR_TRAIN`.

Configs (one level of inheritance): :class:`DetectorConfig` is the common base (``window``,
``smoothing``, ``threshold``, ``events``); :class:`AutoencoderConfig`,
:class:`ForecastErrorConfig`, :class:`ForestConfig` and :class:`ZScoreConfig` add what their
detectors need.  Each detector names its own as ``config_class``.

Old flat keys (``hidden_size = 16``, ``threshold = "spot"``, ``max_epochs = 3``) still
build these through ``FLAT_KEYS`` (:func:`recurra.data.config_tree.build_config`, with a
``FutureWarning`` in a TOML file).

>>> AutoencoderConfig(window=16, network=NetworkConfig(hidden_size=8),
...                   threshold=ThresholdConfig(kind="quantile", level=0.99))  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from recurra.data.config_tree import coerce_part
from recurra.data.schema import RecurraError
from recurra.nn.train import TrainConfig

THRESHOLDS = ("spot", "dspot", "quantile", "ksigma", "telemanom", "likelihood")
AGGREGATES = ("causal", "overlap")
CELLS = ("lstm", "gru")

DETECTOR_TRAIN = TrainConfig(max_epochs=10, batch_size=64, learning_rate=3e-3, seed=0,
                             device="cpu", early_stopping_patience=None)
"""The neural detectors' default training: 10 epochs of batches of 64 windows at learning
rate 3e-3 on CPU, without early stopping (they train without validation rows), the other
settings those of :class:`~recurra.nn.train.TrainConfig` (AdamW, ``clip_norm=1.0``)."""

_THRESHOLD_KEYS = ("level", "risk", "k_sigma", "depth", "likelihood_window",
                   "likelihood_history", "likelihood_period", "likelihood_level",
                   "likelihood_relearn", "spatial_tolerance")
_EVENT_KEYS = ("min_gap", "max_gap", "min_share")
_NETWORK_KEYS = ("hidden_size", "latent_size", "num_layers", "bidirectional", "cell")
_TRAIN_KEYS = ("max_epochs", "batch_size", "learning_rate", "seed", "device")


def _moves(part: str, keys: tuple[str, ...]) -> dict[str, str]:
    return {key: f"{part}.{key}" for key in keys}


def _check_counts(owner: Any, names: tuple[str, ...], minimum: int = 1) -> None:
    for name in names:
        value = getattr(owner, name)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            raise RecurraError(f"{type(owner).__name__}.{name} ({value!r}) must be an "
                               f"integer >= {minimum}")


def _check_choice(owner: Any, name: str, choices: tuple[str, ...]) -> None:
    value = getattr(owner, name)
    if value not in choices:
        raise RecurraError(f"{type(owner).__name__}.{name} ({value!r}) must be one of "
                           f"{list(choices)}")


@dataclass(frozen=True)
class ThresholdConfig:
    """When a normalised score is an anomaly (``threshold`` of every detector config).

    kind : ``"spot"`` (EVT, updated online), ``"dspot"`` (SPOT on the score minus its
        mean over the last ``depth`` normal scores), ``"quantile"``, ``"ksigma"``,
        ``"telemanom"``, ``"likelihood"`` (the anomaly likelihood of
        :mod:`recurra.anomaly.likelihood`: the score becomes the log-likelihood in [0, 1],
        judged against a rolling history of the series' own scores, so it adapts to level
        and variance shifts; an alarm is a log-likelihood >= ``likelihood_level``).
    level : quantile level of ``"quantile"``, initial level of ``"spot"``.
    risk : SPOT's target false-alarm probability per point.
    k_sigma : ``"ksigma"`` multiplier.
    depth : DSPOT's local window.
    likelihood_window, likelihood_history, likelihood_period : the likelihood's short-term
        average, its rolling history and how often its Gaussian is re-fitted (rows; NAB's
        defaults 10, 8640, 100).
    likelihood_level : the log-likelihood alarm level (0.5 = tail probability 1e-5).
    likelihood_relearn : after this many consecutive alarm rows the likelihood re-learns from
        its last ``likelihood_relearn`` scores (a sustained change becomes the norm after one
        alarm run; None: never; see :mod:`recurra.anomaly.likelihood`).
    spatial_tolerance : NAB's spatial rule (:func:`recurra.anomaly.scores.spatial_flags`): a
        value outside the range seen so far (training rows included), widened by this share
        of the range, is an anomaly (score 1 with ``kind="likelihood"``); None: off.

    ``threshold = "spot"`` in a config is ``threshold = { kind = "spot" }`` (``SHORTHAND``).
    """

    SHORTHAND: ClassVar[str] = "kind"

    kind: str = "spot"
    level: float = 0.98
    risk: float = 1e-3
    k_sigma: float = 4.0
    depth: int = 20
    likelihood_window: int = 10
    likelihood_history: int = 8640
    likelihood_period: int = 100
    likelihood_level: float = 0.5
    likelihood_relearn: int | None = None
    spatial_tolerance: float | None = None

    def __post_init__(self) -> None:
        _check_choice(self, "kind", THRESHOLDS)
        _check_counts(self, ("depth", "likelihood_window", "likelihood_history",
                             "likelihood_period"))
        if not 0.0 < self.level < 1.0:
            raise RecurraError(f"ThresholdConfig.level ({self.level}) must be in (0, 1)")
        if self.kind in ("spot", "dspot") and not 0.0 < self.risk < 1.0 - self.level:
            raise RecurraError(f"ThresholdConfig.risk ({self.risk}) must be in (0, 1 - level "
                               f"= {1.0 - self.level:g}) for kind={self.kind!r}")
        if not self.k_sigma > 0:
            raise RecurraError(f"ThresholdConfig.k_sigma ({self.k_sigma}) must be > 0")
        if self.likelihood_history < self.likelihood_window:
            raise RecurraError(f"ThresholdConfig.likelihood_history ({self.likelihood_history})"
                               f" must be >= likelihood_window ({self.likelihood_window})")
        relearn = self.likelihood_relearn
        if relearn is not None and (not isinstance(relearn, int) or isinstance(relearn, bool)
                                    or not 1 <= relearn <= self.likelihood_history):
            raise RecurraError(f"ThresholdConfig.likelihood_relearn ({relearn!r}) must be None"
                               f" or an integer in [1, likelihood_history = "
                               f"{self.likelihood_history}]")
        tolerance = self.spatial_tolerance
        if tolerance is not None and not (isinstance(tolerance, (int, float))
                                          and 0.0 <= tolerance < np.inf):
            raise RecurraError(f"ThresholdConfig.spatial_tolerance ({tolerance!r}) must be "
                               "None or a finite number >= 0")
        if not 0.0 < self.likelihood_level < 1.0:
            raise RecurraError(f"ThresholdConfig.likelihood_level ({self.likelihood_level}) "
                               "must be in (0, 1)")


@dataclass(frozen=True)
class EventConfig:
    """How alarm rows become events (``events`` of every detector config).

    min_gap : alarm runs separated by fewer normal rows are merged into one event.
    max_gap : a silence longer than this many median spacings is a data_quality event.
    min_share : a channel is named in an event when its mean error share is at least this.
    """

    min_gap: int = 0
    max_gap: float = 12.0
    min_share: float = 0.2

    def __post_init__(self) -> None:
        _check_counts(self, ("min_gap",), minimum=0)
        if not self.max_gap > 0:
            raise RecurraError(f"EventConfig.max_gap ({self.max_gap}) must be > 0")
        if not 0.0 <= self.min_share <= 1.0:
            raise RecurraError(f"EventConfig.min_share ({self.min_share}) must be in [0, 1]")


@dataclass(frozen=True)
class NetworkConfig:
    """The network of a neural detector (``network``).

    hidden_size, num_layers : the recurrent encoder (or forecaster).
    latent_size : the autoencoders' bottleneck.
    bidirectional : a bidirectional encoder (:class:`ReconstructionDetector`).
    cell : ``"lstm"`` or ``"gru"``: the encoder of :class:`ReconstructionDetector` and the
        forecaster's cell (:class:`GRUDAutoencoder` always uses GRU-D).
    """

    hidden_size: int = 16
    latent_size: int = 8
    num_layers: int = 1
    bidirectional: bool = False
    cell: str = "lstm"

    def __post_init__(self) -> None:
        _check_counts(self, ("hidden_size", "latent_size", "num_layers"))
        _check_choice(self, "cell", CELLS)


@dataclass(frozen=True)
class DetectorConfig:
    """The parts every detector has: the common base of the detector configs.

    window : rows of context (the autoencoders' and the forest's windows, the z-scores'
        look-back); a series needs ``window + 2`` observed rows to be fitted.
    smoothing : EWMA alpha applied to point errors (1.0 = none; telemanom uses ~0.05-0.2).
    threshold : a :class:`ThresholdConfig`. events : an :class:`EventConfig`.

    Models saved before issue 18 name this class with the flat keys of every detector; they
    load as their detector's own ``config_class``
    (:meth:`recurra.anomaly.base.BaseDetector.config_class_for`).
    """

    FLAT_KEYS: ClassVar[dict[str, str]] = {**_moves("threshold", _THRESHOLD_KEYS),
                                           **_moves("events", _EVENT_KEYS)}

    window: int = 32
    smoothing: float = 1.0
    threshold: ThresholdConfig = field(default_factory=ThresholdConfig)
    events: EventConfig = field(default_factory=EventConfig)

    def __post_init__(self) -> None:
        name = type(self).__name__
        _check_counts(self, ("window",), minimum=2)
        if not 0.0 < self.smoothing <= 1.0:
            raise RecurraError(f"{name}.smoothing ({self.smoothing}) must be in (0, 1]")
        for part, cls in (("threshold", ThresholdConfig), ("events", EventConfig)):
            coerce_part(self, part, cls)


_NEURAL_FLAT_KEYS = {**DetectorConfig.FLAT_KEYS, **_moves("network", _NETWORK_KEYS),
                     **_moves("train", _TRAIN_KEYS)}


@dataclass(frozen=True)
class AutoencoderConfig(DetectorConfig):
    """:class:`ReconstructionDetector` and :class:`GRUDAutoencoder`.

    window, smoothing, threshold, events : the common parts (:class:`DetectorConfig`).
    network : a :class:`NetworkConfig`.
    aggregate : ``"causal"`` (a row's error comes from the window ending at it: streaming
        capable) or ``"overlap"`` (mean over every window covering it: offline only).
    train : a :class:`recurra.nn.train.TrainConfig` (default :data:`DETECTOR_TRAIN`;
        there are no validation rows, so early stopping monitors the training loss).
    n_threads : torch threads while training (None: torch's default).
    """

    FLAT_KEYS: ClassVar[dict[str, str]] = _NEURAL_FLAT_KEYS

    network: NetworkConfig = field(default_factory=NetworkConfig)
    aggregate: str = "causal"
    train: TrainConfig = field(default_factory=lambda: DETECTOR_TRAIN)
    n_threads: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_choice(self, "aggregate", AGGREGATES)
        _check_neural(self)


@dataclass(frozen=True)
class ForecastErrorConfig(DetectorConfig):
    """:class:`ForecastErrorDetector`.

    window, smoothing, threshold, events : the common parts (:class:`DetectorConfig`).
    network : a :class:`NetworkConfig` (``hidden_size``, ``num_layers`` and ``cell`` of the
        one-step forecaster).
    train : a :class:`recurra.nn.train.TrainConfig` (default :data:`DETECTOR_TRAIN`).
    n_threads : torch threads while training (None: torch's default).
    """

    FLAT_KEYS: ClassVar[dict[str, str]] = _NEURAL_FLAT_KEYS

    network: NetworkConfig = field(default_factory=NetworkConfig)
    train: TrainConfig = field(default_factory=lambda: DETECTOR_TRAIN)
    n_threads: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_neural(self)


def _check_neural(config: Any) -> None:
    coerce_part(config, "network", NetworkConfig)
    coerce_part(config, "train", TrainConfig)
    threads = config.n_threads
    if threads is not None and (not isinstance(threads, int) or isinstance(threads, bool)
                                or threads < 1):
        raise RecurraError(f"{type(config).__name__}.n_threads ({threads!r}) must be None or "
                           "an integer >= 1")


@dataclass(frozen=True)
class ForestConfig(DetectorConfig):
    """:class:`IsolationForestDetector`.

    window, smoothing, threshold, events : the common parts (:class:`DetectorConfig`).
    n_estimators : trees of the isolation forest.
    seed : its random state.
    """

    n_estimators: int = 100
    seed: int = 0

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_counts(self, ("n_estimators",))
        _check_counts(self, ("seed",), minimum=0)


@dataclass(frozen=True)
class ZScoreConfig(DetectorConfig):
    """:class:`RollingZScoreDetector` and :class:`ReturnZScoreDetector`: the common parts only.

    window : the look-back of the z-score (rows).
    smoothing, threshold, events : as in :class:`DetectorConfig`.
    """

