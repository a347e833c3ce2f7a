"""The pipeline detector: one class that holds an error model and runs the shared pipeline.

Every single detector turns rows into per-channel errors with its error model (an object
of the :class:`recurra.anomaly.protocol.ErrorModel` protocol: the window autoencoder, the
one-step forecaster, the isolation forest, the rolling z-scores) and shares the rest,
applied per series (:mod:`recurra.anomaly.pipeline`):

    errors (T, F) on observed cells -> point error (mean over observed channels)
    -> EWMA smoothing (``smoothing``) -> robust normalisation with the training errors'
    median / MAD -> threshold (SPOT online, quantile, k-sigma or telemanom's) -> is_anomaly

Scoring is causal: the score of a row depends only on that row and earlier ones.  Each series
carries a :class:`StreamState` (the last ``tail_length`` rows, the time of the last
observation per channel, the EWMA value, the SPOT state, the model's recurrent state), so
``update(new_rows)`` chunk by chunk gives the same scores as ``score`` over the whole series.

A public detector is :class:`BaseDetector` with an ``error_model_factory`` and its
``config_class`` (the only level of inheritance)::

    class RollingZScoreDetector(BaseDetector):
        config_class = ZScoreConfig
        error_model_factory = staticmethod(RollingZScoreErrors)

The configs live in :mod:`recurra.anomaly.config`, the state types in
:mod:`recurra.anomaly.stream`, the per-series calibration in :mod:`recurra.anomaly.calibration`;
they are re-exported here (saved models name them under this module).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recurra.anomaly import events as ev
from recurra.anomaly import scores as sc
from recurra.anomaly import thresholds as th
from recurra.anomaly.calibration import Calibration, value_scales, with_calibration
from recurra.anomaly.config import AGGREGATES, CELLS, THRESHOLDS, DetectorConfig
from recurra.anomaly.pipeline import calibrate_series, prepare, score_series
from recurra.anomaly.protocol import ErrorModel
from recurra.anomaly.stream import Chunk, Scored, StreamState, check_after_tail, pad_left
from recurra.data.arrays import SeriesArrays, frame_to_arrays, rows_to_arrays
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
    contract,
    empty_like,
)
from recurra.nn.persistence import load_estimator, save_estimator
from recurra.nn.state import tensors_to
from recurra.nn.value_range import range_problem

__all__ = ["AGGREGATES", "CELLS", "THRESHOLDS", "BaseDetector", "Calibration", "Chunk",
           "DetectorConfig", "Scored", "StreamState", "pad_left"]


class BaseDetector:
    """Shared ``fit / score / predict / update / save / load`` around an error model.

    A subclass sets ``config_class`` (its config dataclass, a :class:`DetectorConfig`) and
    ``error_model_factory``: ``config -> ErrorModel``, built in ``__init__`` as
    ``error_model`` (unfitted; ``fit`` fits it).  Error models with a torch module carry
    it as ``net`` (a :class:`recurra.anomaly.neural.TorchModel`): ``module_``,
    ``history_``, ``device_`` and :meth:`to` reach it there.

    Neural error models (``float32_inputs``) leave out of ``fit`` a series whose normalised
    values overflow float32, by name and value range, in ``excluded_``
    ({series_id: reason}, :mod:`recurra.nn.value_range`); ``fit_ids_`` lists the series of
    the chunks the error model was fitted on, in order.
    """

    config_class: type[DetectorConfig] = DetectorConfig
    error_model_factory: Callable[[DetectorConfig], ErrorModel]

    def __init__(self, config: DetectorConfig | None = None) -> None:
        config_class = type(self).config_class
        self.config = config if config is not None else config_class()
        if not isinstance(self.config, config_class):
            raise RecurraError(f"config of {type(self).__name__} must be a "
                               f"{config_class.__name__}, got {type(self.config).__name__}")
        factory = getattr(type(self), "error_model_factory", None)
        if factory is None:
            raise RecurraError(f"{type(self).__name__} names no error_model_factory: use a "
                               "detector of recurra.anomaly.DETECTORS, or subclass "
                               "BaseDetector with one")
        self.error_model: ErrorModel = factory(self.config)
        self.calibration_: dict[str, Calibration] | None = None
        self.channels_: tuple[str, ...] | None = None
        self.state_: dict[str, StreamState] = {}
        self.last_update_path_: str | None = None

    @classmethod
    def config_class_for(cls, saved: type) -> type:
        """The class a saved model's config is rebuilt as (``recurra.nn.persistence``):
        models saved before issue 18 name the flat :class:`DetectorConfig`, now the common
        base, so their flat keys load as this detector's own ``config_class``."""
        return cls.config_class if saved is DetectorConfig else saved

    @property
    def tail_length(self) -> int:
        """Rows each series carries between ``update`` calls (the error model's context)."""
        return self.error_model.tail_length

    @property
    def streaming(self) -> bool:
        """Whether ``update`` is allowed (every stage causal)."""
        return self.error_model.streaming

    # the torch module of a neural error model ---------------------------------------------
    @property
    def module_(self) -> torch.nn.Module:
        """The fitted network of a neural detector."""
        return self._net().module_

    @property
    def history_(self) -> list[dict[str, Any]]:
        """Per-epoch training records of a neural detector (epoch, train_loss, lr, ...)."""
        return self._net().history_

    @property
    def device_(self) -> torch.device:
        """The device of ``module_`` and of the recurrent state tensors in ``state_``."""
        return self._net().device()

    def to(self, device: str | torch.device) -> BaseDetector:
        """Move the network and every tensor of the per-series stream states to ``device``
        (in place; later scoring runs there); returns self. ``"auto"`` picks CUDA when
        available; a detector without a network is left as it is.
        ``recurra.nn.persistence.load_estimator(path, map_location=d)`` calls it."""
        net = getattr(self.error_model, "net", None)
        if net is None:
            return self
        chosen = net.to(device)
        for stream_state in (self.state_ or {}).values():
            stream_state.model_state = tensors_to(stream_state.model_state, chosen)
        return self

    def _net(self) -> Any:
        net = getattr(self.error_model, "net", None)
        if net is None:
            raise AttributeError(f"{type(self).__name__} has no network "
                                 f"({type(self.error_model).__name__} is not neural)")
        return net

    # public API --------------------------------------------------------------------------
    def fit(self, frame: Any) -> BaseDetector:
        """Learn the model and each series' scales and threshold from ``frame``; returns self."""
        series = frame_to_arrays(contract(frame, name="train"))  # the one check of ``frame``
        if not series:
            raise SchemaError("train: the frame has no rows")
        self.channels_ = series[0].channels
        self.calibration_, self.excluded_ = {}, {}
        chunks, kept = [], []
        for arrays in series:
            n_observed = int(arrays.observed.any(axis=1).sum())
            if n_observed < self.config.window + 2:
                raise SchemaError(f"train: series {arrays.series_id!r} has {n_observed} "
                                  "observed rows; it needs at least window + 2 "
                                  f"({self.config.window + 2})")
            cal = value_scales(arrays)
            chunk = prepare(arrays, StreamState(), cal, self.tail_length)[0]
            reason = (range_problem(arrays.series_id, arrays.values, chunk.values)
                      if self.error_model.float32_inputs else None)
            if reason is not None:
                self.excluded_[arrays.series_id] = reason
                continue
            self.calibration_[arrays.series_id] = cal
            chunks.append(chunk)
            kept.append(arrays)
        if not kept:
            raise RecurraError("every series was left out of training: "
                               + "; ".join(self.excluded_.values()))
        self.fit_ids_ = [arrays.series_id for arrays in kept]
        self.error_model.fit(chunks, self.fit_ids_)
        self.state_ = {arrays.series_id: calibrate_series(
            self.error_model, self.config, self.calibration_[arrays.series_id], arrays)
            for arrays in kept}
        return self

    def score(self, frame: Any) -> pl.DataFrame:
        """Scores of every row of ``frame``, each series scored from a fresh state."""
        return self._scores_frame(self._score_all(frame, fresh=True))

    def update(self, new_rows: Any) -> pl.DataFrame:
        """Score new rows after those already seen (state carried, thresholds updated).

        The one streaming path, batched over the fleet: the series are grouped by their
        number of new rows and each group of S series x K rows advances in K array calls
        (one model call each, :mod:`recurra.anomaly.fleet`); a series without a full stream
        state (after ``reset``, or fewer rows seen than ``tail_length``), a group with more
        rows than series (K > S: one chunk per series is fewer calls) and a detector the
        fleet has no batched form of go through the per-series pipeline.  The path taken
        is kept in ``last_update_path_`` (``"fleet: S series x K steps"`` /
        ``"update: M series (why)"``, joined by ``"; "``).

        Returns
        -------
        The scores of ``new_rows`` (``SCORE_SCHEMA`` + ``contribution_<channel>``), sorted
        by series and time: a streaming caller's next step is always that output (the
        forecasters' ``update`` returns its forecast for the same reason).

        Example
        -------
        >>> scores = det.update(new_rows)                          # doctest: +SKIP
        >>> det.last_update_path_                                  # doctest: +SKIP
        'fleet: 500 series x 1 steps'
        """
        if not self.streaming:
            raise RecurraError(f"{type(self).__name__} with aggregate="
                               f"{getattr(self.config, 'aggregate', None)!r} cannot stream: "
                               "use aggregate='causal'")
        from recurra.anomaly.fleet import advance  # imported late: fleet imports this module

        scores, self.last_update_path_ = advance(self, new_rows)
        return scores

    def _update_series(self, series_id: str, timestamps: np.ndarray, values: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
        """The per-series path without frames (benchmarks time it): the scores
        :meth:`update` gives that series' rows.

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
        scored = self._advance_series(arrays)
        return scored.score, scored.flags

    def predict(self, frame: Any) -> pl.DataFrame:
        """Events (``EVENT_SCHEMA``) in ``frame``: merged alarm runs and long data gaps.

        With ``threshold.kind="telemanom"`` the alarm runs are pruned first (telemanom's
        :func:`recurra.anomaly.thresholds.prune_sequences`, which compares runs with each other and
        so is offline only; ``score``/``update`` flags are unpruned).
        """
        parts = []
        for series_id, scored in self._score_all(frame, fresh=True):
            chunk = scored.chunk
            shares = sc.contributions(scored.errors)
            flags = scored.flags
            if self.config.threshold.kind == "telemanom":  # offline: prune weak sequences
                flags = th.prune_sequences(np.nan_to_num(scored.score), flags)
            runs = ev.merge_runs(ev.runs(flags), self.config.events.min_gap)
            parts.append(ev.events_frame(series_id, chunk.timestamps, scored.score, runs,
                                         scored.thresholds, shares, self.channels_,
                                         min_share=self.config.events.min_share))
            gaps = ev.long_gaps(chunk.elapsed - chunk.elapsed[0], chunk.observed.any(axis=1),
                                self.config.events.max_gap)
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
                "stream": self.state_, "model": self.error_model.get_state()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.calibration_ = state["calibration"]
        self.channels_ = tuple(state["channels"])
        self.state_ = state["stream"]
        self.error_model.set_state(state["model"], len(self.channels_))

    # pipeline, per series (recurra.anomaly.pipeline) ---------------------------------------
    def _score_all(self, frame: Any, fresh: bool) -> list[tuple[str, Scored]]:
        if not fresh:
            return [(a.series_id, self._advance_series(a)) for a in self._new_arrays(frame)]
        return [(a.series_id, self._score_series(a, StreamState())[0])
                for a in self._arrays(frame, "frame")]

    def _arrays(self, frame: Any, name: str, stream: bool = False) -> list[SeriesArrays]:
        """The series of ``frame`` (validated; channels and series known from ``fit``); rows
        to ``stream`` take the one-pivot :func:`rows_to_arrays` (the pipeline recomputes
        their deltas from the stream state)."""
        check_fitted(self, "calibration_")
        frame = contract(frame, name=name)  # checked once where it enters
        unknown = sorted(set(frame["channel"].unique().to_list()) - set(self.channels_))
        if unknown:
            raise SchemaError(f"frame: channel(s) {unknown} were not seen in fit; known "
                              f"channels are {list(self.channels_)}")
        channels = list(self.channels_)
        if stream and not frame.is_empty():
            series = rows_to_arrays(frame, channels)
        else:
            series = frame_to_arrays(frame, channels=channels)
        for arrays in series:
            if arrays.series_id not in self.calibration_:
                raise SchemaError(f"frame: series {arrays.series_id!r} was not seen in fit; "
                                  f"known series: {sorted(self.calibration_)[:10]}")
        return series

    def _new_arrays(self, frame: Any) -> list[SeriesArrays]:
        """:meth:`_arrays` of rows to stream, each series checked to start after the rows its
        state has seen (before any state moves)."""
        series = self._arrays(frame, "new rows", stream=True)
        for arrays in series:
            check_after_tail(arrays, self.state_.get(arrays.series_id, StreamState()))
        return series

    def _advance_series(self, arrays: SeriesArrays) -> Scored:
        """The per-series path: score ``arrays`` from the series' state and keep the new one."""
        scored, self.state_[arrays.series_id] = self._score_series(
            arrays, self.state_.get(arrays.series_id, StreamState()))
        return scored

    def _score_series(self, arrays: SeriesArrays, state: StreamState
                      ) -> tuple[Scored, StreamState]:
        cal = self.calibration_[arrays.series_id]
        return score_series(self.error_model, self.config, cal, arrays,
                            with_calibration(state, cal))

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

