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

:func:`aci_widths` / :func:`aci_update` are the pure steps; :class:`AdaptiveConformal` runs
one pool (benchmarks), :class:`recurra.forecasting.intervals.IntervalCalibrator` one pool per
series (forecasters).

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


def aci_widths(ordered: np.ndarray, counts: np.ndarray, alpha: np.ndarray,
               largest: np.ndarray) -> np.ndarray:
    """Half-widths (...) at levels ``alpha`` (...): the ``ceil((n + 1)(1 - alpha))``-th
    smallest of the sorted seed scores ``ordered`` (n_max, ...) (NaN-padded at the end,
    ``counts`` (...) finite ones per cell), ``largest`` (...) where that rank exceeds n
    (alpha small or <= 0), 0 where ``alpha >= 1``."""
    level = np.clip(1.0 - alpha, 0.0, 1.0)
    rank = np.ceil((counts + 1) * level).astype(np.int64)  # 1-based, 0..n+1
    idx = np.clip(rank - 1, 0, np.maximum(counts - 1, 0))[None]
    ordered = np.broadcast_to(ordered, ordered.shape[:1] + np.shape(alpha))
    width = np.take_along_axis(ordered, idx, axis=0)[0]
    width = np.where(rank > counts, largest, width)
    return np.where(alpha >= 1.0, 0.0, width)


def aci_update(alpha: np.ndarray, largest: np.ndarray, scores: np.ndarray,
               widths: np.ndarray, config: AdaptiveConfig
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One ACI step: ``(alpha, largest, arrived)`` after realised ``scores`` (NaN = nothing
    arrived) of forecasts issued with half-widths ``widths`` (all the same shape)."""
    arrived = np.isfinite(scores)
    miss = (scores > widths).astype(np.float64)
    step = config.gamma * (config.alpha - miss)
    return (np.where(arrived, alpha + step, alpha),
            np.where(arrived, np.fmax(largest, scores), largest), arrived)


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
        counts = np.full(self.alpha_.shape, self.sorted_.shape[0])
        return aci_widths(self.sorted_, counts, self.alpha_, self.max_)

    def update(self, scores: np.ndarray, widths: np.ndarray) -> AdaptiveConformal:
        """Feedback (H, C): realised ``scores`` of forecasts that were issued with half-widths
        ``widths``; NaN scores = nothing arrived for that (step, channel)."""
        self._check_fitted()
        scores, widths = np.asarray(scores, np.float64), np.asarray(widths, np.float64)
        if scores.shape != self.alpha_.shape or widths.shape != self.alpha_.shape:
            raise RecurraError(f"scores {scores.shape} and widths {widths.shape} must both be "
                               f"{self.alpha_.shape} (H, C)")
        self.alpha_, self.max_, arrived = aci_update(self.alpha_, self.max_, scores, widths,
                                                     self.config)
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
    """Legacy shell: RNNForecasters saved before :mod:`recurra.forecasting.intervals` pickled
    their ACI state as this object (``aci_``: an :class:`AdaptiveConformal`, ``issued_``:
    remembered forecasts). It only unpickles; ``RNNForecaster._set_state`` maps it into an
    :class:`~recurra.forecasting.intervals.IntervalCalibrator` with one pooled pool."""
