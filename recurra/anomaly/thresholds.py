"""Pure threshold functions: quantile, k-sigma, SPOT (peaks over threshold) and telemanom.

* :func:`quantile_threshold`, :func:`ksigma_threshold` - fixed thresholds from training scores.
* SPOT (Siffer et al., KDD 2017): fit a generalised Pareto distribution (GPD) to the excesses
  over a high initial quantile ``t`` and set the alarm threshold ``z_q`` so that
  ``P(X > z_q) = risk``; streaming (:func:`spot_step`) adds new peaks and updates ``z_q``
  online.  The GPD is fitted by the method of moments from running sums, so one step is O(1).
* DSPOT (:func:`drift_init`, :func:`drift_step`): SPOT on scores minus their local mean over
  the last ``depth`` normal scores, for drifting score levels.
* Telemanom (Hundman et al., KDD 2018): :func:`nonparametric_threshold` picks
  ``eps = mean + z * std`` maximising the drop in mean and std of the errors below it per
  anomalous sequence, and :func:`prune_sequences` drops sequences whose peak is not clearly
  above the next one.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from recurra.data.schema import RecurraError


def quantile_threshold(scores: np.ndarray, level: float) -> float:
    """The ``level`` quantile of the finite training scores.

    >>> quantile_threshold(np.arange(101.), 0.99)
    99.0
    """
    if not 0.0 < level < 1.0:
        raise RecurraError(f"level ({level}) must be strictly between 0 and 1")
    finite = _finite(scores, "scores")
    return float(np.quantile(finite, level))


def ksigma_threshold(scores: np.ndarray, k: float) -> float:
    """``mean + k * std`` of the finite training scores.

    >>> ksigma_threshold(np.array([1., 3.]), 2.0)
    4.0
    """
    if k <= 0:
        raise RecurraError(f"k ({k}) must be > 0")
    finite = _finite(scores, "scores")
    return float(finite.mean() + k * finite.std())


def _finite(scores: np.ndarray, name: str) -> np.ndarray:
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)]
    if values.size == 0:
        raise RecurraError(f"{name} has no finite value: cannot set a threshold")
    return values


# SPOT ------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SpotState:
    """Everything SPOT needs to go on: the initial threshold, counts and peak moments.

    initial : t, the high quantile the peaks are measured from.
    n_seen : number of scores seen (n in the paper).
    n_peaks : number of excesses over ``initial`` kept (N_t).
    peak_sum, peak_square_sum : running sums of the excesses and their squares.
    risk : q, the target probability of exceeding the alarm threshold.
    threshold : z_q, the current alarm threshold.
    """

    initial: float
    n_seen: int
    n_peaks: int
    peak_sum: float
    peak_square_sum: float
    risk: float
    threshold: float


def gpd_moments(mean: float, variance: float) -> tuple[float, float]:
    """Method-of-moments GPD fit: ``(shape gamma, scale sigma)`` from the excesses' moments.

    ``gamma = (1 - mean^2 / var) / 2`` and ``sigma = mean (mean^2 / var + 1) / 2``; with no
    spread (var 0) the exponential (gamma 0, sigma = mean) is returned.

    >>> gpd_moments(1.0, 1.0)      # exponential excesses: gamma 0, sigma 1
    (0.0, 1.0)
    """
    if variance <= 1e-300 or mean <= 0:
        return 0.0, max(mean, 1e-12)
    ratio = mean * mean / variance
    return 0.5 * (1.0 - ratio), 0.5 * mean * (ratio + 1.0)


def spot_quantile(initial: float, gamma: float, sigma: float, risk: float, n_seen: int,
                  n_peaks: int) -> float:
    """``z_q = t + sigma / gamma * ((q n / N_t)^-gamma - 1)`` (``t - sigma log(q n / N_t)``
    when gamma is 0).

    >>> round(spot_quantile(1.0, 0.0, 1.0, 0.01, 100, 10), 6)   # 1 - log(0.1)
    3.302585
    """
    ratio = risk * n_seen / max(n_peaks, 1)
    if abs(gamma) < 1e-8:
        return float(initial - sigma * np.log(ratio))
    return float(initial + sigma / gamma * (ratio ** (-gamma) - 1.0))


def _with_threshold(state: SpotState) -> SpotState:
    if state.n_peaks == 0:
        return replace(state, threshold=state.initial)
    mean = state.peak_sum / state.n_peaks
    variance = max(state.peak_square_sum / state.n_peaks - mean * mean, 0.0)
    gamma, sigma = gpd_moments(mean, variance)
    z = spot_quantile(state.initial, gamma, sigma, state.risk, state.n_seen, state.n_peaks)
    return replace(state, threshold=max(z, state.initial))


def spot_init(scores: np.ndarray, risk: float = 1e-3, level: float = 0.98) -> SpotState:
    """Calibrate SPOT on training scores.

    Parameters
    ----------
    scores : (n,) calibration scores (finite values used).
    risk : q, target probability of a false alarm per point, in (0, 1 - level).
    level : quantile of the calibration scores used as the initial threshold t.
    """
    if not 0.0 < level < 1.0:
        raise RecurraError(f"level ({level}) must be strictly between 0 and 1")
    if not 0.0 < risk < 1.0 - level:
        raise RecurraError(f"risk ({risk}) must be in (0, 1 - level = {1.0 - level:g})")
    finite = _finite(scores, "scores")
    initial = float(np.quantile(finite, level))
    peaks = finite[finite > initial] - initial
    state = SpotState(initial, int(finite.size), int(peaks.size), float(peaks.sum()),
                      float((peaks * peaks).sum()), float(risk), initial)
    return _with_threshold(state)


def spot_step(state: SpotState, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray, SpotState]:
    """Stream scores through SPOT: alarms, the threshold used for each score, the new state.

    A score above ``z_q`` is an alarm and does not update the model; a score between ``t`` and
    ``z_q`` is a new peak and updates ``z_q``; NaN scores are skipped (no alarm, no update).

    Returns
    -------
    flags : (n,) bool, thresholds : (n,) float (the ``z_q`` each score was compared with),
    state : the state after the last score.
    """
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    flags = np.zeros(values.size, dtype=bool)
    used = np.empty(values.size)
    for i, value in enumerate(values):
        used[i] = state.threshold
        if not np.isfinite(value):
            continue
        if value > state.threshold:
            flags[i] = True
            continue
        if value > state.initial:
            excess = value - state.initial
            state = _with_threshold(replace(
                state, n_seen=state.n_seen + 1, n_peaks=state.n_peaks + 1,
                peak_sum=state.peak_sum + excess,
                peak_square_sum=state.peak_square_sum + excess * excess))
        else:
            state = replace(state, n_seen=state.n_seen + 1)
    return flags, used, state


def drift_init(scores: np.ndarray, depth: int, risk: float = 1e-3, level: float = 0.98
               ) -> tuple[SpotState, np.ndarray]:
    """DSPOT calibration: SPOT on ``x_i - mean(x_{i-depth..i-1})`` (Siffer et al. 2017).

    Returns the SPOT state of the drift-corrected scores and the last ``depth`` finite
    scores (the local model to carry into :func:`drift_step`).
    """
    if depth < 1:
        raise RecurraError(f"depth ({depth}) must be >= 1")
    finite = _finite(scores, "scores")
    if finite.size <= depth + 1:
        raise RecurraError(f"scores has {finite.size} finite values; DSPOT needs more than "
                           f"depth + 1 ({depth + 1})")
    csum = np.concatenate([[0.0], np.cumsum(finite)])
    local = (csum[depth:-1] - csum[:-depth - 1]) / depth
    corrected = finite[depth:] - local
    return spot_init(corrected, risk, level), finite[-depth:].copy()


def drift_step(state: SpotState, recent: np.ndarray, scores: np.ndarray
               ) -> tuple[np.ndarray, np.ndarray, SpotState, np.ndarray]:
    """Stream scores through DSPOT: SPOT on each score minus the mean of the last ``depth``
    normal scores; alarms do not enter the local mean.  Returns flags, the thresholds in
    score units (``z_q + local mean``), the new SPOT state and the new local window.

    >>> state, recent = drift_init(np.tile([0., 1.], 200), depth=4, risk=1e-3, level=0.9)
    >>> drift_step(state, recent, np.array([0.5, 50.0]))[0].tolist()
    [False, True]
    """
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    recent = list(np.asarray(recent, dtype=np.float64))
    depth = len(recent)
    flags = np.zeros(values.size, dtype=bool)
    used = np.empty(values.size)
    for i, value in enumerate(values):
        local = float(np.mean(recent))
        flag, limit, state = spot_step(state, np.array([value - local]))
        used[i] = limit[0] + local
        flags[i] = flag[0]
        if np.isfinite(value) and not flag[0]:
            recent = [*recent[1:], value] if depth else recent
    return flags, used, state, np.array(recent)


# Telemanom -------------------------------------------------------------------------------
def nonparametric_threshold(errors: np.ndarray, z_values: np.ndarray | None = None) -> float:
    """Telemanom's unsupervised threshold on smoothed errors.

    For each ``z``, ``eps = mu + z sigma``; the chosen ``eps`` maximises
    ``(d_mu / mu + d_sigma / sigma) / (n_sequences^2 + n_points)`` where ``d_mu``, ``d_sigma``
    are the drops in mean and std when the points above ``eps`` are removed and
    ``n_sequences`` counts their contiguous runs.  With nothing above any ``eps`` the largest
    candidate is returned.

    Parameters
    ----------
    errors : (T,) smoothed errors.
    z_values : candidate z (default 2.5, 3.0, ..., 12.0).
    """
    values = _finite(errors, "errors")
    z_values = np.arange(2.5, 12.01, 0.5) if z_values is None else np.asarray(z_values)
    mean, std = float(values.mean()), float(values.std())
    best_eps, best_score = mean + float(z_values.max()) * std, -np.inf
    if std <= 0 or mean == 0:
        return best_eps
    for z in z_values:
        eps = mean + float(z) * std
        above = values >= eps
        n_points = int(above.sum())
        if n_points == 0 or n_points == values.size:
            continue
        below = values[~above]
        n_sequences = int(np.sum(above[1:] & ~above[:-1]) + above[0])
        gain = (mean - below.mean()) / mean + (std - below.std()) / std
        score = gain / (n_sequences ** 2 + n_points)
        if score > best_score:
            best_eps, best_score = eps, score
    return float(best_eps)


def prune_sequences(errors: np.ndarray, flags: np.ndarray, min_decrease: float = 0.13
                    ) -> np.ndarray:
    """Telemanom pruning: keep only anomalous runs whose peak clearly exceeds the next one.

    The run peaks, sorted descending, get the largest normal error appended; walking down,
    ``d_i = (p_i - p_{i+1}) / p_i``; runs ranked after the last ``d_i > min_decrease`` are
    reclassified as normal.

    Examples
    --------
    >>> e = np.array([0., 10., 0., 9.5, 0., 1.])
    >>> prune_sequences(e, e > 5).tolist()     # 10 -> 9.5 is < 13 % but 9.5 -> 1 is not
    [False, True, False, True, False, False]
    >>> prune_sequences(e, e > 0.5).tolist()   # 1 -> 0 (largest normal error) is a drop
    [False, True, False, True, False, True]
    """
    errors = np.nan_to_num(np.asarray(errors, dtype=np.float64))
    flags = np.asarray(flags, dtype=bool)
    runs = _runs(flags)
    if not runs:
        return flags.copy()
    peaks = np.array([errors[start:end + 1].max() for start, end in runs])
    normal_max = float(errors[~flags].max()) if (~flags).any() else 0.0
    order = np.argsort(-peaks, kind="stable")
    ranked = np.append(peaks[order], normal_max)
    with np.errstate(divide="ignore", invalid="ignore"):
        decrease = np.where(ranked[:-1] > 0, (ranked[:-1] - ranked[1:]) / ranked[:-1], 0.0)
    significant = np.nonzero(decrease > min_decrease)[0]
    n_keep = int(significant[-1]) + 1 if significant.size else 0
    kept = np.zeros_like(flags)
    for index in order[:n_keep]:
        start, end = runs[index]
        kept[start:end + 1] = True
    return kept


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    change = np.diff(padded)
    starts = np.nonzero(change == 1)[0]
    ends = np.nonzero(change == -1)[0] - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))
