"""Input-drift and live-accuracy statistics: pure array functions (no I/O, no frames).

Why not a KS test on raw values
    A two-sample test of raw price levels (or any random walk) against the training window
    always fires: the level wanders by construction.  Hourly sensor values are
    autocorrelated, so a test that assumes independent draws over-states its evidence
    (the effective sample size is ``n (1 - rho) / (1 + rho)``).  And across thousands of
    series, 1 % false alarms per series is dozens of false retrains a run.

What is tested here
    - the values the model sees: standardised with the training window's mean and standard
      deviation (``"scaled"``; the tests are invariant to that affine map, and the effect is
      in its units), or their log returns / first differences for level series
      (``"returns"``, ``"difference"``); ``"auto"`` picks ``"difference"`` when an
      augmented Dickey-Fuller test on the training window cannot reject a unit root
      (:func:`unit_root_likely`), else ``"scaled"``;
    - :func:`mean_variance_test`: a shift of the mean (z test) and of the variance (log
      variance ratio), both with long-run (autocorrelation-robust) variances of the training
      window, each compared with a Student t of :func:`degrees_of_freedom` (those variances
      are estimates); the p-value is the Bonferroni minimum of the two;
    - a minimum effect size (``min_effect``, in training standard deviations: ``|mean
      shift|`` or ``|std ratio - 1|``) so a statistically clear but negligible change does
      not retrain;
    - :func:`benjamini_hochberg` across every series and channel of a run, so the expected
      share of false flags among the flagged is at most ``fdr``.

Live accuracy
    :func:`cusum_step` is a one-sided CUSUM on the ratio of live to validation MAE: per
    resolved point it accumulates ``ratio - 1 - allowance`` and alarms when the sum passes
    a threshold, so a large degradation alarms at once and a small one after a few runs,
    while single noisy points (the ratio of one absolute error to a mean one is often 2)
    drift back to zero.

Size: over 400 lines because each single-pair test sits beside the fleet entry points
(:func:`drift_fleet`, :func:`drift_segments`, :func:`resolve_inputs`) that must equal it pair
by pair; the batched arithmetic itself is in :mod:`recurra.anomaly.drift_batch`.

>>> rng = np.random.default_rng(0)
>>> reference, shifted = rng.normal(0, 1, 500), rng.normal(1, 1, 48)
>>> mean_variance_test(reference, shifted).pvalue < 1e-3
True
>>> benjamini_hochberg(np.array([0.001, 0.02, 0.9]), fdr=0.05).tolist()
[True, True, False]
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from recurra.anomaly import drift_batch
from recurra.anomaly.drift_batch import (
    DRIFT_INPUTS,
    centring_correction,
    degrees_of_freedom,
    segment_inputs,
    segments,
    t_upper,
)

__all__ = ["DRIFT_INPUTS", "DRIFT_TESTS", "ChannelDrift", "TestResult", "benjamini_hochberg",
           "centring_correction", "cusum_step", "degrees_of_freedom", "drift_fleet",
           "drift_segments", "ks_test", "mean_variance_test", "model_inputs",
           "population_stability_index", "resolve_input", "resolve_inputs", "segment_inputs",
           "segments", "t_upper", "unit_root_likely"]

DRIFT_TESTS = ("mean_variance", "ks", "psi")
PSI_THRESHOLD = 0.25
DICKEY_FULLER_5PCT = -2.86   # the 5 % critical value of the test with a constant (large n)


@dataclass(frozen=True)
class TestResult:
    """One two-sample comparison: the statistic, its p-value (NaN for PSI) and the effect."""

    statistic: float
    pvalue: float
    effect: float


@dataclass(frozen=True)
class ChannelDrift:
    """The drift verdict of one series and channel (``threshold`` is what ``drifted`` used:
    the BH-adjusted p-value cut, or the PSI limit)."""

    series_id: str
    channel: str
    test: str
    on: str
    statistic: float
    pvalue: float
    effect: float
    threshold: float
    drifted: bool


def model_inputs(values: np.ndarray, on: str) -> np.ndarray:
    """The values a drift test compares: as they are (``"scaled"``: the test standardises
    them with the reference), log returns (``"returns"``; relative differences when a value
    is not positive) or first differences (``"difference"``).  NaNs are dropped first.

    >>> model_inputs(np.array([1.0, 2.0, np.nan, 4.0]), "difference").tolist()
    [1.0, 2.0]
    """
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if on == "scaled":
        return values
    if on == "difference":
        return np.diff(values)
    if on == "returns":
        if values.size and np.all(values > 0):
            return np.diff(np.log(values))
        previous = values[:-1]
        return np.diff(values) / np.where(previous == 0, 1.0, np.abs(previous))
    raise ValueError(f"on ({on!r}) must be one of {list(DRIFT_INPUTS[1:])}")


def unit_root_likely(values: np.ndarray, critical: float = DICKEY_FULLER_5PCT,
                     n_lags: int | None = None) -> bool:
    """True when an augmented Dickey-Fuller test (constant, ``n_lags`` lagged differences,
    default ``min(12, cbrt(n))``) cannot reject a unit root at 5 %: the series behaves like a
    level (a random walk, a price), so test its differences.  The lagged differences keep a
    daily cycle from passing for a unit root.

    >>> rng = np.random.default_rng(0)
    >>> unit_root_likely(np.cumsum(rng.normal(size=500))), unit_root_likely(rng.normal(size=500))
    (True, False)
    """
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if values.size < 20:
        return False
    n_lags = min(12, int(round(values.size ** (1 / 3)))) if n_lags is None else n_lags
    change = np.diff(values)
    target = change[n_lags:]
    columns = [np.ones_like(target), values[n_lags:-1]]
    columns += [change[n_lags - lag:-lag] for lag in range(1, n_lags + 1)]
    design = np.column_stack(columns)
    coef, *_ = np.linalg.lstsq(design, target, rcond=None)
    residual = target - design @ coef
    dof = max(target.size - design.shape[1], 1)
    sigma2 = float(residual @ residual) / dof
    try:
        covariance = sigma2 * np.linalg.inv(design.T @ design)
    except np.linalg.LinAlgError:
        return False
    if sigma2 <= 0 or covariance[1, 1] <= 0:
        return False
    return bool(coef[1] / math.sqrt(covariance[1, 1]) > critical)


def resolve_input(reference: np.ndarray, on: str) -> str:
    """``on`` itself, or for ``"auto"`` the choice of :func:`unit_root_likely`."""
    if on not in DRIFT_INPUTS:
        raise ValueError(f"drift_on ({on!r}) must be one of {list(DRIFT_INPUTS)}")
    if on != "auto":
        return on
    return "difference" if unit_root_likely(reference) else "scaled"


def resolve_inputs(values: np.ndarray, offsets: np.ndarray, on: list[str]) -> list[str]:
    """:func:`resolve_input` of every segment (``values[offsets[i]:offsets[i + 1]]``, NaNs
    dropped, as ``on[i]`` takes it) at once: the Dickey-Fuller regressions of the ``"auto"``
    segments run in blocks of equal length (:func:`recurra.anomaly.drift_batch.dickey_fuller_t`);
    a segment whose batched t statistic is not clearly on one side of the critical value
    (ill-conditioned, or within rounding of it) runs :func:`unit_root_likely` itself, so the
    choices equal the per-segment ones.

    >>> walk = np.cumsum(np.random.default_rng(0).normal(size=300))
    >>> resolve_inputs(walk, np.array([0, 300, 300]), ["auto", "auto"])
    ['difference', 'scaled']
    """
    unknown = sorted(set(on) - set(DRIFT_INPUTS))
    if unknown:
        raise ValueError(f"drift_on ({unknown[0]!r}) must be one of {list(DRIFT_INPUTS)}")
    chosen = list(on)
    auto = np.array([i for i, choice in enumerate(on) if choice == "auto"], np.int64)
    if not auto.size:
        return chosen
    finite, at = drift_batch.take(values, offsets, auto)
    kept = np.isfinite(finite)
    if not kept.all():   # NaNs dropped, as unit_root_likely drops them
        owner = np.repeat(np.arange(auto.size), np.diff(at))
        finite = finite[kept]
        at = np.concatenate([[0], np.cumsum(np.bincount(owner[kept], minlength=auto.size))])
    long_enough = np.flatnonzero(np.diff(at) >= 20)
    likely = np.zeros(auto.size, bool)
    t_stats, trusted = drift_batch.dickey_fuller_t(
        *drift_batch.take(finite, at, long_enough), DICKEY_FULLER_5PCT)
    for position, t_value, clear in zip(long_enough.tolist(), t_stats.tolist(),
                                        trusted.tolist(), strict=True):
        likely[position] = t_value > DICKEY_FULLER_5PCT if clear else unit_root_likely(
            finite[at[position]:at[position + 1]])
    for position, index in enumerate(auto.tolist()):
        chosen[index] = "difference" if likely[position] else "scaled"
    return chosen


def long_run_factor(values: np.ndarray, bandwidth: int) -> float:
    """``1 + 2 sum_k (1 - k / (bandwidth + 1)) rho_k`` over lags 1..bandwidth (Bartlett
    weights; at least 1): how much autocorrelation inflates the variance of a mean of
    ``values``.  The weights keep the estimate positive; lags up to the recent window's length
    capture daily cycles, weather-like persistence and volatility clusters that a lag-1
    correction misses.

    >>> round(long_run_factor(np.random.default_rng(0).normal(size=2000), 10), 1)
    1.0
    """
    values = np.asarray(values, np.float64)
    n = values.size
    bandwidth = int(min(bandwidth, n - 2))
    centred = values - values.mean()
    denominator = float(centred @ centred)
    if bandwidth < 1 or denominator <= 0:
        return 1.0
    size = 1 << int(np.ceil(np.log2(2 * n)))
    spectrum = np.abs(np.fft.rfft(centred, size)) ** 2
    autocovariance = np.fft.irfft(spectrum, size)[1:bandwidth + 1] / denominator
    weights = 1.0 - np.arange(1, bandwidth + 1) / (bandwidth + 1)
    return float(max(1.0, 1.0 + 2.0 * np.sum(weights * autocovariance)))


def mean_variance_test(reference: np.ndarray, recent: np.ndarray) -> TestResult:
    """Shift of the mean or of the variance of ``recent`` against ``reference`` (1-D, finite).

    Mean: ``z = (mean_r - mean_ref) / (std_ref sqrt(f (1/n_r + 1/n_ref)))``.  Variance:
    ``z = log(var_r / var_ref) / se`` with ``se^2 = g var((x - mean)^2) / var_ref^2 (1/n_r +
    1/n_ref)`` (no normality assumed: heavy tails widen it), one-sided: only an increase
    counts (a calmer week, or a dry week of a rain channel, makes no model worse).  ``f``
    and ``g`` are the :func:`long_run_factor` of the reference values and of their squared
    deviations over lags up to ``n_r`` (times :func:`centring_correction`), so
    autocorrelation and volatility clusters widen the null instead of raising false alarms.
    Both z are compared with a Student t of :func:`degrees_of_freedom` (their variances are
    estimated from the reference), not with a normal.  The p-value is ``min(1, 2
    min(p_mean, p_var))``; the effect is the larger of ``|mean shift| / std_ref`` and
    ``std_r / std_ref - 1``; the statistic is the larger of ``|z_mean|`` and ``z_var``.
    """
    reference = np.asarray(reference, np.float64)
    recent = np.asarray(recent, np.float64)
    n_ref, n_recent = reference.size, recent.size
    bandwidth = min(n_recent, n_ref // 4)
    mean = float(reference.mean())
    std = float(reference.std(ddof=1))
    if not np.isfinite(std) or std <= 0:
        std = 1e-12
    sizes = 1 / n_recent + 1 / n_ref
    shift = (float(recent.mean()) - mean) / std
    lags = min(bandwidth, n_ref - 2)
    correction = centring_correction(n_ref, lags)
    z_mean = shift / math.sqrt(long_run_factor(reference, bandwidth) * correction * sizes)
    squares = (reference - mean) ** 2
    square_spread = max(float(squares.var(ddof=1)), 1e-24) / std ** 4
    variance_recent = max(float(recent.var(ddof=1)) if n_recent > 1 else 0.0, 1e-24)
    log_ratio = math.log(variance_recent / std ** 2)
    se = math.sqrt(long_run_factor(squares, bandwidth) * correction * square_spread * sizes)
    z_variance = log_ratio / se
    degrees = degrees_of_freedom(n_ref, lags)
    p_variance = t_upper(z_variance, degrees)   # one-sided: an increase
    pvalue = min(1.0, 2 * min(2 * t_upper(abs(z_mean), degrees), p_variance))
    effect = max(abs(shift), math.exp(log_ratio / 2) - 1)
    return TestResult(max(abs(z_mean), z_variance), pvalue, effect)


def ks_test(reference: np.ndarray, recent: np.ndarray) -> TestResult:
    """Two-sample Kolmogorov-Smirnov (``scipy.stats.ks_2samp``); the effect is ``D``."""
    from scipy.stats import ks_2samp

    result = ks_2samp(reference, recent)
    return TestResult(float(result.statistic), float(result.pvalue), float(result.statistic))


def population_stability_index(reference: np.ndarray, recent: np.ndarray,
                               n_bins: int = 10) -> float:
    """PSI over quantile bins of ``reference``: sum((p_r - p_ref) * ln(p_r / p_ref)).

    >>> round(population_stability_index(np.arange(100.0), np.arange(100.0)), 6)
    0.0
    """
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, n_bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.clip(np.histogram(reference, edges)[0] / reference.size, 1e-6, None)
    actual = np.clip(np.histogram(recent, edges)[0] / recent.size, 1e-6, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def benjamini_hochberg(pvalues: np.ndarray, fdr: float) -> np.ndarray:
    """Rejections of the Benjamini-Hochberg step-up procedure at false-discovery rate ``fdr``
    (NaN p-values are never rejected)."""
    pvalues = np.asarray(pvalues, np.float64)
    rejected = np.zeros(pvalues.shape, bool)
    finite = np.nonzero(np.isfinite(pvalues))[0]
    if not finite.size:
        return rejected
    order = finite[np.argsort(pvalues[finite], kind="stable")]
    limits = fdr * np.arange(1, order.size + 1) / order.size
    below = np.nonzero(pvalues[order] <= limits)[0]
    if below.size:
        rejected[order[:below[-1] + 1]] = True
    return rejected


def bh_cut(pvalues: np.ndarray, fdr: float) -> float:
    """The largest p-value Benjamini-Hochberg rejects (0.0 when none): the threshold a
    retrain reason reports."""
    rejected = benjamini_hochberg(pvalues, fdr)
    return float(np.max(np.asarray(pvalues)[rejected])) if rejected.any() else 0.0


def drift_fleet(pairs: list[tuple[str, str, np.ndarray, np.ndarray]], test: str = "mean_variance",
                on: str | dict[Any, str] = "auto", fdr: float = 0.05, min_effect: float = 0.5,
                min_rows: int = 30, correction: str = "bh",
                pvalue: float = 0.01) -> list[ChannelDrift]:
    """Drift verdicts for many (series_id, channel, reference values, recent values).

    Parameters
    ----------
    pairs : raw values in time order (NaN allowed); ``reference`` is the training window.
    test : ``"mean_variance"`` (:func:`mean_variance_test`), ``"ks"`` or ``"psi"``.
    on : what is compared (:data:`DRIFT_INPUTS`), for all, per series_id or per
        (series_id, channel).
    fdr, correction : ``"bh"`` flags by Benjamini-Hochberg across all pairs at ``fdr``;
        ``"none"`` flags each pair whose p-value is below ``pvalue``.  PSI flags above
        :data:`PSI_THRESHOLD`.
    min_effect : the smallest effect that can flag (see :func:`mean_variance_test`; KS: D).
    min_rows : a pair with fewer values on either side is reported, never flagged.
    """
    keys = [(series_id, channel) for series_id, channel, *_ in pairs]
    choices = [on.get(key, on.get(key[0], "auto")) if isinstance(on, dict) else on
               for key in keys]
    return drift_segments(keys, choices, segments([p[2] for p in pairs]),
                          segments([p[3] for p in pairs]), test=test, fdr=fdr,
                          min_effect=min_effect, min_rows=min_rows, correction=correction,
                          pvalue=pvalue)


def drift_segments(keys: list[tuple[str, str]], on: list[str],
                   reference: tuple[np.ndarray, np.ndarray]
                   | Callable[[], tuple[np.ndarray, np.ndarray]],
                   recent: tuple[np.ndarray, np.ndarray], test: str = "mean_variance",
                   fdr: float = 0.05, min_effect: float = 0.5, min_rows: int = 30,
                   correction: str = "bh", pvalue: float = 0.01,
                   reference_stats: dict[str, Any] | None = None) -> list[ChannelDrift]:
    """:func:`drift_fleet` of P (series_id, channel) ``keys`` whose values are given as
    :func:`segments` (``(values, offsets)``, pair ``i`` = ``values[offsets[i]:offsets[i +
    1]]``): the inputs of every pair are derived at once (:func:`segment_inputs`) and only
    the pairs with ``min_rows`` inputs on both sides run their test: ``"mean_variance"`` for
    all of them at once (:func:`recurra.anomaly.drift_batch.mean_variance_tests`, equal to
    :func:`mean_variance_test` pair by pair), KS and PSI pair by pair.  ``on``: per pair, as
    :func:`resolve_input` takes it (the ``"auto"`` ones resolved by :func:`resolve_inputs`).

    ``reference_stats``: the :func:`recurra.anomaly.drift_batch.reference_stats` of each
    pair's reference inputs, cached with a champion's reference; the mean-variance test then
    derives the reference inputs only if a pair needs another bandwidth, and ``reference``
    may be a function that returns the segments (called only then).  The results are the
    same as without it."""
    if test not in DRIFT_TESTS:
        raise ValueError(f"test ({test!r}) must be one of {list(DRIFT_TESTS)}")
    cached = reference_stats is not None and test == "mean_variance" and "auto" not in on
    load = reference if callable(reference) else lambda: reference
    chosen = list(on) if cached else resolve_inputs(*load(), on)
    new, new_at = segment_inputs(*recent, chosen)
    if cached:
        ref, ref_at, n_ref = None, None, np.asarray(reference_stats["n"])
    else:
        ref, ref_at = segment_inputs(*load(), chosen)
        n_ref = np.diff(ref_at)
    statistics, effects = np.zeros(len(keys)), np.zeros(len(keys))
    pvalues = np.full(len(keys), np.nan)
    enough = (n_ref >= min_rows) & (np.diff(new_at) >= min_rows)
    if test == "mean_variance":   # batched: equal to mean_variance_test pair by pair
        rows = np.flatnonzero(enough)
        recent_rows = drift_batch.take(new, new_at, rows)
        if cached:
            stats = drift_batch.take_stats(reference_stats, rows)
            stale = drift_batch.stale_rows(stats, np.diff(recent_rows[1]))
            ref_rows = drift_batch.take(*segment_inputs(*load(), chosen), rows) \
                if stale.size else None
        else:
            stats, ref_rows = None, drift_batch.take(ref, ref_at, rows)
        statistics[rows], pvalues[rows], effects[rows] = drift_batch.mean_variance_tests(
            ref_rows, recent_rows, stats)
        enough = np.zeros_like(enough)
    for i in np.nonzero(enough)[0]:
        a, b = ref[ref_at[i]:ref_at[i + 1]], new[new_at[i]:new_at[i + 1]]
        if test == "psi":
            value = population_stability_index(a, b)
            result = TestResult(value, float("nan"), value)
        else:
            result = (ks_test if test == "ks" else mean_variance_test)(a, b)
        statistics[i], pvalues[i], effects[i] = result.statistic, result.pvalue, result.effect
    if test == "psi":
        flags, threshold = statistics > PSI_THRESHOLD, PSI_THRESHOLD
    elif correction == "bh":
        flags, threshold = benjamini_hochberg(pvalues, fdr), bh_cut(pvalues, fdr)
    else:
        flags, threshold = np.nan_to_num(pvalues, nan=1.0) < pvalue, pvalue
    if test != "psi":
        flags = flags & (effects >= min_effect)
    return [ChannelDrift(series_id, channel, test, kind, statistic, p, effect, threshold, flag)
            for (series_id, channel), kind, statistic, p, effect, flag in zip(
                keys, chosen, statistics.tolist(), pvalues.tolist(), effects.tolist(),
                flags.tolist(), strict=True)]


def cusum_step(previous: float, ratio: float, allowance: float, n_points: int = 1) -> float:
    """One step of the one-sided CUSUM of live / validation MAE over ``n_points`` resolved
    points: ``max(0, previous + n_points (ratio - 1 - allowance))``; a NaN ratio (nothing
    resolved) leaves the sum unchanged.

    >>> cusum_step(0.0, 1.1, 0.5), cusum_step(0.0, 2.0, 0.5, n_points=2)
    (0.0, 1.0)
    """
    if not np.isfinite(ratio):
        return previous
    return max(0.0, previous + n_points * (ratio - 1.0 - allowance))
