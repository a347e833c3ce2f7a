"""One interval calibrator for every forecaster: split-conformal offsets or adaptive
conformal (ACI) half-widths, one pool per (series, horizon step, channel), with a
scale-aware pooled fallback for series with too few residuals.

Pools. Residuals arrive with the series of each calibration window. A (series, channel)
with at least ``min_residuals`` finite residuals at every step is its own pool: its band
comes from its own residuals only, so a quiet series is not widened by a noisy one (pooling
across series made some bands of the demo ~30x too wide). A (series, channel) with fewer
falls back to the pool of its channel over every series, and when that pool is short too,
to the pool of every channel and series; :attr:`IntervalCalibrator.fallback_` says which
series did (``{series_id: {channel: "channel" | "all"}}``).

Scale-aware fallback. Before pooling, each series' residuals are divided by its scale: the
mean absolute residual of that (series, channel) over all its steps (and levels); the pooled
offsets (or ACI seeds) are multiplied back by the scale of the series that uses them. Why
this scale: a band's width follows the size of the forecast errors, not the level of the
series (prices near 4,000 with errors of 10), and the errors are what the calibrator has
for every series, even a short one (a handful of residuals estimates a mean absolute error
far better than a quantile). A series without residuals (unknown at calibration, a channel
never observed) gets the median scale of its channel. Own pools are not rescaled (divide
and multiply by the same number), so their finite-sample guarantee is exactly that of
:mod:`recurra.forecasting.conformal`; a fallback pool is exchangeable only up to the
scale estimate.

Methods (:class:`IntervalConfig`):

* ``"conformal"``: ``fit(residuals (W, N, O, Q), series)`` with ``residual_q = y -
  forecast_q``; :meth:`~IntervalCalibrator.apply` shifts each series' quantiles by its
  offsets (:func:`recurra.forecasting.conformal.pool_offsets`).
* ``"adaptive"``: ``fit(scores (W, N, O), series)`` with ``score = |y - y_hat|`` seeds one
  ACI state per (series, step, channel) (:mod:`recurra.forecasting.adaptive`); the band is
  ``y_hat +- width``; :meth:`~IntervalCalibrator.issue` remembers forecasts and
  :meth:`~IntervalCalibrator.observe` feeds realised values of a series to its own levels.

Units are the caller's (the RNN's per-series scaled units, the baselines' original ones).

Size: ~440 lines: the one calibrator of every forecaster's intervals, split-conformal and
adaptive, with its pools, the pooled fallback and the loading of older saved states in one
place.

>>> cal = IntervalCalibrator(IntervalConfig("conformal", (0.1, 0.5, 0.9))).fit(
...     residuals, series)                                   # (W, N, O, Q), (W,)
>>> bands = cal.apply(["a", "b"], bands, point)              # (S, N, O, Q) shifted
>>> cal.fallback_                                            # {"b": {"value": "channel"}}
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from recurra.data.schema import RecurraError
from recurra.forecasting import adaptive as aci
from recurra.forecasting.conformal import pool_offsets

METHODS = ("model", "conformal", "adaptive")
SOURCES = ("series", "channel", "all")  # the pool a (series, channel) uses, by code


@dataclass(frozen=True)
class IntervalConfig:
    """How quantile columns are calibrated.

    method : ``"model"`` (no calibration), ``"conformal"`` or ``"adaptive"``.
    levels : the quantile levels, strictly increasing in (0, 1); ``"adaptive"`` needs one
        symmetric pair ``(q, 1 - q)``, optionally with 0.5 (target miss rate ``2q``).
        ``None`` in a forecaster's config: the forecaster's ``quantiles``.
    min_residuals : a (series, channel) with fewer finite residuals at some step uses the
        pooled fallback (integer >= 1).
    adaptive_gamma : ACI step size in (0, 1].
    """

    SHORTHAND: ClassVar[str] = "method"  # `interval = "conformal"` in a config

    method: str = "conformal"
    levels: tuple[float, ...] | None = (0.1, 0.5, 0.9)
    min_residuals: int = 20
    adaptive_gamma: float = 0.005

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise RecurraError(f"interval method ({self.method!r}) must be one of "
                               f"{list(METHODS)}")
        if self.levels is None:  # a forecaster's part: its quantiles are the levels
            self._check_sizes()
            return
        levels = tuple(float(q) for q in self.levels)
        if not levels or any(not 0 < q < 1 for q in levels) or list(levels) != sorted(
                set(levels)):
            raise RecurraError(f"levels ({self.levels}) must be strictly increasing in (0, 1)")
        object.__setattr__(self, "levels", levels)
        self._check_sizes()
        pair = [q for q in levels if q != 0.5]
        if self.method == "adaptive" and (len(pair) != 2 or abs(sum(pair) - 1.0) > 1e-9):
            raise RecurraError(f"levels ({self.levels}) with method 'adaptive' must be one "
                               "symmetric pair (q, 1 - q), optionally with 0.5, e.g. "
                               "(0.1, 0.5, 0.9): the band is y_hat +- one adaptive width")

    def _check_sizes(self) -> None:
        if (isinstance(self.min_residuals, bool) or not isinstance(self.min_residuals, int)
                or self.min_residuals < 1):
            raise RecurraError(f"min_residuals ({self.min_residuals!r}) must be an integer "
                               ">= 1")
        if not 0.0 < self.adaptive_gamma <= 1.0:
            raise RecurraError(f"adaptive_gamma ({self.adaptive_gamma}) must be in (0, 1]")

    @property
    def aci(self) -> aci.AdaptiveConfig:
        """The ACI target miss rate (1 - outer band coverage) and step size."""
        return aci.AdaptiveConfig(1.0 - (self.levels[-1] - self.levels[0]),
                                  self.adaptive_gamma)


class IntervalCalibrator:
    """Per-series conformal / ACI pools with a pooled fallback (see the module docstring).

    Fitted attributes (plain arrays, ``S`` series, ``N`` steps, ``O`` channels):
    ``series_ids_`` (S,), ``channels_`` (O,), ``scale_`` (S, O), ``source_`` (S, O) codes
    into :data:`SOURCES`, ``default_scale_`` (O,); conformal: ``offsets_`` (S, N, O, Q),
    ``default_offsets_`` (N, O, Q) for unknown series; adaptive: ``seeds_`` (n, S, N, O)
    sorted own scores / scale (NaN-padded), ``counts_`` (S, N, O), ``pooled_`` (n', N, O),
    ``pooled_counts_`` (N, O), ``pooled_source_`` (O,), ``alpha_``, ``max_``, ``n_updates_``
    (S, N, O), the levels a new series starts from ``default_alpha_``, ``default_max_``
    (N, O), and ``issued_`` (remembered forecasts per series, see :meth:`issue`).
    """

    def __init__(self, config: IntervalConfig | None = None) -> None:
        self.config = config if config is not None else IntervalConfig()

    # fitting ---------------------------------------------------------------------------
    def fit(self, residuals: np.ndarray, series: Any,
            channels: list[str] | None = None) -> IntervalCalibrator:
        """Calibrate from ``residuals`` of windows of ``series`` (W,), NaN = missing:
        conformal (W, N, O, Q) ``y - forecast_q``, or (W, N, O, 1) / (W, N, O) ``y - y_hat``
        shared by every level; adaptive (W, N, O) ``|y - y_hat|``. ``channels``: names of
        the O channels (for :attr:`fallback_`)."""
        adaptive = self.config.method == "adaptive"
        residuals = np.asarray(residuals, np.float64)
        series = np.asarray(series).astype(str)
        if not adaptive and residuals.ndim == 3:
            residuals = residuals[..., None]
        if residuals.ndim != (3 if adaptive else 4) or series.shape != residuals.shape[:1]:
            raise RecurraError(f"residuals {residuals.shape} must be (W, N, O"
                               f"{'' if adaptive else ', Q'}) with one series per window "
                               f"(series {series.shape})")
        if not adaptive and residuals.shape[-1] not in (1, len(self.config.levels)):
            raise RecurraError(f"residuals have {residuals.shape[-1]} levels but the config "
                               f"has {len(self.config.levels)} ({self.config.levels})")
        if adaptive and (np.nanmin(residuals, initial=0.0) < 0 or np.isinf(residuals).any()):
            raise RecurraError("adaptive residuals must be absolute errors (finite, >= 0)")
        if self.config.method == "model" or not np.isfinite(residuals).any():
            raise RecurraError(f"IntervalCalibrator({self.config.method!r}) needs at least "
                               "one finite residual of a calibration window")
        full = residuals if not adaptive else residuals[..., None]          # (W, N, O, Q')
        ids, inverse = np.unique(series, return_inverse=True)
        n_channels = full.shape[2]
        self.series_ids_ = [str(s) for s in ids]
        self.channels_ = list(channels) if channels is not None else [
            str(c) for c in range(n_channels)]
        rows = [np.flatnonzero(inverse == i) for i in range(len(ids))]
        self.scale_, self.default_scale_ = _scales(full, rows)
        normalised = full / self.scale_[inverse][:, None, :, None]
        counts = np.stack([np.isfinite(full[r]).sum(axis=0).min(axis=(0, 2)) for r in rows])
        channel_counts = np.isfinite(full).sum(axis=0).min(axis=(0, 2))        # (O,)
        enough = self.config.min_residuals
        self.source_ = np.where(counts >= enough, 0, np.where(channel_counts >= enough, 1, 2)
                                ).astype(np.int64)                            # (S, O)
        everything = normalised.transpose(0, 2, 1, 3).reshape(-1, full.shape[1], 1,
                                                              full.shape[3])  # (W*O, N, 1, Q)
        if adaptive:
            self._fit_adaptive(full[..., 0], normalised[..., 0], everything[..., 0],
                               channel_counts, rows)
        else:
            self._fit_conformal(full, normalised, everything, channel_counts, rows)
        return self

    def _fit_conformal(self, full: np.ndarray, normalised: np.ndarray, everything: np.ndarray,
                       channel_counts: np.ndarray, rows: list[np.ndarray]) -> None:
        levels = self.config.levels
        pooled = np.where((channel_counts >= self.config.min_residuals)[None, :, None],
                          pool_offsets(normalised, levels),
                          pool_offsets(everything, levels))                  # (N, O, Q)
        own = np.stack([pool_offsets(full[r], levels) for r in rows])        # (S, N, O, Q)
        fallback = pooled[None] * self.scale_[:, None, :, None]
        self.offsets_ = np.where((self.source_ > 0)[:, None, :, None], fallback, own)
        self.default_offsets_ = pooled * self.default_scale_[None, :, None]

    def _fit_adaptive(self, scores: np.ndarray, normalised: np.ndarray,
                      everything: np.ndarray, channel_counts: np.ndarray,
                      rows: list[np.ndarray]) -> None:
        own = self.source_ == 0
        longest = max(len(r) for r in rows)
        seeds = np.full((longest, len(rows), *scores.shape[1:]), np.nan)
        for i, r in enumerate(rows):
            seeds[:len(r), i] = np.where(own[i][None, None], normalised[r], np.nan)
        self.seeds_ = np.sort(seeds, axis=0)
        self.counts_ = np.isfinite(self.seeds_).sum(axis=0)                  # (S, N, O)
        by_channel = channel_counts >= self.config.min_residuals
        columns = [normalised[:, :, c] if by_channel[c] else everything[:, :, 0]
                   for c in range(scores.shape[2])]                       # (n_c, N) each
        pooled = np.full((max(len(c) for c in columns), *scores.shape[1:]), np.nan)
        for c, column in enumerate(columns):
            pooled[:len(column), :, c] = column
        self.pooled_ = np.sort(pooled, axis=0)
        self.pooled_counts_ = np.isfinite(self.pooled_).sum(axis=0)            # (N, O)
        self.pooled_source_ = np.where(by_channel, 1, 2).astype(np.int64)      # (O,)
        self.alpha_ = np.full(self.counts_.shape, self.config.aci.alpha)
        self.max_ = np.where(own[:, None, :], np.nanmax(np.where(
            self.counts_ > 0, self.seeds_, -np.inf), axis=0), self._pooled_max()[None])
        self.n_updates_ = np.zeros(self.counts_.shape, np.int64)
        self.default_alpha_ = np.full(self.pooled_counts_.shape, self.config.aci.alpha)
        self.default_max_ = self._pooled_max()
        self.issued_: dict[str, list[dict[str, np.ndarray]]] = {}

    def _pooled_max(self) -> np.ndarray:
        return np.nanmax(np.where(self.pooled_counts_ > 0, self.pooled_, -np.inf), axis=0)

    # using it --------------------------------------------------------------------------
    @property
    def fallback_(self) -> dict[str, dict[str, str]]:
        """``{series_id: {channel: "channel" | "all"}}``: the (series, channel) pairs whose
        band comes from a pooled fallback (too few residuals of their own)."""
        self._check_fitted()
        return {sid: {self.channels_[c]: SOURCES[code] for c, code in enumerate(codes)
                      if code > 0}
                for sid, codes in zip(self.series_ids_, self.source_, strict=True)
                if (codes > 0).any()}

    def apply(self, series_ids: list[str], bands: np.ndarray,
              point: np.ndarray | None = None) -> np.ndarray:
        """Calibrated bands (S, N, O, Q) of ``series_ids`` (S,): conformal shifts ``bands``
        (S, N, O, Q) by each series' offsets (sorted along Q); adaptive gives ``point``
        (S, N, O) +- each series' current widths (the median level is ``point``)."""
        self._check_fitted()
        steps = bands.shape[1]
        if self.config.method == "adaptive":
            if point is None:
                raise RecurraError("apply: method 'adaptive' needs point (S, N, O)")
            signs = np.sign(np.asarray(self.config.levels) - 0.5)
            return point[..., None] + signs * self.widths(series_ids, steps)[..., None]
        return np.sort(bands + self.offsets(series_ids, steps), axis=-1)

    def offsets(self, series_ids: list[str], steps: int) -> np.ndarray:
        """Conformal offsets (S, steps, O, Q) of ``series_ids``; a series unknown to the
        calibrator gets the pooled fallback at the median scale."""
        self._check_fitted()
        known = {s: i for i, s in enumerate(self.series_ids_)}
        return np.stack([self.offsets_[known[s], :steps] if s in known
                         else self.default_offsets_[:steps] for s in series_ids]
                        ).reshape(len(series_ids), steps, *self.default_offsets_.shape[1:])

    def widths(self, series_ids: list[str], steps: int) -> np.ndarray:
        """Adaptive half-widths (S, steps, O) at each series' current levels (caller units);
        a series unknown to the calibrator gets the pooled fallback at the target level."""
        self._check_fitted()
        own = aci.aci_widths(self.seeds_, self.counts_, self.alpha_, self.max_)
        pooled = aci.aci_widths(self.pooled_[:, None], np.broadcast_to(
            self.pooled_counts_, self.alpha_.shape), self.alpha_, self.max_)
        current = np.where((self.source_ == 0)[:, None, :], own, pooled) * self.scale_[:, None]
        fresh = aci.aci_widths(self.pooled_, self.pooled_counts_, self.default_alpha_,
                               self.default_max_) * self.default_scale_
        known = {s: i for i, s in enumerate(self.series_ids_)}
        return np.stack([current[known[s], :steps] if s in known else fresh[:steps]
                         for s in series_ids]).reshape(len(series_ids), steps, -1)

    def update(self, series_id: str, scores: np.ndarray, widths: np.ndarray) -> None:
        """ACI feedback of one series: realised ``scores`` (N, O) (NaN = nothing arrived) of
        forecasts issued with half-widths ``widths`` (N, O), caller units. A series unknown
        to the calibrator is added with the pooled fallback."""
        index = self._index(series_id)
        scale = self.scale_[index]
        alpha, largest, arrived = aci.aci_update(
            self.alpha_[index], self.max_[index], np.asarray(scores, np.float64) / scale,
            np.asarray(widths, np.float64) / scale, self.config.aci)
        self.alpha_[index], self.max_[index] = alpha, largest
        self.n_updates_[index] += arrived

    def _index(self, series_id: str) -> int:
        positions = self.__dict__.get("_positions")
        if positions is None or len(positions) != len(self.series_ids_):
            positions = self._positions = {s: i for i, s in enumerate(self.series_ids_)}
        if series_id in positions:
            return positions[series_id]
        self.series_ids_ = [*self.series_ids_, series_id]
        positions[series_id] = len(self.series_ids_) - 1
        self.scale_ = np.vstack([self.scale_, self.default_scale_])
        self.source_ = np.vstack([self.source_, self.pooled_source_])
        self.seeds_ = np.concatenate([self.seeds_, np.full(
            (self.seeds_.shape[0], 1, *self.seeds_.shape[2:]), np.nan)], axis=1)
        row = (1, *self.counts_.shape[1:])  # (1, N, O): the new series
        self.counts_ = np.concatenate([self.counts_, np.zeros(row, self.counts_.dtype)])
        self.alpha_ = np.concatenate([self.alpha_, self.default_alpha_[None]])
        self.max_ = np.concatenate([self.max_, self.default_max_[None]])
        self.n_updates_ = np.concatenate([self.n_updates_, np.zeros(row, np.int64)])
        return len(self.series_ids_) - 1

    def _check_fitted(self) -> None:
        if not hasattr(self, "series_ids_"):
            raise RecurraError("IntervalCalibrator is not fitted: call fit(residuals, "
                               "series) first")

    # persistence -----------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """The fitted state as a plain dict of numpy arrays, lists and numbers."""
        self._check_fitted()
        names = ["series_ids_", "channels_", "scale_", "source_", "default_scale_"]
        if self.config.method == "adaptive":
            names += ["seeds_", "counts_", "pooled_", "pooled_counts_", "pooled_source_",
                      "alpha_", "max_", "n_updates_", "default_alpha_", "default_max_",
                      "issued_"]
        else:
            names += ["offsets_", "default_offsets_"]
        return {name.rstrip("_"): getattr(self, name) for name in names}

    @classmethod
    def from_state(cls, config: IntervalConfig, state: dict[str, Any]) -> IntervalCalibrator:
        """The calibrator :meth:`get_state` described."""
        calibrator = cls(config)
        for name, value in state.items():
            setattr(calibrator, f"{name}_", value)
        calibrator.series_ids_ = [str(s) for s in calibrator.series_ids_]
        calibrator.channels_ = list(calibrator.channels_)
        return calibrator

    @classmethod
    def pooled(cls, config: IntervalConfig, offsets: np.ndarray | None = None,
               seeds: np.ndarray | None = None, alpha: np.ndarray | None = None,
               largest: np.ndarray | None = None) -> IntervalCalibrator:
        """One pool for every series, scale 1: what models saved before per-series pools
        fitted (conformal ``offsets`` (N, O, Q); adaptive sorted ``seeds`` (n, N, O) with
        the shared levels ``alpha`` and ``largest`` (N, O) seen). Series get the pool's
        current levels when they first feed back."""
        calibrator = cls(config)
        n_channels = offsets.shape[1] if offsets is not None else seeds.shape[2]
        calibrator.series_ids_, calibrator.channels_ = [], [str(c) for c in range(n_channels)]
        calibrator.scale_ = np.ones((0, n_channels))
        calibrator.source_ = np.zeros((0, n_channels), np.int64)
        calibrator.default_scale_ = np.ones(n_channels)
        if offsets is not None:
            calibrator.offsets_ = np.zeros((0, *offsets.shape))
            calibrator.default_offsets_ = np.asarray(offsets, np.float64)
            return calibrator
        calibrator.seeds_ = np.full((1, 0, *seeds.shape[1:]), np.nan)  # no own pools
        calibrator.counts_ = np.zeros((0, *seeds.shape[1:]), np.int64)
        calibrator.pooled_ = np.asarray(seeds, np.float64)
        calibrator.pooled_counts_ = np.full(seeds.shape[1:], seeds.shape[0])
        calibrator.pooled_source_ = np.ones(n_channels, np.int64)  # per channel, all series
        calibrator.alpha_ = np.zeros((0, *seeds.shape[1:]))
        calibrator.max_ = np.zeros((0, *seeds.shape[1:]))
        calibrator.n_updates_ = np.zeros((0, *seeds.shape[1:]), np.int64)
        calibrator.default_alpha_ = np.asarray(alpha, np.float64)
        calibrator.default_max_ = np.asarray(largest, np.float64)
        calibrator.issued_ = {}
        return calibrator

    # remembered forecasts (adaptive) ---------------------------------------------------
    def issue(self, series_id: str, timestamps: np.ndarray, point: np.ndarray,
              scale: np.ndarray, widths: np.ndarray) -> None:
        """Remember a forecast of ``series_id`` for :meth:`observe`: ``timestamps`` (N,)
        datetime64, ``point`` (N, O) in original units, ``scale`` (O,) dividing original
        errors into caller units, ``widths`` (N, O) the half-widths issued (caller units).

        Each series keeps its last N forecasts (N = the horizon), so a forecaster
        predicting after every new row gets step-h feedback for the forecast issued h rows
        earlier, for every h; the same origin again replaces the earlier forecast."""
        queue = self.issued_.setdefault(series_id, [])
        stamps = np.asarray(timestamps, "datetime64[us]").astype(np.int64)
        if queue and queue[-1]["timestamps"][0] == stamps[0]:
            queue.pop()
        queue.append({
            "timestamps": stamps,
            "point": np.asarray(point, np.float64).copy(),
            "widths": np.asarray(widths, np.float64).copy(),
            "scale": np.asarray(scale, np.float64).copy(),
            "pending": np.ones(np.shape(point), bool)})
        del queue[:-len(queue[-1]["timestamps"])]  # at most one forecast per horizon step

    def observe(self, series_id: str, timestamps: np.ndarray, values: np.ndarray) -> int:
        """Feed observed ``values`` (T, O) (NaN = missing) at ``timestamps`` (T,) to every
        remembered forecast of ``series_id`` they match (oldest first; each (step, channel)
        at most once), moving that series' levels. Returns the number of scores fed."""
        queue = self.issued_.get(series_id)
        if not queue:
            return 0
        stamps = np.asarray(timestamps, "datetime64[us]").astype(np.int64)
        values = np.asarray(values, np.float64)
        fed_total = sum(self._feed(series_id, issued, stamps, values) for issued in queue)
        if stamps.size:  # rows arrive in time order: what is older than the newest is gone
            newest = stamps.max()
            queue[:] = [issued for issued in queue if issued["pending"].any()
                        and issued["timestamps"][-1] > newest]
        return fed_total

    def _feed(self, series_id: str, issued: dict[str, np.ndarray], stamps: np.ndarray,
              values: np.ndarray) -> int:
        _, rows, steps = np.intersect1d(stamps, issued["timestamps"], return_indices=True)
        if not len(rows):
            return 0
        shape = issued["point"].shape
        scores, widths = np.full(shape, np.nan), np.zeros(shape)
        err = np.abs(values[rows] - issued["point"][steps]) / issued["scale"]
        fed = np.isfinite(err) & issued["pending"][steps]
        scores[steps] = np.where(fed, err, np.nan)
        widths[steps] = issued["widths"][steps]
        issued["pending"][steps] &= ~fed
        self.update(series_id, scores, widths)
        return int(fed.sum())


def from_saved(config: IntervalConfig, state: dict[str, Any]) -> IntervalCalibrator | None:
    """The calibrator of an estimator's saved ``state``: its ``"interval"`` entry, or, for
    a model saved before per-series pools, its ``"conformal"`` offsets (N, O, Q) or its
    ``"adaptive"`` object (:class:`recurra.forecasting.adaptive.AdaptiveForecastIntervals`,
    one ACI state shared by every series) as a single pooled pool: the same bands as
    before. None when the state has no calibration."""
    if state.get("interval") is not None:
        return IntervalCalibrator.from_state(config, state["interval"])
    if state.get("conformal") is not None:
        return IntervalCalibrator.pooled(config, offsets=state["conformal"])
    old = state.get("adaptive")
    if old is None:
        return None
    pooled = IntervalCalibrator.pooled(config, seeds=old.aci_.sorted_, alpha=old.aci_.alpha_,
                                       largest=old.aci_.max_)
    for series_id, queue in getattr(old, "issued_", {}).items():
        pooled.issued_[series_id] = [dict(issued) for issued in queue]
    return pooled


def _scales(residuals: np.ndarray, rows: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per-(series, channel) scale (S, O): the mean |residual| over the series' windows,
    steps and levels of ``residuals`` (W, N, O, Q); a pair without residuals (or with only
    zeros) gets the median scale of its channel (1 when no series has one). Also returns
    that median (O,), the scale of series unknown to the calibrator."""
    magnitude = np.abs(residuals)
    total = np.stack([np.nansum(magnitude[r], axis=(0, 1, 3)) for r in rows])
    count = np.stack([np.isfinite(magnitude[r]).sum(axis=(0, 1, 3)) for r in rows])
    scale = np.where(count > 0, total / np.maximum(count, 1), np.nan)
    usable = np.isfinite(scale) & (scale > 0)
    median = np.array([np.median(scale[usable[:, c], c]) if usable[:, c].any() else 1.0
                       for c in range(scale.shape[1])])
    return np.where(usable, scale, median[None]), median
