"""Anomaly likelihood (Ahmad et al. 2017; NAB's ``AnomalyLikelihood``) as a streaming threshold.

A raw score is judged against the series' own recent past instead of a fixed calibration:

    a_t = mean of the last ``window`` raw scores            (short-term average)
    N(mu, sigma) fitted to the ``window``-averages of the last ``history`` raw scores,
        re-fitted every ``period`` scores                    (long rolling history)
    tail_t = P(A > a_t) under that Gaussian                  (upper tail only)
    log_likelihood_t = log(tail_t + 1e-10) / log(1e-10)      (NAB's log score, in [0, 1])

An alarm is ``log_likelihood >= threshold``; ``0.5`` is a tail probability of 1e-5 (NAB's
"red" level).  Because the Gaussian is re-fitted on a rolling history that keeps every score
(alarms included), a level or variance shift of the raw scores alarms when it appears and
stops alarming once it is part of the history: the normaliser adapts to non-stationary series.

That adaptation is slow when the history is long (a new regime must outweigh thousands of old
scores), so a model that cannot reconstruct the new level (an autoencoder after a permanent
level shift) keeps alarming for hundreds of rows.  With ``relearn = k`` the likelihood
*re-learns* instead: after ``k`` consecutive alarm rows its history is cut to the last ``k``
raw scores (the new regime) and the Gaussian is re-fitted on them, so a sustained change
raises one alarm run of about ``k`` rows and then becomes the norm (the role HTM's online
learning plays in NAB's detector).

Differences from NAB's implementation, all on purpose: the tail is one-sided (unusually *low*
errors are not anomalies), the standard deviation is floored at ``MIN_STD`` raw-score units
(scores here are in robust-sigma units of the training errors, not HTM's [0, 1]) and the
consecutive-alarm filter is left to the event layer (:func:`recurra.anomaly.events.alarm_onsets`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np

from recurra.data.schema import RecurraError

MIN_STD = 0.05
LOG_FLOOR = 1e-10


@dataclass(frozen=True)
class LikelihoodState:
    """What the likelihood carries from one call to the next.

    history : (<= history,) the last finite raw scores (oldest first).
    recent : (<= window,) the last finite raw scores of the short-term average.
    mean, std : the Gaussian of the short-term averages fitted at the last re-estimation.
    since_estimate : finite scores seen since that re-estimation.
    history_size, window, period : the settings (see the module docstring).
    relearn : after this many consecutive alarm rows the history restarts from the last
        ``relearn`` scores (None: never).
    level : the alarm level ``relearn`` counts against.
    run : consecutive alarm rows so far.
    """

    history: np.ndarray
    recent: np.ndarray
    mean: float
    std: float
    since_estimate: int
    history_size: int
    window: int
    period: int
    relearn: int | None = None
    level: float = 0.5
    run: int = 0


def tail_probability(value: float, mean: float, std: float) -> float:
    """``P(X > value)`` for ``X ~ N(mean, std^2)`` (the upper tail only).

    >>> tail_probability(0.0, 0.0, 1.0), round(tail_probability(2.0, 0.0, 1.0), 5)
    (0.5, 0.02275)
    """
    return 0.5 * math.erfc((value - mean) / (std * math.sqrt(2.0)))


def log_likelihood(tail: float) -> float:
    """NAB's log score ``log(tail + 1e-10) / log(1e-10)``: 0 for tail 1, 0.5 for 1e-5, ~1 at 0.

    >>> round(log_likelihood(1e-5), 6), round(log_likelihood(1.0), 6)
    (0.5, -0.0)
    """
    return math.log(tail + LOG_FLOOR) / math.log(LOG_FLOOR)


def fit_gaussian(history: np.ndarray, window: int) -> tuple[float, float]:
    """Mean and standard deviation (floored at ``MIN_STD``) of the ``window``-point moving
    averages of ``history`` (of ``history`` itself when it is shorter than ``window``).

    >>> fit_gaussian(np.array([0., 2., 0., 2., 0.]), 2)
    (1.0, 0.05)
    """
    values = np.asarray(history, dtype=np.float64)
    if values.size == 0:
        return 0.0, 1.0
    if values.size >= window:
        csum = np.concatenate([[0.0], np.cumsum(values)])
        values = (csum[window:] - csum[:-window]) / window
    return float(values.mean()), max(float(values.std()), MIN_STD)


def likelihood_init(scores: np.ndarray, history: int = 8640, window: int = 10,
                    period: int = 100, relearn: int | None = None,
                    level: float = 0.5) -> LikelihoodState:
    """Start the likelihood from calibration scores (their finite values fill the history).

    Parameters
    ----------
    scores : (n,) raw scores of the calibration rows (NaN skipped).
    history : how many past raw scores the Gaussian is fitted on.
    window : how many recent raw scores are averaged before being judged.
    period : the Gaussian is re-fitted every ``period`` scores.
    relearn : re-learn after this many consecutive alarm rows (None: never; see the module
        docstring); at most ``history``.
    level : the log-likelihood alarm level that ``relearn`` counts against.
    """
    settings = (("history", history), ("window", window), ("period", period))
    for name, value in settings + ((("relearn", relearn),) if relearn is not None else ()):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise RecurraError(f"likelihood {name} ({value!r}) must be an integer >= 1")
    if history < window:
        raise RecurraError(f"likelihood history ({history}) must be >= window ({window})")
    if relearn is not None and relearn > history:
        raise RecurraError(f"likelihood relearn ({relearn}) must be <= history ({history})")
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    values = values[np.isfinite(values)][-history:]
    mean, std = fit_gaussian(values, window)
    return LikelihoodState(values.copy(), values[-window:].copy(), mean, std, 0, history,
                           window, period, relearn, float(level), 0)


def likelihood_step(state: LikelihoodState, scores: np.ndarray
                    ) -> tuple[np.ndarray, LikelihoodState]:
    """Stream raw scores through the likelihood: their log-likelihoods and the new state.

    Chaining calls gives the same output as one call over the concatenated scores.

    Parameters
    ----------
    state : from :func:`likelihood_init` or a previous call.
    scores : (n,) raw scores in time order; a NaN gives a NaN and changes nothing.

    Returns
    -------
    (n,) log-likelihoods in [0, 1] (NaN where the score is NaN), and the state after them.

    Examples
    --------
    >>> state = likelihood_init(np.tile([0., 1.], 100), history=200, window=2, period=50)
    >>> values, _ = likelihood_step(state, np.array([0., 1., 20.]))
    >>> bool((values[:2] < 0.1).all()), bool(values[2] > 0.5)
    (True, True)
    """
    values = np.asarray(scores, dtype=np.float64).reshape(-1)
    out = np.full(values.size, np.nan)
    history, pending, recent = state.history, [], list(state.recent)
    mean, std, since = state.mean, state.std, state.since_estimate
    relearn, run = getattr(state, "relearn", None), getattr(state, "run", 0)
    for i, value in enumerate(values.tolist()):
        if not math.isfinite(value):
            continue
        pending.append(value)
        recent.append(value)
        if len(recent) > state.window:
            del recent[0]
        since += 1
        if since >= state.period:
            history = np.concatenate([history, pending])[-state.history_size:]
            pending = []
            mean, std = fit_gaussian(history, state.window)
            since = 0
        average = sum(recent) / len(recent)
        out[i] = log_likelihood(tail_probability(average, mean, std))
        if relearn is None:
            continue
        run = run + 1 if out[i] >= state.level else 0
        if run >= relearn:  # a sustained change: the new regime becomes the history
            history = np.concatenate([history, pending])[-relearn:]
            pending, since, run = [], 0, 0
            mean, std = fit_gaussian(history, state.window)
    if pending:
        history = np.concatenate([history, pending])[-state.history_size:]
    extra = {"run": run} if relearn is not None else {}
    return out, replace(state, history=history, recent=np.asarray(recent),
                        mean=mean, std=std, since_estimate=since, **extra)
