"""Adaptive conformal intervals (ACI, Gibbs & Candes 2021) for multi-step forecasts.

Split-conformal offsets (:mod:`recurra.forecasting.conformal`) assume the calibration residuals are
exchangeable with future ones; under drift the band over- or under-covers for good. ACI keeps,
per (horizon step h, channel c), an adaptive miscoverage level ``alpha_t`` and moves it with
every realised outcome:

    alpha_{t+1} = alpha_t + gamma * (alpha - miss_t)      miss_t = 1 if |y - y_hat| > width_t
    width_t     = Quantile(seed scores, level 1 - alpha_t)

so that the long-run miss rate tends to ``alpha`` whatever the drift (their Prop. 4.1:
``|mean(miss) - alpha| <= (max(alpha_1, 1 - alpha_1) + gamma) / (gamma T)``). Scores are
absolute errors of the point forecast; the seed pool is the static split-conformal residual
set (validation windows), sorted once, so an update and a width look-up are O(1) per
(step, channel). ``alpha_t <= 0`` gives the largest residual seen so far (seed or stream),
``alpha_t >= 1`` a zero width.

Feedback delay: the forecast issued at origin ``t`` for step ``h`` (0-based) has its target
``h + 1`` steps later, so at origin ``t`` only steps ``h`` of origins ``o <= t - h - 1`` are
known. :meth:`AdaptiveConformal.run` streams stride-1 windows in time order and applies
exactly those arrivals before issuing each width (no look-ahead).

>>> aci = AdaptiveConformal(AdaptiveConfig(alpha=0.2, gamma=0.005)).fit(val_abs_errors)
>>> widths = aci.run(test_abs_errors)          # (T, H, C) half-widths issued in time order
>>> lower, upper = y_hat - widths, y_hat + widths
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from recurra.data.schema import RecurraError


@dataclass(frozen=True)
class AdaptiveConfig:
    """``alpha``: target miscoverage in (0, 1) (0.2 = an 80 % band); ``gamma``: step size in
    (0, 1] of the alpha update (Gibbs & Candes use 0.005)."""

    alpha: float = 0.2
    gamma: float = 0.005

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise RecurraError(f"alpha ({self.alpha}) must be in (0, 1)")
        if not 0.0 < self.gamma <= 1.0:
            raise RecurraError(f"gamma ({self.gamma}) must be in (0, 1]")


class AdaptiveConformal:
    """Streaming ACI half-widths per (step, channel), seeded from calibration scores.

    Fitted attributes: ``sorted_`` (n, H, C) seed scores sorted along n, ``alpha_`` (H, C)
    the current levels, ``max_`` (H, C) the largest score seen, ``n_updates_`` (H, C).
    """

    def __init__(self, config: AdaptiveConfig | None = None) -> None:
        self.config = config or AdaptiveConfig()

    def fit(self, scores: np.ndarray) -> AdaptiveConformal:
        """Seed from calibration scores (n, H, C), finite and >= 0 (e.g. |y - y_hat| of the
        validation windows, the static split-conformal residuals); resets the levels."""
        scores = np.asarray(scores, np.float64)
        if scores.ndim != 3 or scores.shape[0] < 1:
            raise RecurraError(f"scores {scores.shape} must be (n >= 1, H, C)")
        if not np.isfinite(scores).all() or scores.min() < 0:
            raise RecurraError("scores must be finite and >= 0 (absolute errors)")
        self.sorted_ = np.sort(scores, axis=0)
        self.alpha_ = np.full(scores.shape[1:], self.config.alpha)
        self.max_ = self.sorted_[-1].copy()
        self.n_updates_ = np.zeros(scores.shape[1:], np.int64)
        return self

    def _check_fitted(self) -> None:
        if not hasattr(self, "sorted_"):
            raise RecurraError("AdaptiveConformal is not fitted: call fit(scores) first")

    def widths(self) -> np.ndarray:
        """Half-widths (H, C) at the current levels: the ``ceil((n + 1)(1 - alpha_t))``-th
        smallest seed score (the finite-sample conformal rank), the largest score seen when
        that rank exceeds n (alpha_t small or <= 0), 0 when ``alpha_t >= 1``."""
        self._check_fitted()
        n = self.sorted_.shape[0]
        level = np.clip(1.0 - self.alpha_, 0.0, 1.0)
        rank = np.ceil((n + 1) * level).astype(np.int64)  # 1-based, 0..n+1
        idx = np.clip(rank - 1, 0, n - 1)[None]
        width = np.take_along_axis(self.sorted_, idx, axis=0)[0]
        width = np.where(rank > n, self.max_, width)
        return np.where(self.alpha_ >= 1.0, 0.0, width)

    def update(self, scores: np.ndarray, widths: np.ndarray) -> AdaptiveConformal:
        """Feedback (H, C): realised ``scores`` of forecasts that were issued with half-widths
        ``widths``; NaN scores = nothing arrived for that (step, channel)."""
        self._check_fitted()
        scores, widths = np.asarray(scores, np.float64), np.asarray(widths, np.float64)
        if scores.shape != self.alpha_.shape or widths.shape != self.alpha_.shape:
            raise RecurraError(f"scores {scores.shape} and widths {widths.shape} must both be "
                               f"{self.alpha_.shape} (H, C)")
        arrived = np.isfinite(scores)
        miss = (scores > widths).astype(np.float64)
        step = self.config.gamma * (self.config.alpha - miss)
        self.alpha_ = np.where(arrived, self.alpha_ + step, self.alpha_)
        self.max_ = np.where(arrived, np.fmax(self.max_, scores), self.max_)
        self.n_updates_ += arrived
        return self

    def run(self, scores: np.ndarray) -> np.ndarray:
        """Stream stride-1 windows in time order; returns the half-widths (T, H, C) issued at
        each origin. ``scores`` (T, H, C): |y - y_hat| of each window; before issuing at
        origin ``t`` the step-``h`` score of origin ``t - h - 1`` arrives (delayed feedback),
        so widths[t] depends only on scores[o, h] with ``o + h + 1 <= t``. The levels carry
        on from earlier calls, but feedback of an earlier call's windows is not replayed:
        stream one contiguous sequence per call."""
        self._check_fitted()
        scores = np.asarray(scores, np.float64)
        if scores.ndim != 3 or scores.shape[1:] != self.alpha_.shape:
            raise RecurraError(f"scores {scores.shape} must be (T, {self.alpha_.shape[0]}, "
                               f"{self.alpha_.shape[1]})")
        n_steps = scores.shape[1]
        issued = np.empty_like(scores)
        steps = np.arange(n_steps)
        for t in range(scores.shape[0]):
            origin = t - steps - 1
            ok = origin >= 0
            if ok.any():
                arrived = np.full(self.alpha_.shape, np.nan)
                used = np.zeros(self.alpha_.shape)
                arrived[ok] = scores[origin[ok], steps[ok]]
                used[ok] = issued[origin[ok], steps[ok]]
                self.update(arrived, used)
            issued[t] = self.widths()
        return issued


class AdaptiveForecastIntervals:
    """ACI inside a streaming forecaster: one global :class:`AdaptiveConformal` over all
    series (per step x channel, scores in each series' scaled units) plus the forecast
    last issued per series, so that observed rows can be scored against it.

    Each series keeps its last ``N`` issued forecasts (``N`` = the horizon), oldest first,
    so that a forecaster predicting after every new row gets step-h feedback for the
    forecast issued h rows earlier, for every h (one ACI update per step per row, as in
    Gibbs & Candes' multi-step use). Each remembered (step, channel) feeds the ACI update at
    most once; a forecast is forgotten once nothing of it can still arrive. Fitted
    attributes: ``aci_`` and ``issued_`` ({series_id: [{"timestamps" (N,) int64 us,
    "point" (N, O) original units, "widths" (N, O) scaled, "scale" (O,), "pending" (N, O)
    bool}, ...]}).
    """

    def __init__(self, config: AdaptiveConfig | None = None) -> None:
        self.config = config or AdaptiveConfig()

    def fit(self, scores: np.ndarray) -> AdaptiveForecastIntervals:
        """Seed from validation scores (n, H, C) (see :meth:`AdaptiveConformal.fit`)."""
        self.aci_ = AdaptiveConformal(self.config).fit(scores)
        self.issued_: dict[str, list[dict[str, np.ndarray]]] = {}
        return self

    def half_widths(self, steps: int) -> np.ndarray:
        """Current half-widths (steps, C) in scaled units."""
        return self.aci_.widths()[:steps]

    def issue(self, series_id: str, timestamps: np.ndarray, point: np.ndarray,
              scale: np.ndarray, widths: np.ndarray) -> None:
        """Remember a forecast: ``timestamps`` (N,) datetime64, ``point`` (N, O) in original
        units, ``scale`` (O,) the series' target scale, ``widths`` (N, O) scaled units."""
        queue = self.issued_.setdefault(series_id, [])
        stamps = np.asarray(timestamps, "datetime64[us]").astype(np.int64)
        if queue and queue[-1]["timestamps"][0] == stamps[0]:
            queue.pop()  # the same origin forecast again: it replaces the earlier one
        queue.append({
            "timestamps": stamps,
            "point": np.asarray(point, np.float64).copy(),
            "widths": np.asarray(widths, np.float64).copy(),
            "scale": np.asarray(scale, np.float64).copy(),
            "pending": np.ones(np.shape(point), bool)})
        del queue[:-len(queue[-1]["timestamps"])]  # at most one forecast per horizon step

    def observe(self, series_id: str, timestamps: np.ndarray, values: np.ndarray) -> int:
        """Feed observed target ``values`` (T, O) (NaN = missing) at ``timestamps`` (T,)
        to every remembered forecast of ``series_id`` they match (oldest first); rows
        matching nothing feed nothing. Returns the number of (step, channel) scores fed."""
        queue = self.issued_.get(series_id)
        if not queue:
            return 0
        stamps = np.asarray(timestamps, "datetime64[us]").astype(np.int64)
        values = np.asarray(values, np.float64)
        fed_total = sum(self._feed(issued, stamps, values) for issued in queue)
        if stamps.size:  # rows arrive in time order: what is older than the newest is gone
            newest = stamps.max()
            queue[:] = [issued for issued in queue if issued["pending"].any()
                        and issued["timestamps"][-1] > newest]
        return fed_total

    def _feed(self, issued: dict[str, np.ndarray], stamps: np.ndarray,
              values: np.ndarray) -> int:
        """One ACI update from the rows of ``stamps`` that match forecast ``issued``."""
        _, rows, steps = np.intersect1d(stamps, issued["timestamps"], return_indices=True)
        if not len(rows):
            return 0
        shape = self.aci_.alpha_.shape
        scores = np.full(shape, np.nan)
        widths = np.zeros(shape)
        err = np.abs(values[rows] - issued["point"][steps]) / issued["scale"]
        fed = np.isfinite(err) & issued["pending"][steps]
        scores[steps] = np.where(fed, err, np.nan)
        widths[steps] = issued["widths"][steps]
        issued["pending"][steps] &= ~fed
        self.aci_.update(scores, widths)
        return int(fed.sum())
