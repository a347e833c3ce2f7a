"""Batched streaming: ``BaseDetector.update`` advances every series of a fleet at once.

The per-series pipeline (:mod:`recurra.anomaly.pipeline`) walks the series one at a time in
Python (a model call and the threshold per series), about a millisecond per series and point.
:func:`advance` is the body of :meth:`recurra.anomaly.base.BaseDetector.update`: it groups the
new rows by their number per series and, for each group of S series x K rows, copies the
streaming states into stacked arrays (S series x tail rows x F channels) in a
:class:`DetectorFleet` and advances all S series by one row per call, K calls: the rolling
z-score is a few numpy reductions over the (S, W, F) tails, the LSTM autoencoder one module
call on the (S, W, F) windows, the EWMA / normalisation / SPOT threshold array operations (a
SPOT peak, rare by construction, is handed to :func:`recurra.anomaly.thresholds.spot_step`
for that series only); then it writes the states back.  A series without a full stream
state, a group with more rows than series and a detector this module has no batched form of
go through the per-series path instead.

Equality with the per-series path: exact (bit for bit) for the numpy error models (rolling
z-score, isolation forest) and every threshold; within float32 rounding (about 1e-6 on the
normalised score) for the neural ones, whose batched module call rounds differently from a
call per series (tests/anomaly/test_fleet.py, test_fleet_kinds.py).

Supported: every streaming detector the config can name: :class:`RollingZScoreDetector`,
:class:`IsolationForestDetector` (one flattened-forest descent over the (S, W x F) windows),
the causal :class:`ReconstructionDetector` / :class:`GRUDAutoencoder`,
:class:`ForecastErrorDetector` (the recurrent states stacked, one module call); the
:class:`recurra.anomaly.ensemble.EnsembleDetector` updates each member this way.  Thresholds
``spot``, ``dspot``, ``quantile``, ``ksigma``, ``telemanom`` and ``likelihood``, and the
spatial rule.  Per-series fallbacks inside the fleet, none of them a model call: a SPOT/DSPOT
peak refits that series' tail, and the ``likelihood`` threshold advances each series'
rolling Gaussian with :func:`recurra.anomaly.likelihood.likelihood_step` (a few microseconds
of Python per series and row).  The fleet picks its batched form by the detector's error
model (:data:`FLEET_MODELS`), so a detector of another class holding one of these error
models streams through it too.

Size: about 500 lines, because the batched form of each error model (z-score tails, forest
descent, autoencoder windows, recurrent states) sits next to the batched threshold and
write-back they share; split per error model, each piece would need the fleet's stacked
state layout from another module.

Internal (``benchmarks/throughput.py`` times :class:`DetectorFleet` directly)::

    fleet = DetectorFleet(detector)                     # a fitted, streaming detector
    scores, flags = fleet.update(timestamps, values)    # (S,) datetime64, (S, F) -> (S,), (S,)
    fleet.write_back()                                  # detector.update continues from here
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl
import torch

from recurra.anomaly import likelihood as lk
from recurra.anomaly import scores as sc
from recurra.anomaly import thresholds as th
from recurra.anomaly.base import BaseDetector, Chunk, StreamState
from recurra.anomaly.baselines import (
    ForestErrors,
    IsolationForestDetector,
    RollingZScoreDetector,
    RollingZScoreErrors,
    share_out,
)
from recurra.anomaly.detectors import (
    ForecastErrorDetector,
    GRUDAutoencoder,
    OneStepErrors,
    ReconstructionDetector,
    WindowErrors,
)
from recurra.data.arrays import SeriesArrays, fleet_row
from recurra.data.schema import (
    CONTRIBUTION_PREFIX,
    IS_ANOMALY,
    SCORE,
    SERIES_ID,
    TIMESTAMP,
    RecurraError,
    SchemaError,
    check_fitted,
)
from recurra.nn.state import cat_states, split_state

__all__: list[str] = []  # internal: BaseDetector.update is the public way in
FLEET_DETECTORS = (RollingZScoreDetector, IsolationForestDetector, ReconstructionDetector,
                   GRUDAutoencoder, ForecastErrorDetector)
# the error models the fleet has a batched form of (dispatch is on the detector's error model)
FLEET_MODELS = (RollingZScoreErrors, ForestErrors, WindowErrors, OneStepErrors)
FIELDS = ("timestamps", "values", "filled", "observed", "delta", "elapsed")
SPOT_FIELDS = ("initial", "n_seen", "n_peaks", "peak_sum", "peak_square_sum", "risk",
               "threshold")
SPOT_KINDS = {name: int if name in ("n_seen", "n_peaks") else float for name in SPOT_FIELDS}
FIXED_THRESHOLDS = ("quantile", "ksigma", "telemanom")
FLEET_THRESHOLDS = ("spot", "dspot", "likelihood", *FIXED_THRESHOLDS)


@dataclass
class _Tails:
    """The last ``L`` rows of every series, stacked: the fields of :class:`Chunk` with a
    leading series axis (timestamps, elapsed: (S, L); values ... delta: (S, L, F))."""

    timestamps: np.ndarray
    values: np.ndarray
    filled: np.ndarray
    observed: np.ndarray
    delta: np.ndarray
    elapsed: np.ndarray

    def appended(self, row: Chunk) -> _Tails:
        """Tails with one new row per series (``row`` fields have length S) at the end."""
        return _Tails(*(np.concatenate([getattr(self, f), getattr(row, f)[:, None]], axis=1)
                        for f in FIELDS))

    def last(self, n_rows: int) -> _Tails:
        return _Tails(*(getattr(self, f)[:, -n_rows:] if n_rows else getattr(self, f)[:, :0]
                        for f in FIELDS))


def advance(detector: BaseDetector, new_rows: Any) -> tuple[pl.DataFrame, str]:
    """``detector.update(new_rows)``: the scores of the new rows (sorted by series and
    time) and the path taken (``"fleet: S series x K steps"`` per group, ``"update: M
    series (why)"`` for the per-series path, joined by ``"; "``)."""
    series = detector._new_arrays(new_rows)   # checked before any state moves
    if not series:
        return detector._scores_frame([]), "update: no rows"
    refusal = fleet_refusal(detector)
    groups: dict[int, list[SeriesArrays]] = {}
    alone: dict[str, list[SeriesArrays]] = {}
    for arrays in series:
        if refusal is not None:
            alone.setdefault("no batched form", []).append(arrays)
        elif not _full_state(detector, arrays.series_id):
            alone.setdefault("no full stream state yet", []).append(arrays)
        else:
            groups.setdefault(arrays.n_steps, []).append(arrays)
    parts, paths = [], []
    for n_steps, members in sorted(groups.items()):
        if n_steps > len(members):  # K calls for S < K series: a chunk per series is fewer
            alone.setdefault("more rows than series", []).extend(members)
            continue
        parts.append(_fleet_steps(detector, members))
        paths.append(f"fleet: {len(members)} series x {n_steps} steps")
    if alone:
        rest = sorted((a for group in alone.values() for a in group), key=lambda a: a.series_id)
        parts.append(detector._scores_frame([(a.series_id, detector._advance_series(a))
                                             for a in rest]))
        reasons = ", ".join(f"{len(v)} {why}" for why, v in alone.items())
        paths.append(f"update: {len(rest)} series ({reasons})")
    frame = parts[0] if len(parts) == 1 else pl.concat(parts).sort([SERIES_ID, TIMESTAMP])
    return frame, "; ".join(paths)


def fleet_refusal(detector: BaseDetector) -> str | None:
    """Why :class:`DetectorFleet` cannot take ``detector`` (None when it can)."""
    model = getattr(detector, "error_model", None)
    if not isinstance(model, FLEET_MODELS) or not detector.streaming:
        names = [cls.__name__ for cls in FLEET_DETECTORS]
        return (f"detector ({type(detector).__name__}) must be one of {names} (a "
                "ReconstructionDetector with aggregate='causal') for DetectorFleet")
    method = detector.config.threshold.kind
    if method not in FLEET_THRESHOLDS:
        return (f"threshold ({method!r}) is not supported by DetectorFleet; use one of "
                f"{list(FLEET_THRESHOLDS)}")
    return None


def _full_state(detector: BaseDetector, series_id: str) -> bool:
    """Whether the series' stream state holds what a fleet stacks: ``tail_length`` rows and,
    for a recurrent error model, its recurrent state."""
    state = detector.state_.get(series_id)
    if state is None or state.tail is None or len(state.tail.elapsed) != detector.tail_length:
        return False
    return state.model_state is not None or not isinstance(detector.error_model, OneStepErrors)


def _fleet_steps(detector: BaseDetector, members: list[SeriesArrays]) -> pl.DataFrame:
    """Scores of S series with K new rows each, in K fleet calls; states written back."""
    ids = [a.series_id for a in members]
    fleet = DetectorFleet(detector, ids)
    stamps = np.stack([a.timestamps for a in members]).astype("datetime64[us]")  # (S, K)
    values = np.stack([np.where(a.observed, a.values, np.nan) for a in members])  # (S, K, F)
    n_series, n_steps = stamps.shape
    scores, flags = np.empty((n_series, n_steps)), np.empty((n_series, n_steps), bool)
    shares = np.empty((n_series, n_steps, len(fleet.channels_)))
    for step in range(n_steps):
        scores[:, step], flags[:, step] = fleet.update(stamps[:, step], values[:, step])
        shares[:, step] = fleet.contributions_
    fleet.write_back()
    shares = shares.reshape(n_series * n_steps, -1)
    return pl.DataFrame({
        SERIES_ID: pl.Series(np.repeat(np.array(ids, dtype=object), n_steps), dtype=pl.Utf8),
        TIMESTAMP: pl.Series(stamps.reshape(-1)).cast(pl.Datetime("us"))
        .dt.replace_time_zone("UTC"),
        SCORE: pl.Series(scores.reshape(-1), nan_to_null=True),
        IS_ANOMALY: flags.reshape(-1),
        **{CONTRIBUTION_PREFIX + c: shares[:, j] for j, c in enumerate(fleet.channels_)}})


class DetectorFleet:
    """Streaming state of one fitted detector for many series, advanced one row at a time.

    Parameters
    ----------
    detector : a fitted :class:`RollingZScoreDetector` or causal
        :class:`ReconstructionDetector` whose series all carry a streaming state (as after
        ``fit`` or ``update``).
    series_ids : the series of the fleet, in the order of the rows of ``update``'s arrays
        (default: every series seen in ``fit``, sorted).

    Attributes
    ----------
    series_ids_ : list of S series ids.  channels_ : the detector's F channels.
    """

    def __init__(self, detector: BaseDetector, series_ids: list[str] | None = None) -> None:
        check_fitted(detector, "calibration_")
        refusal = fleet_refusal(detector)
        if refusal is not None:
            raise RecurraError(refusal)
        model = detector.error_model
        self.detector = detector
        self.model = model
        self.series_ids_ = sorted(detector.calibration_) if series_ids is None \
            else list(series_ids)
        self.channels_ = tuple(detector.channels_)
        self._load_calibration()
        self._load_states()

    # building ----------------------------------------------------------------------------
    def _load_calibration(self) -> None:
        unknown = [s for s in self.series_ids_ if s not in self.detector.calibration_]
        if unknown:
            raise SchemaError(f"series_ids {unknown[:5]} were not seen in fit")
        cals = [self.detector.calibration_[s] for s in self.series_ids_]
        self.mean_ = np.stack([c.mean for c in cals]).astype(np.float64)     # (S, F)
        self.std_ = np.stack([c.std for c in cals]).astype(np.float64)
        self.time_scale_ = np.array([c.time_scale for c in cals], np.float64)  # (S,)
        self.center_ = np.array([c.center for c in cals], np.float64)
        self.spread_ = np.array([c.spread for c in cals], np.float64)
        self.fixed_threshold_ = np.array([c.threshold for c in cals], np.float64)

    def _load_states(self) -> None:
        length = self.detector.tail_length
        states = []
        for series_id in self.series_ids_:
            state = self.detector.state_.get(series_id)
            if state is None or state.tail is None or len(state.tail.elapsed) != length:
                raise RecurraError(f"series {series_id!r} has no full streaming state "
                                   f"({length} rows): fit the detector or update it first")
            states.append(state)
        self.tails_ = _Tails(*(np.stack([getattr(s.tail, f) for s in states]) for f in FIELDS))
        self.tails_.timestamps = self.tails_.timestamps.astype("datetime64[us]")
        self.last_seen_ = np.stack([s.last_seen for s in states]).astype(np.float64)
        self.last_filled_ = np.stack([s.last_filled for s in states]).astype(np.float64)
        self.smooth_ = np.array([np.nan if s.smooth is None else float(s.smooth)
                                 for s in states])
        self.n_rows_ = np.array([s.n_rows for s in states], np.int64)
        cals = [self.detector.calibration_[i] for i in self.series_ids_]
        method = self.detector.config.threshold.kind
        self.spot_ = self.recent_ = self.likelihood_ = None
        if method in ("spot", "dspot"):
            spots = [s.spot if s.spot is not None else c.spot
                     for s, c in zip(states, cals, strict=True)]
            self.spot_ = {f: np.array([getattr(p, f) for p in spots]) for f in SPOT_FIELDS}
        if method == "dspot":
            self.recent_ = np.stack([np.asarray(s.recent if s.recent is not None else c.recent,
                                                np.float64)
                                     for s, c in zip(states, cals, strict=True)])
        if method == "likelihood":
            self.likelihood_ = [s.likelihood if s.likelihood is not None else c.likelihood
                                for s, c in zip(states, cals, strict=True)]
        self.low_ = self.high_ = None
        if self.detector.config.threshold.spatial_tolerance is not None:
            n_channels = len(self.channels_)
            bounds = [(s.low, s.high) if s.high is not None else (c.low, c.high)
                      for s, c in zip(states, cals, strict=True)]
            self.low_ = np.stack([np.full(n_channels, np.inf) if low is None else low
                                  for low, _ in bounds]).astype(np.float64)
            self.high_ = np.stack([np.full(n_channels, -np.inf) if high is None else high
                                   for _, high in bounds]).astype(np.float64)
        self.model_state_ = None
        if isinstance(self.model, OneStepErrors):
            if any(s.model_state is None for s in states):
                missing = next(i for i, s in zip(self.series_ids_, states, strict=True)
                               if s.model_state is None)
                raise RecurraError(f"series {missing!r} has no recurrent state: fit the "
                                   "detector or update it first")
            self.model_state_ = (cat_states([s.model_state[0] for s in states]),
                                 np.stack([s.model_state[1] for s in states]))

    # streaming ---------------------------------------------------------------------------
    def update(self, timestamps: np.ndarray, values: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray]:
        """Score one new row of every series (the same scores as ``detector.update``).

        Parameters
        ----------
        timestamps : (S,) ``datetime64`` (UTC), each after its series' last row.
        values : (S, F) in the order of ``channels_`` (NaN = not observed).

        Returns
        -------
        scores (S,) float (NaN for an unobserved row) and is_anomaly (S,) bool;
        ``contributions_`` (S, F) holds each channel's share of the row's error.
        """
        row = self._row(timestamps, values)
        past = self.tails_
        tails = past.appended(row)
        errors = self._errors(past, tails)                                   # (S, F)
        errors = np.where(row.observed, errors, 0.0)
        self.contributions_ = sc.contributions(errors)                      # (S, F)
        count = row.observed.sum(axis=1)
        total = np.where(row.observed, errors, 0.0).sum(axis=1)
        point = np.where(count > 0, total / np.maximum(count, 1), np.nan)
        alpha = self.detector.config.smoothing
        finite = np.isfinite(point)
        smoothed = np.where(np.isfinite(self.smooth_),
                            (1 - alpha) * self.smooth_ + alpha * point, point)
        smoothed = np.where(finite, smoothed, np.nan)
        self.smooth_ = np.where(finite, smoothed, self.smooth_)
        score = (smoothed - self.center_) / self.spread_
        score, flags = self._threshold(score)
        if self.low_ is not None:
            spatial = self._spatial(row.values)
            flags = flags | spatial
            if self.likelihood_ is not None:
                score = np.where(spatial, 1.0, score)
        self.tails_ = tails.last(self.detector.tail_length)
        self.n_rows_ += 1
        return score, flags

    def _row(self, timestamps: np.ndarray, values: np.ndarray) -> Chunk:
        """The new rows as a :class:`Chunk` of S rows (one per series); advances the
        last-seen times and forward-fill values."""
        stamps, values = fleet_row(timestamps, values, self.series_ids_, self.channels_,
                                   self.tails_.timestamps[:, -1])
        observed = np.isfinite(values)
        elapsed = stamps.astype(np.int64) / 1e6 / self.time_scale_
        normalised = (np.where(observed, values, np.nan) - self.mean_) / self.std_
        delta = elapsed[:, None] - self.last_seen_
        self.last_seen_ = np.maximum(np.where(observed, elapsed[:, None], -np.inf),
                                     self.last_seen_)
        filled = np.where(observed, normalised, self.last_filled_)
        self.last_filled_ = filled
        return Chunk(stamps, normalised, filled, observed, delta, elapsed)

    def _errors(self, past: _Tails, tails: _Tails) -> np.ndarray:
        """(S, F) channel errors of the new rows (the last row of ``tails``)."""
        if isinstance(self.model, RollingZScoreErrors):
            return _zscore_last(past.values, tails.values[:, -1]) ** 2
        if isinstance(self.model, ForestErrors):
            return self._forest_errors(tails.last(self.detector.config.window))
        if isinstance(self.model, OneStepErrors):
            return self._forecast_errors(tails.last(1))
        return self._reconstruction_errors(tails.last(self.detector.config.window))

    def _forest_errors(self, windows: _Tails) -> np.ndarray:
        """The forest's anomaly score of each (W, F) window, shared out over the channels as
        :meth:`ForestErrors.errors` does."""
        filled = windows.filled
        anomaly = self.model.flat.score(filled.reshape(filled.shape[0], -1))
        return share_out(anomaly, filled)

    def _forecast_errors(self, last: _Tails) -> np.ndarray:
        """Squared error of each series' previous one-step prediction; one batched module
        call advances every recurrent state and predicts the next rows."""
        rnn_state, previous = self.model_state_
        device = self.model.net.device()
        x = torch.tensor(last.filled, dtype=torch.float32, device=device)      # (S, 1, F)
        observed = torch.tensor(last.observed, device=device)
        with torch.no_grad():
            prediction, rnn_state = self.model.net.module_(x, observed, x, rnn_state)
        prediction = prediction[:, -1].cpu().double().numpy()
        values = last.values[:, -1]
        errors = np.where(np.isfinite(previous), (np.nan_to_num(values) - previous) ** 2, 0.0)
        self.model_state_ = (rnn_state, prediction)
        return errors

    def _reconstruction_errors(self, windows: _Tails) -> np.ndarray:
        """Squared error at the last row of each (S, W, F) window, one batched module call
        (with the float32 casts of :meth:`WindowErrors.window_tensors`)."""
        inputs = windows.filled if self.model.inputs == "filled" \
            else np.nan_to_num(windows.values)
        device = self.model.net.device()
        x = torch.tensor(inputs, dtype=torch.float32, device=device)
        observed = torch.tensor(windows.observed, device=device)
        delta = torch.tensor(np.minimum(windows.delta, 1e3), dtype=torch.float32,
                             device=device)
        with torch.no_grad():
            reconstruction, _ = self.model.net.module_(x, observed, delta)
        target = windows.values[:, -1].astype(np.float32).astype(np.float64)
        return sc.masked_squared_error(target, reconstruction[:, -1].cpu().double().numpy(),
                                       windows.observed[:, -1])

    def _threshold(self, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Scores (the likelihood's for that threshold) and alarm flags (S,); threshold
        states advance as :func:`recurra.anomaly.pipeline.threshold_step` advances them."""
        method = self.detector.config.threshold.kind
        if method == "likelihood":
            out = np.full(score.shape, np.nan)
            for index in range(score.size):  # per-series fallback (see the module docstring)
                values, self.likelihood_[index] = lk.likelihood_step(
                    self.likelihood_[index], score[index:index + 1])
                out[index] = values[0]
            return out, np.nan_to_num(out, nan=-np.inf) >= self.fixed_threshold_
        if self.spot_ is None:
            return score, np.nan_to_num(score, nan=-np.inf) > self.fixed_threshold_
        if method == "dspot":
            local = self.recent_.mean(axis=1)
            flags = self._spot(score - local)
            keep = np.isfinite(score) & ~flags
            if keep.any() and self.recent_.shape[1]:
                self.recent_[keep] = np.concatenate(
                    [self.recent_[keep, 1:], score[keep, None]], axis=1)
            return score, flags
        return score, self._spot(score)

    def _spot(self, score: np.ndarray) -> np.ndarray:
        """SPOT flags (S,) of one value per series, states advanced (:func:`th.spot_step`)."""
        spot = self.spot_
        finite = np.isfinite(score)
        flags = finite & (score > spot["threshold"])
        normal = finite & ~flags
        peaks = normal & (score > spot["initial"])
        spot["n_seen"][normal & ~peaks] += 1
        for index in np.nonzero(peaks)[0]:  # rare: a new excess refits the tail for one series
            _, _, state = th.spot_step(self._spot_state(index), score[index:index + 1])
            for name in SPOT_FIELDS:
                spot[name][index] = getattr(state, name)
        return flags

    def _spatial(self, values: np.ndarray) -> np.ndarray:
        """NAB's spatial rule (:func:`recurra.anomaly.scores.spatial_flags`), one row per
        series."""
        with np.errstate(invalid="ignore"):
            tolerance = self.detector.config.threshold.spatial_tolerance
            margin = tolerance * (self.high_ - self.low_)
            known = np.isfinite(self.high_) & np.isfinite(self.low_)
            outside = (values > self.high_ + margin) | (values < self.low_ - margin)
            self.high_ = np.fmax(self.high_, values)
            self.low_ = np.fmin(self.low_, values)
        return (known & outside).any(axis=1)

    def _spot_state(self, index: int) -> th.SpotState:
        return th.SpotState(**{name: SPOT_KINDS[name](self.spot_[name][index])
                               for name in SPOT_FIELDS})

    def _spot_states(self) -> list[th.SpotState]:
        """Each series' SPOT state (:meth:`_spot_state` for every index, one pass per field)."""
        values = [[SPOT_KINDS[name](v) for v in np.asarray(self.spot_[name]).tolist()]
                  for name in SPOT_FIELDS]
        return [th.SpotState(**dict(zip(SPOT_FIELDS, entry, strict=True)))
                for entry in zip(*values, strict=True)]

    # hand-back ---------------------------------------------------------------------------
    def write_back(self) -> BaseDetector:
        """Store the fleet's state in ``detector.state_`` (so ``detector.update`` goes on
        from the fleet's last row); returns the detector."""
        # one copy (and one split) per array; each series keeps views of its rows
        tails = [getattr(self.tails_, f).copy() for f in FIELDS]
        seen, filled = self.last_seen_.copy(), self.last_filled_.copy()
        recent, low, high = (None if a is None else a.copy()
                             for a in (self.recent_, self.low_, self.high_))
        smooth = [float(v) if np.isfinite(v) else None for v in self.smooth_.tolist()]
        spots = self._spot_states() if self.spot_ is not None else None
        models = None
        if self.model_state_ is not None:
            models = list(zip(split_state(self.model_state_[0]), self.model_state_[1].copy(),
                              strict=True))
        likelihood = None if self.likelihood_ is None else list(self.likelihood_)
        n_rows = self.n_rows_.tolist()
        for index, series_id in enumerate(self.series_ids_):
            previous = self.detector.state_.get(series_id) or StreamState()
            self.detector.state_[series_id] = StreamState(
                tail=Chunk(*(t[index] for t in tails)), last_seen=seen[index],
                last_filled=filled[index], smooth=smooth[index],
                spot=None if spots is None else spots[index],
                model_state=previous.model_state if models is None else models[index],
                recent=None if recent is None else recent[index],
                likelihood=None if likelihood is None else likelihood[index],
                low=None if low is None else low[index],
                high=None if high is None else high[index],
                n_rows=n_rows[index], extra=previous.extra)
        return self.detector


def _zscore_last(past: np.ndarray, values: np.ndarray) -> np.ndarray:
    """|z| of ``values`` (S, F) against the ``past`` rows (S, W, F; NaN = unobserved), as
    :func:`recurra.anomaly.scores.rolling_zscore` computes it for the last row of a series."""
    count = np.sum(np.isfinite(past), axis=1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        mean = np.nan_to_num(np.nanmean(past, axis=1))
        std = np.nan_to_num(np.nanstd(past, axis=1))
    floor = 1e-6 * np.maximum(np.abs(mean), 1.0)
    z = np.abs(np.nan_to_num(values) - mean) / np.maximum(std, floor)
    return np.where(np.isfinite(values) & (count >= 2), z, 0.0)


def fleet_arrays(frame: Any, series_ids: list[str], channels: tuple[str, ...]
                 ) -> tuple[np.ndarray, np.ndarray]:
    """(S,) timestamps and (S, F) values of a frame holding exactly one row per series (in
    ``series_ids`` order) and channel; a missing channel is NaN."""
    import polars as pl

    from recurra.data.schema import CHANNEL, SERIES_ID, TIMESTAMP, VALUE, validate_frame

    frame = validate_frame(frame, name="new rows")
    stamps = frame.group_by(SERIES_ID).agg(pl.col(TIMESTAMP).min().alias("t"),
                                           pl.col(TIMESTAMP).n_unique().alias("n"))
    if stamps["n"].max() != 1 or stamps.height != len(series_ids):
        raise SchemaError(f"new rows: need exactly one timestamp for each of the "
                          f"{len(series_ids)} series (got {stamps.height} series)")
    order = pl.DataFrame({SERIES_ID: series_ids})
    stamps = order.join(stamps, on=SERIES_ID, how="left")
    if stamps["t"].null_count():
        raise SchemaError("new rows: series missing from the frame: "
                          f"{stamps.filter(pl.col('t').is_null())[SERIES_ID].to_list()[:5]}")
    wide = frame.pivot(on=CHANNEL, index=SERIES_ID, values=VALUE)
    wide = order.join(wide, on=SERIES_ID, how="left")
    values = np.column_stack([wide[c].cast(pl.Float64).fill_null(np.nan).to_numpy()
                              if c in wide.columns else np.full(len(series_ids), np.nan)
                              for c in channels])
    return stamps["t"].dt.replace_time_zone(None).to_numpy().astype("datetime64[us]"), values
