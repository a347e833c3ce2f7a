"""Value-at-Risk backtests and volatility losses: pure array functions.

>>> hits = returns < var_99                      # violations of a 1 % VaR
>>> kupiec(hits, 0.01).pvalue, christoffersen(hits).pvalue
>>> pinball(returns, var_99, 0.01), qlike(returns ** 2, variance)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["BacktestResult", "christoffersen", "kupiec", "pinball", "qlike"]


@dataclass(frozen=True)
class BacktestResult:
    """A likelihood-ratio test: ``statistic`` (chi-square, 1 degree of freedom), ``pvalue``."""

    statistic: float
    pvalue: float


def _xlogy(x: float, y: float) -> float:
    return 0.0 if x == 0 else float(x * np.log(y))


def _chi2_1(statistic: float) -> BacktestResult:
    from scipy import stats

    statistic = max(float(statistic), 0.0)
    return BacktestResult(statistic, float(stats.chi2.sf(statistic, 1)))


def kupiec(hits: np.ndarray, level: float) -> BacktestResult:
    """Kupiec's unconditional coverage test: is the violation rate ``level``?

    hits : (N,) bool, True where the return fell below the VaR.
    """
    hits = np.asarray(hits, bool)
    n, x = hits.size, int(hits.sum())
    if n == 0:
        raise ValueError("kupiec: `hits` is empty")
    rate = x / n
    null = _xlogy(n - x, 1 - level) + _xlogy(x, level)
    alternative = _xlogy(n - x, 1 - rate) + _xlogy(x, rate)
    return _chi2_1(-2 * (null - alternative))


def christoffersen(hits: np.ndarray) -> BacktestResult:
    """Christoffersen's independence test: does a violation make the next one likelier?"""
    hits = np.asarray(hits, bool)
    if hits.size < 2:
        raise ValueError("christoffersen: `hits` needs at least 2 values")
    before, after = hits[:-1], hits[1:]
    n00 = int((~before & ~after).sum())
    n01 = int((~before & after).sum())
    n10 = int((before & ~after).sum())
    n11 = int((before & after).sum())
    pi = (n01 + n11) / (n00 + n01 + n10 + n11)
    pi0 = n01 / (n00 + n01) if n00 + n01 else 0.0
    pi1 = n11 / (n10 + n11) if n10 + n11 else 0.0
    null = _xlogy(n00 + n10, 1 - pi) + _xlogy(n01 + n11, pi)
    alternative = (_xlogy(n00, 1 - pi0) + _xlogy(n01, pi0) + _xlogy(n10, 1 - pi1)
                   + _xlogy(n11, pi1))
    return _chi2_1(-2 * (null - alternative))


def pinball(y: np.ndarray, quantile: np.ndarray, level: float) -> float:
    """Mean quantile (pinball) loss of the ``level`` quantile forecasts."""
    error = np.asarray(y, float) - np.asarray(quantile, float)
    return float(np.mean(np.maximum(level * error, (level - 1) * error)))


def qlike(squared: np.ndarray, variance: np.ndarray) -> float:
    """QLIKE loss ``mean(log h + r^2 / h)`` of variance forecasts ``h`` against squared
    returns ``r^2`` (Patton 2011: robust to the noise of the proxy; lower is better)."""
    variance = np.asarray(variance, float)
    if np.any(variance <= 0):
        raise ValueError("qlike: `variance` must be positive")
    return float(np.mean(np.log(variance) + np.asarray(squared, float) / variance))
