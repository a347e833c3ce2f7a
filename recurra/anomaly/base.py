"""The shared detector machinery: config, per-series calibration, causal streaming scores.

Every detector turns rows into per-channel errors (its only model-specific part, the
``_fit_model`` / ``_errors`` pair) and shares the rest of the pipeline, applied per series:

    errors (T, F) on observed cells -> point error (mean over observed channels)
    -> EWMA smoothing (``smoothing``) -> robust normalisation with the training errors'
    median / MAD -> threshold (SPOT online, quantile, k-sigma or telemanom's) -> is_anomaly

Scoring is causal: the score of a row depends only on that row and earlier ones.  Each series
carries a :class:`StreamState` (the last ``tail_length`` rows, the time of the last
observation per channel, the EWMA value, the SPOT state, the model's recurrent state), so
``update(new_rows)`` chunk by chunk gives the same scores as ``score`` over the whole series.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recurra.anomaly import events as ev
from recurra.anomaly import likelihood as lk
from recurra.anomaly import scores as sc
from recurra.anomaly import thresholds as th
from recurra.data.arrays import SeriesArrays, forward_fill, frame_to_arrays
from recurra.data.schema import (
    CONTRIBUTION_PREFIX,
    EVENT_SCHEMA,
    IS_ANOMALY,
    SCORE,
    SCORE_SCHEMA,
    SERIES_ID,
    START,
    TIMESTAMP,
    RecurraError,
    SchemaError,
    check_fitted,
    empty_like,
    validate_frame,
)
from recurra.nn.persistence import load_estimator, save_estimator
from recurra.nn.value_range import range_problem

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


@dataclass
class Chunk:
    """Rows of one series prepared for a model (normalised, n rows, F channels)."""

    timestamps: np.ndarray    # (n,) datetime64[us]
    values: np.ndarray        # (n, F) normalised, NaN where unobserved
    filled: np.ndarray        # (n, F) forward-filled (0 = training mean before any value)
    observed: np.ndarray      # (n, F) bool
    delta: np.ndarray         # (n, F) steps since the channel was last observed
    elapsed: np.ndarray       # (n,) steps since the epoch


@dataclass
class StreamState:
    """What one series carries from one ``update`` to the next."""

    tail: Chunk | None = None
    last_seen: np.ndarray | None = None
    last_filled: np.ndarray | None = None
    smooth: float | None = None
    spot: th.SpotState | None = None
    model_state: Any = None
    recent: np.ndarray | None = None
    likelihood: lk.LikelihoodState | None = None
    low: np.ndarray | None = None
    high: np.ndarray | None = None
    n_rows: int = 0
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class Scored:
    """Internal result of scoring one chunk of one series."""

    chunk: Chunk
    errors: np.ndarray        # (n, F)
    score: np.ndarray         # (n,)
    flags: np.ndarray         # (n,)
    thresholds: np.ndarray    # (n,)


class BaseDetector:
    """Shared ``fit / score / predict / update / save / load`` (see the module docstring).

    Subclasses set ``tail_length`` and implement ``_fit_model(chunks)`` and
    ``_errors(chunk, n_new, model_state) -> (errors (n_new, F), model_state)`` where ``chunk``
    holds the carried tail followed by the ``n_new`` new rows.

    Detectors with ``float32_inputs`` (the neural ones) leave out of ``fit`` a series whose
    normalised values overflow float32, by name and value range, in ``excluded_``
    ({series_id: reason}, :mod:`recurra.nn.value_range`); ``fit_ids_`` lists the series of
    the chunks passed to ``_fit_model``, in order.
    """

    streaming = True
    float32_inputs = False

    def __init__(self, config: DetectorConfig | None = None) -> None:
        self.config = config if config is not None else DetectorConfig()
        if not isinstance(self.config, DetectorConfig):
            raise RecurraError(f"config must be a DetectorConfig, got "
                               f"{type(self.config).__name__}")
        self.calibration_: dict[str, Calibration] | None = None
        self.channels_: tuple[str, ...] | None = None
        self.state_: dict[str, StreamState] = {}

    @property
    def tail_length(self) -> int:
        return self.config.window - 1

    # model-specific hooks ----------------------------------------------------------------
    def _fit_model(self, chunks: list[Chunk]) -> None:  # pragma: no cover - abstract
        raise NotImplementedError

    def _errors(self, chunk: Chunk, n_new: int, model_state: Any
                ) -> tuple[np.ndarray, Any]:  # pragma: no cover - abstract
        raise NotImplementedError

    def _model_state(self) -> dict[str, Any]:
        return {}

    def _set_model_state(self, state: dict[str, Any]) -> None:
        del state

    # public API --------------------------------------------------------------------------
    def fit(self, frame: Any) -> BaseDetector:
        """Learn the model and each series' scales and threshold from ``frame``; returns self."""
        frame = validate_frame(frame, name="train")
        series = frame_to_arrays(frame)
        if not series:
            raise SchemaError("train: the frame has no rows")
        self.channels_ = series[0].channels
        self.calibration_, self.excluded_ = {}, {}
        chunks, kept = [], []
        for arrays in series:
            if int(arrays.observed.any(axis=1).sum()) < self.config.window + 2:
                raise SchemaError(f"train: series {arrays.series_id!r} has "
                                  f"{int(arrays.observed.any(axis=1).sum())} observed rows; "
                                  f"it needs at least window + 2 ({self.config.window + 2})")
            self.calibration_[arrays.series_id] = _value_scales(arrays)
            chunk = self._prepare(arrays, StreamState())[0]
            reason = (range_problem(arrays.series_id, arrays.values, chunk.values)
                      if self.float32_inputs else None)
            if reason is not None:
                self.excluded_[arrays.series_id] = reason
                del self.calibration_[arrays.series_id]
                continue
            chunks.append(chunk)
            kept.append(arrays)
        if not kept:
            raise RecurraError("every series was left out of training: "
                               + "; ".join(self.excluded_.values()))
        self.fit_ids_ = [arrays.series_id for arrays in kept]
        self._fit_model(chunks)
        self.state_ = {}
        for arrays in kept:
            self._calibrate(arrays)
        return self

    def score(self, frame: Any) -> pl.DataFrame:
        """Scores of every row of ``frame``, each series scored from a fresh state."""
        return self._scores_frame(self._score_all(frame, fresh=True))

    def update(self, new_rows: Any) -> pl.DataFrame:
        """Score new rows after those already seen (state carried, thresholds updated)."""
        if not self.streaming:
            raise RecurraError(f"{type(self).__name__} with aggregate="
                               f"{self.config.aggregate!r} cannot stream: use "
                               "aggregate='causal'")
        return self._scores_frame(self._score_all(new_rows, fresh=False))

    def update_arrays(self, series_id: str, timestamps: np.ndarray, values: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Fast streaming path without frames: the same scores as :meth:`update`.

        Parameters
        ----------
        series_id : a series seen in ``fit``.
        timestamps : (n,) increasing ``datetime64`` (UTC), after the rows already seen.
        values : (n, F) in the order of ``channels_`` (NaN = not observed).

        Returns
        -------
        scores (n,) float (NaN for unobserved rows) and is_anomaly (n,) bool.
        """
        check_fitted(self, "calibration_")
        if series_id not in self.calibration_:
            raise SchemaError(f"series_id ({series_id!r}) was not seen in fit")
        values = np.asarray(values, dtype=np.float64).reshape(len(timestamps), -1)
        if values.shape[1] != len(self.channels_):
            raise SchemaError(f"values has {values.shape[1]} column(s); the detector was fitted "
                              f"on {len(self.channels_)} channel(s) {list(self.channels_)}")
        observed = np.isfinite(values)
        arrays = SeriesArrays(series_id, self.channels_,
                              np.asarray(timestamps).astype("datetime64[us]"),
                              np.where(observed, values, np.nan), observed,
                              np.zeros_like(values), self.calibration_[series_id].time_scale)
        state = _from_calibration(self.state_.get(series_id, StreamState()),
                                  self.calibration_[series_id])
        scored, self.state_[series_id] = self._score_series(arrays, state)
        return scored.score, scored.flags

    def predict(self, frame: Any) -> pl.DataFrame:
        """Events (``EVENT_SCHEMA``) in ``frame``: merged alarm runs and long data gaps.

        With ``threshold="telemanom"`` the alarm runs are pruned first (telemanom's
        :func:`recurra.anomaly.thresholds.prune_sequences`, which compares runs with each other and
        so is offline only; ``score``/``update`` flags are unpruned).
        """
        parts = []
        for series_id, scored in self._score_all(frame, fresh=True):
            chunk = scored.chunk
            shares = sc.contributions(scored.errors)
            flags = scored.flags
            if self.config.threshold == "telemanom":  # offline: prune weak sequences
                flags = th.prune_sequences(np.nan_to_num(scored.score), flags)
            runs = ev.merge_runs(ev.runs(flags), self.config.min_gap)
            parts.append(ev.events_frame(series_id, chunk.timestamps, scored.score, runs,
                                         scored.thresholds, shares, self.channels_,
                                         min_share=self.config.min_share))
            gaps = ev.long_gaps(chunk.elapsed - chunk.elapsed[0], chunk.observed.any(axis=1),
                                self.config.max_gap)
            parts.append(ev.events_frame(series_id, chunk.timestamps, scored.score, gaps,
                                         np.inf, shares, self.channels_, kind=ev.DATA_QUALITY))
        if not parts:
            return empty_like(EVENT_SCHEMA)
        return pl.concat(parts).sort([SERIES_ID, START])

    def reset(self, series_ids: list[str] | None = None) -> BaseDetector:
        """Forget the streaming state (of ``series_ids``, default all): the next ``update``
        of a series starts fresh, exactly as ``score`` does."""
        check_fitted(self, "calibration_")
        for series_id in list(self.state_) if series_ids is None else series_ids:
            self.state_.pop(series_id, None)
        return self

    def save(self, path: str | Path) -> Path:
        """Write the fitted detector to the folder ``path``."""
        check_fitted(self, "calibration_")
        return save_estimator(self, path)

    @classmethod
    def load(cls, path: str | Path) -> BaseDetector:
        """Load a detector saved with :meth:`save`."""
        return load_estimator(path, expected=cls)

    def _get_state(self) -> dict[str, Any]:
        return {"calibration": self.calibration_, "channels": self.channels_,
                "stream": self.state_, "model": self._model_state()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.calibration_ = state["calibration"]
        self.channels_ = tuple(state["channels"])
        self.state_ = state["stream"]
        self._set_model_state(state["model"])

    # pipeline ----------------------------------------------------------------------------
    def _calibrate(self, arrays: SeriesArrays) -> None:
        cal = self.calibration_[arrays.series_id]
        chunk, state = self._prepare(arrays, StreamState())
        errors, state.model_state = self._run_model(chunk, len(chunk.elapsed), None)
        smoothed = sc.ewma(_point_error(errors, chunk.observed), self.config.smoothing)
        state.smooth = sc.ewma_state(smoothed)
        center, spread = sc.robust_scale(smoothed[np.isfinite(smoothed)])
        cal.center, cal.spread = float(center), float(spread)
        normalised = sc.normalise(smoothed, cal.center, cal.spread)
        method = self.config.threshold
        if method == "spot":
            cal.spot = th.spot_init(normalised, self.config.risk, self.config.level)
            cal.threshold = cal.spot.threshold
        elif method == "dspot":
            cal.spot, cal.recent = th.drift_init(normalised, self.config.depth,
                                                 self.config.risk, self.config.level)
            cal.threshold = cal.spot.threshold
            state.recent = cal.recent
        elif method == "quantile":
            cal.threshold = th.quantile_threshold(normalised, self.config.level)
        elif method == "ksigma":
            cal.threshold = th.ksigma_threshold(normalised, self.config.k_sigma)
        elif method == "likelihood":
            config = self.config
            cal.likelihood = lk.likelihood_init(normalised, config.likelihood_history,
                                                config.likelihood_window,
                                                config.likelihood_period,
                                                config.likelihood_relearn,
                                                config.likelihood_level)
            cal.threshold = config.likelihood_level
            state.likelihood = cal.likelihood
        else:
            cal.threshold = th.nonparametric_threshold(normalised)
        state.spot = cal.spot
        with np.errstate(all="ignore"):
            cal.low, cal.high = np.fmin.reduce(chunk.values), np.fmax.reduce(chunk.values)
        state.low, state.high = cal.low, cal.high
        self.state_[arrays.series_id] = state

    def _score_all(self, frame: Any, fresh: bool) -> list[tuple[str, Scored]]:
        check_fitted(self, "calibration_")
        frame = validate_frame(frame, name="new rows" if not fresh else "frame")
        unknown = sorted(set(frame["channel"].unique().to_list()) - set(self.channels_))
        if unknown:
            raise SchemaError(f"frame: channel(s) {unknown} were not seen in fit; known "
                              f"channels are {list(self.channels_)}")
        result = []
        for arrays in frame_to_arrays(frame, channels=list(self.channels_)):
            if arrays.series_id not in self.calibration_:
                raise SchemaError(f"frame: series {arrays.series_id!r} was not seen in fit; "
                                  f"known series: {sorted(self.calibration_)[:10]}")
            state = StreamState() if fresh else self.state_.get(arrays.series_id, StreamState())
            state = _from_calibration(state, self.calibration_[arrays.series_id])
            scored, state = self._score_series(arrays, state)
            if not fresh:
                self.state_[arrays.series_id] = state
            result.append((arrays.series_id, scored))
        return result

    def _score_series(self, arrays: SeriesArrays, state: StreamState
                      ) -> tuple[Scored, StreamState]:
        cal = self.calibration_[arrays.series_id]
        state = copy.copy(state)
        if state.tail is not None and arrays.n_steps:
            last = state.tail.timestamps[-1]
            if arrays.timestamps[0] <= last:
                raise SchemaError(f"new rows: series {arrays.series_id!r} starts at "
                                  f"{arrays.timestamps[0]}, not after the last row seen "
                                  f"({last}); streaming never goes back in time")
        chunk, state = self._prepare(arrays, state)
        errors, state.model_state = self._run_model(chunk, arrays.n_steps, state.model_state)
        smoothed = sc.ewma(_point_error(errors, chunk.observed), self.config.smoothing,
                           state.smooth)
        state.smooth = sc.ewma_state(smoothed, state.smooth)
        score = sc.normalise(smoothed, cal.center, cal.spread)
        if self.config.threshold == "spot":
            flags, used, state.spot = th.spot_step(state.spot, score)
        elif self.config.threshold == "dspot":
            recent = state.recent if state.recent is not None else cal.recent
            flags, used, state.spot, state.recent = th.drift_step(state.spot, recent, score)
        elif self.config.threshold == "likelihood":
            score, state.likelihood = lk.likelihood_step(state.likelihood, score)
            used = np.full(score.shape, cal.threshold)
            flags = np.nan_to_num(score, nan=-np.inf) >= cal.threshold
        else:
            used = np.full(score.shape, cal.threshold)
            flags = np.nan_to_num(score, nan=-np.inf) > cal.threshold
        if self.config.spatial_tolerance is not None:
            spatial, state.low, state.high = sc.spatial_flags(
                chunk.values[len(chunk.elapsed) - arrays.n_steps:], state.low, state.high,
                self.config.spatial_tolerance)
            flags = flags | spatial
            if self.config.threshold == "likelihood":
                score = np.where(spatial, 1.0, score)
        return Scored(chunk, errors, score, flags, used), state

    def _run_model(self, chunk: Chunk, n_new: int, model_state: Any
                   ) -> tuple[np.ndarray, Any]:
        """Errors of the last ``n_new`` rows given the carried tail; updates the tail."""
        if n_new == 0:
            return np.zeros((0, len(self.channels_))), model_state
        errors, model_state = self._errors(chunk, n_new, model_state)
        errors = np.where(chunk.observed[-n_new:], errors, 0.0)
        return errors, model_state

    def _prepare(self, arrays: SeriesArrays, state: StreamState) -> tuple[Chunk, StreamState]:
        """Normalise new rows, carry deltas and forward fill, prepend the tail (the returned
        chunk's last ``arrays.n_steps`` rows are the new ones); the state's tail is updated."""
        cal = self.calibration_[arrays.series_id]
        seconds = (arrays.timestamps.astype("datetime64[us]").astype(np.int64) / 1e6)
        elapsed = seconds / cal.time_scale
        values = (arrays.values - cal.mean) / cal.std
        observed = arrays.observed
        n_channels = values.shape[1]
        if state.last_seen is None:
            start = elapsed[0] if elapsed.size else 0.0
            state.last_seen = np.full(n_channels, start)
            state.last_filled = np.zeros(n_channels)
        marked = np.where(observed, elapsed[:, None], -np.inf)
        upto = np.maximum(np.maximum.accumulate(marked, axis=0), state.last_seen[None, :])
        before = np.vstack([state.last_seen[None, :], upto[:-1]]) if elapsed.size else upto
        delta = elapsed[:, None] - before
        filled = forward_fill(values, observed, state.last_filled)
        new = Chunk(arrays.timestamps, values, filled, observed, delta, elapsed)
        chunk = new if state.tail is None else _concat(state.tail, new)
        if elapsed.size:
            state.last_seen = upto[-1]
            state.last_filled = filled[-1]
        state.tail = _take_last(chunk, self.tail_length)
        state.n_rows += arrays.n_steps
        return chunk, state

    def _scores_frame(self, scored: list[tuple[str, Scored]]) -> pl.DataFrame:
        columns = [CONTRIBUTION_PREFIX + name for name in self.channels_]
        if not scored:
            schema = {**SCORE_SCHEMA, **{c: pl.Float64 for c in columns}}
            return pl.DataFrame(schema=schema)
        parts = []
        for series_id, result in scored:
            n_new = result.score.size
            shares = sc.contributions(result.errors)
            data = {SERIES_ID: [series_id] * n_new,
                    TIMESTAMP: pl.Series(result.chunk.timestamps[-n_new:]).cast(pl.Datetime("us")),
                    SCORE: pl.Series(result.score, nan_to_null=True),
                    IS_ANOMALY: result.flags}
            data.update({c: shares[:, j] for j, c in enumerate(columns)})
            parts.append(pl.DataFrame(data))
        frame = pl.concat(parts)
        return frame.with_columns(pl.col(TIMESTAMP).dt.replace_time_zone("UTC"))


def _from_calibration(state: StreamState, cal: Calibration) -> StreamState:
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


def _point_error(errors: np.ndarray, observed: np.ndarray) -> np.ndarray:
    """(n,) mean error over the observed channels of each row; NaN for an unobserved row."""
    mask = observed[-errors.shape[0]:] if errors.shape[0] else observed[:0]
    count = mask.sum(axis=1)
    total = np.where(mask, errors, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def _value_scales(arrays: SeriesArrays) -> Calibration:
    with np.errstate(all="ignore"):
        mean = np.nan_to_num(np.nanmean(arrays.values, axis=0))
        std = np.nan_to_num(np.nanstd(arrays.values, axis=0))
    std = np.where(std > 1e-9 * np.maximum(np.abs(mean), 1.0), std, 1.0)
    return Calibration(mean=mean, std=std, time_scale=float(arrays.time_scale))


def _concat(first: Chunk, second: Chunk) -> Chunk:
    return Chunk(*(np.concatenate([getattr(first, f), getattr(second, f)])
                   for f in ("timestamps", "values", "filled", "observed", "delta", "elapsed")))


def _take_last(chunk: Chunk, n_rows: int) -> Chunk:
    start = max(len(chunk.elapsed) - n_rows, 0) if n_rows > 0 else len(chunk.elapsed)
    return Chunk(*(getattr(chunk, f)[start:].copy()
                   for f in ("timestamps", "values", "filled", "observed", "delta", "elapsed")))


def pad_left(chunk: Chunk, n_rows: int) -> Chunk:
    """Prepend ``n_rows`` unobserved rows (value 0, delta 0) so the first rows get windows."""
    if n_rows <= 0:
        return chunk
    n_channels = chunk.values.shape[1]
    zeros = np.zeros((n_rows, n_channels))
    first_time = chunk.elapsed[0] if chunk.elapsed.size else 0.0
    pad = Chunk(np.repeat(chunk.timestamps[:1], n_rows), np.full((n_rows, n_channels), np.nan),
                zeros, np.zeros((n_rows, n_channels), bool), zeros.copy(),
                np.full(n_rows, first_time))
    return _concat(pad, chunk)
