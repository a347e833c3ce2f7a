"""The drift statistics of many segments at once (what ``drift.drift_segments`` runs).

Segments come as ``(values, offsets)`` (segment ``i`` is ``values[offsets[i]:offsets[i +
1]]``, see :func:`segments`).  Each function equals its single-segment counterpart in
``recurra.anomaly.drift`` applied segment by segment, bit for bit on this build, because it
performs the same floating-point operations in the same order:

- reductions (means, ``ddof=1`` variances, dot products, the Bartlett-weighted sums) run on
  rows of equal length (a ``(G, n)`` block reduced along axis 1 sums each row exactly as a
  1-D array of length ``n`` is summed; a zero-padded, masked row would not);
- the FFTs run on rows of equal FFT size, zero-padded to it (as ``np.fft.rfft(x, size)``
  pads);
- ``log``, ``exp``, ``erfc`` and powers go through :mod:`math` per value (numpy's SIMD
  versions may differ in the last bit); the rest is elementwise numpy arithmetic, which is
  correctly rounded like Python's.

The Dickey-Fuller t statistics of :func:`dickey_fuller_t` use normal equations instead of a
least-squares solver, so they are close to, not equal to, ``drift.unit_root_likely``'s; they
come with a ``trusted`` mask (well conditioned and clear of the critical value), and the
caller runs the single-segment test for the rest, which makes the choices equal.

>>> values, offsets = np.array([1.0, 2.0, 3.0, 5.0, 5.0, 5.0]), np.array([0, 3, 6])
>>> block_stats(values, offsets)[0].tolist()   # segment means
[2.0, 5.0]
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import numpy as np

__all__ = ["DRIFT_INPUTS", "REFERENCE_STATS", "block_stats", "by_length", "dickey_fuller_t",
           "autocorrelations", "centring_correction", "degrees_of_freedom",
           "factors_from_autocorrelations", "long_run_factors", "mean_variance_tests",
           "reference_stats", "segment_inputs", "segments", "stale_rows", "t_upper", "take",
           "take_stats"]

DRIFT_INPUTS = ("auto", "scaled", "returns", "difference")   # what a drift test compares

CHUNK_ROWS = 512         # rows per FFT block ((512, 1024) float64 is 4 MB: faster than larger)
TRUST_MARGIN = 1e4       # t is trusted when cond(X'X) * eps * this < its relative margin


def by_length(lengths: np.ndarray) -> Iterator[tuple[int, np.ndarray]]:
    """``(length, positions)`` of each distinct value of ``lengths``, ascending."""
    if not lengths.size:
        return
    order = np.argsort(lengths, kind="stable")
    ordered = lengths[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]]).tolist()
    for start, stop in zip(starts, [*starts[1:], order.size], strict=True):
        yield int(ordered[start]), order[start:stop]


def take(values: np.ndarray, offsets: np.ndarray, rows: np.ndarray
         ) -> tuple[np.ndarray, np.ndarray]:
    """The segments ``rows`` alone, as ``(values, offsets)``."""
    lengths = np.diff(offsets)[rows]
    kept = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    index = np.repeat(offsets[rows] - kept[:-1], lengths) + np.arange(kept[-1])
    return values[index], kept


def _index(offsets: np.ndarray, rows: np.ndarray, length: int) -> np.ndarray:
    """(len(rows), length) positions of segments ``rows`` (all of that length)."""
    return offsets[rows][:, None] + np.arange(length)


def block_stats(values: np.ndarray, offsets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per segment: ``segment.mean()`` and ``segment.var(ddof=1)`` (NaN for a segment of
    fewer than 2 values; its square root is ``segment.std(ddof=1)``)."""
    n_segments = offsets.size - 1
    means, variances = np.full(n_segments, np.nan), np.full(n_segments, np.nan)
    for length, at in by_length(np.diff(offsets)):
        if length:
            block = values[_index(offsets, at, length)]
            means[at] = block.mean(axis=1)
        if length > 1:
            variances[at] = block.var(axis=1, ddof=1)
    return means, variances


def long_run_factors(values: np.ndarray, offsets: np.ndarray, bandwidths: np.ndarray
                     ) -> np.ndarray:
    """``drift.long_run_factor(segment, bandwidth)`` of every segment (``bandwidths``: one
    per segment): centred values zero-padded into ``(rows, size)`` blocks of one FFT size,
    one ``rfft``/``irfft`` along axis 1 per block, the weighted sums per bandwidth."""
    bandwidths = np.minimum(bandwidths, np.diff(offsets) - 2)
    return factors_from_autocorrelations(*autocorrelations(values, offsets, bandwidths),
                                         bandwidths)


def autocorrelations(values: np.ndarray, offsets: np.ndarray, lags: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """The autocorrelations at lags ``1..lags[i]`` of every segment (as ``(values,
    offsets)``; zeros for a constant segment, whose long-run factor is 1), as
    :func:`long_run_factors` weighs them: centred values zero-padded into ``(rows, size)``
    blocks of one FFT size, one ``rfft``/``irfft`` along axis 1 per block."""
    lengths = np.diff(offsets)
    denominators = np.zeros(lengths.size)
    deviations = np.empty_like(values)
    for length, at in by_length(lengths):
        index = _index(offsets, at, length)
        block = values[index]
        centred = block - block.mean(axis=1, keepdims=True)
        deviations[index] = centred
        denominators[at] = np.vecdot(centred, centred)   # = centred_i @ centred_i
    lags = np.maximum(np.asarray(lags, np.int64), 0)
    active = np.flatnonzero((lags >= 1) & (denominators > 0))
    out_at = np.concatenate([[0], np.cumsum(lags)]).astype(np.int64)
    out = np.zeros(out_at[-1])   # a constant segment's stay 0: its factor is 1
    size_of = {n: 1 << int(np.ceil(np.log2(2 * n))) for n in np.unique(lengths[active]).tolist()}
    sizes = np.array([size_of[n] for n in lengths[active].tolist()], np.int64)
    for size, at in by_length(sizes):
        for chunk in np.array_split(active[at], -(-at.size // CHUNK_ROWS)):
            padded = np.zeros((chunk.size, size))
            for length, inner in by_length(lengths[chunk]):
                padded[inner, :length] = deviations[_index(offsets, chunk[inner], length)]
            spectrum = np.abs(np.fft.rfft(padded, size, axis=1)) ** 2
            width = int(lags[chunk].max())
            autocovariance = np.fft.irfft(spectrum, size, axis=1)[:, 1:width + 1] / \
                denominators[chunk, None]
            for lag, inner in by_length(lags[chunk]):
                out[_index(out_at, chunk[inner], lag)] = autocovariance[inner, :lag]
    return out, out_at


def factors_from_autocorrelations(values: np.ndarray, offsets: np.ndarray,
                                  bandwidths: np.ndarray) -> np.ndarray:
    """The long-run factor ``max(1, 1 + 2 sum_k (1 - k / (bandwidth + 1)) rho_k)`` of each
    segment of :func:`autocorrelations` at its ``bandwidths[i]`` (at most its length; 1 for
    a bandwidth below 1)."""
    factors = np.ones(offsets.size - 1)
    bandwidths = np.asarray(bandwidths, np.int64)
    active = np.flatnonzero(bandwidths >= 1)
    if np.any(bandwidths[active] > np.diff(offsets)[active]):
        raise ValueError("a bandwidth exceeds the autocorrelations given for its segment")
    for bandwidth, inner in by_length(bandwidths[active]):
        rows = active[inner]
        weights = 1.0 - np.arange(1, bandwidth + 1) / (bandwidth + 1)
        weighted = np.sum(weights * values[_index(offsets, rows, bandwidth)], axis=1)
        factors[rows] = np.maximum(1.0, 1.0 + 2.0 * weighted)
    return factors


def segments(arrays: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """``(values, offsets)`` of 1-D ``arrays`` laid end to end: array ``i`` is
    ``values[offsets[i]:offsets[i + 1]]`` (the form ``drift.drift_segments`` takes)."""
    lengths = np.fromiter((np.size(a) for a in arrays), np.int64, len(arrays))
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    values = np.concatenate([np.asarray(a, np.float64).reshape(-1) for a in arrays]) \
        if arrays else np.empty(0)
    return values, offsets


def segment_inputs(values: np.ndarray, offsets: np.ndarray, on: list[str]
                   ) -> tuple[np.ndarray, np.ndarray]:
    """``drift.model_inputs`` of every segment at once: segment ``i`` of the result equals
    ``drift.model_inputs(values[offsets[i]:offsets[i + 1]], on[i])`` bit for bit (the same
    elementwise operations, one call over all segments instead of one per segment).

    >>> segment_inputs(np.array([1.0, 2.0, np.nan, 4.0, 5.0]), np.array([0, 4, 5]),
    ...                ["difference", "scaled"])[0].tolist()
    [1.0, 2.0, 5.0]
    """
    unknown = sorted(set(on) - set(DRIFT_INPUTS[1:]))
    if unknown:
        raise ValueError(f"on ({unknown[0]!r}) must be one of {list(DRIFT_INPUTS[1:])}")
    n_segments = offsets.size - 1
    owner = np.repeat(np.arange(n_segments), np.diff(offsets))
    finite = np.isfinite(values)
    values, owner = values[finite], owner[finite]
    codes = np.array([DRIFT_INPUTS.index(kind) for kind in on], np.int8)  # 1 2 3
    kind = codes[owner]
    # position k of a differenced segment holds values[k] - values[k - 1]; its first is dropped
    follows = np.zeros(owner.size, bool)
    follows[1:] = owner[1:] == owner[:-1]
    scaled = kind == DRIFT_INPUTS.index("scaled")
    include = scaled | follows
    changed = include & ~scaled
    previous = np.empty_like(values)
    previous[:1], previous[1:] = np.nan, values[:-1]
    out = values.copy()
    out[changed] = values[changed] - previous[changed]
    returns = changed & (kind == DRIFT_INPUTS.index("returns"))
    if returns.any():
        counts = np.bincount(owner, minlength=n_segments)
        positives = np.bincount(owner, weights=values > 0, minlength=n_segments)
        logged = returns & ((counts > 0) & (positives == counts))[owner]
        out[logged] = np.log(values[logged]) - np.log(previous[logged])
        relative = returns & ~logged
        before = previous[relative]
        out[relative] = (values[relative] - before) / np.where(before == 0, 1.0,
                                                               np.abs(before))
    kept = np.bincount(owner[include], minlength=n_segments)
    return out[include], np.concatenate([[0], np.cumsum(kept)]).astype(np.int64)


def _python_max(first: np.ndarray, second: np.ndarray | float) -> np.ndarray:
    """Python's ``max(first, second)`` elementwise (``first`` unless ``second`` is larger)."""
    return np.where(second > first, second, first)


def _python_min(first: np.ndarray, second: np.ndarray | float) -> np.ndarray:
    return np.where(second < first, second, first)


def _math(function, values: np.ndarray) -> np.ndarray:
    return np.array([function(value) for value in values.tolist()], np.float64)


def degrees_of_freedom(n_ref: int | np.ndarray, bandwidth: int | np.ndarray
                       ) -> float | np.ndarray:
    """The equivalent degrees of freedom of a Bartlett long-run variance over ``n_ref``
    values with ``bandwidth`` lags (Priestley: ``3 n / bandwidth``; ``n - 1`` without
    lags), at least 1: a z statistic whose variance is estimated so is compared with a
    Student t of this many degrees, not a normal.  With a 336-row reference and a 48-row
    window that is 21: a normal tail there calls p = 1e-3 about nine times as often as it
    should, and thousands of series turn that into false flags every run.

    >>> degrees_of_freedom(336, 48), degrees_of_freedom(200, 0)
    (21.0, 199.0)
    """
    n_ref, bandwidth = np.asarray(n_ref, np.float64), np.asarray(bandwidth, np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        found = np.where(bandwidth >= 1, 3.0 * n_ref / bandwidth, n_ref - 1.0)
    found = np.maximum(found, 1.0)
    return float(found) if found.ndim == 0 else found


def centring_correction(n_ref: int | np.ndarray, bandwidth: int | np.ndarray
                        ) -> float | np.ndarray:
    """``1 / (1 - (bandwidth + 1) / n_ref)`` (at most 2): the long-run factor is a weighted
    sum of autocorrelations about the reference's own mean, each lag biased down by about
    the variance of that mean, and the weights of lags ``-bandwidth..bandwidth`` sum to
    ``bandwidth + 1``; the factor times this is about unbiased.  Without it a 336-row
    reference with a 48-lag bandwidth under-states the long-run variance of an AR(1) by
    about 15 %.

    >>> round(centring_correction(336, 48), 4)
    1.1707
    """
    n_ref = np.asarray(n_ref, np.float64)
    share = (np.maximum(np.asarray(bandwidth, np.float64), 0.0) + 1.0) / np.maximum(n_ref, 1.0)
    found = 1.0 / np.maximum(1.0 - share, 0.5)
    return float(found) if found.ndim == 0 else found


def t_upper(z: float | np.ndarray, degrees: float | np.ndarray) -> float | np.ndarray:
    """``P(T > z)`` for Student's t with ``degrees`` (``scipy.special.stdtr``, imported
    here: only a run that tests drift pays for it)."""
    from scipy.special import stdtr

    found = stdtr(degrees, -np.asarray(z, np.float64))
    return float(found) if np.ndim(found) == 0 else found


REFERENCE_STATS = ("n", "mean", "std", "square_var")   # one value per segment


def reference_stats(values: np.ndarray, offsets: np.ndarray, max_bandwidth: int | np.ndarray
                    ) -> dict[str, np.ndarray | tuple[np.ndarray, np.ndarray]]:
    """What :func:`mean_variance_tests` computes of each reference segment: its size, mean,
    standard deviation (``1e-12`` when zero or undefined), the variance of its squared
    deviations (:data:`REFERENCE_STATS`), and the autocorrelations of both (``"acf"``,
    ``"square_acf"``, :func:`autocorrelations`) up to the largest bandwidth a recent window
    of ``max_bandwidth`` values can need (``min(max_bandwidth, n // 4, n - 2)``).  A
    champion's reference is fixed, so these are computed once and cached with it; the
    long-run factors of any smaller bandwidth follow without an FFT."""
    n_ref = np.diff(offsets)
    lags = np.minimum(np.minimum(max_bandwidth, n_ref // 4), n_ref - 2)
    means, variances = block_stats(values, offsets)
    stds = np.sqrt(variances)
    stds = np.where(np.isfinite(stds) & (stds > 0), stds, 1e-12)
    squares = (values - np.repeat(means, n_ref)) ** 2
    return {"n": n_ref, "mean": means, "std": stds,
            "square_var": block_stats(squares, offsets)[1],
            "acf": autocorrelations(values, offsets, lags),
            "square_acf": autocorrelations(squares, offsets, lags)}


def take_stats(stats: dict[str, Any], rows: np.ndarray) -> dict[str, Any]:
    """The :func:`reference_stats` of segments ``rows`` alone."""
    return {name: take(*column, rows) if isinstance(column, tuple) else
            np.asarray(column)[rows] for name, column in stats.items()}


def stale_rows(stats: dict[str, Any], n_recent: np.ndarray) -> np.ndarray:
    """The segments whose bandwidth (``min(n_recent, n // 4, n - 2)``) needs more
    autocorrelations than ``stats`` holds."""
    n_ref = np.asarray(stats["n"])
    wanted = np.minimum(np.minimum(n_recent, n_ref // 4), n_ref - 2)
    return np.flatnonzero(wanted > np.diff(stats["acf"][1]))


def mean_variance_tests(reference: tuple[np.ndarray, np.ndarray] | None,
                        recent: tuple[np.ndarray, np.ndarray],
                        stats: dict[str, Any] | None = None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``drift.mean_variance_test`` of each segment of ``reference`` against the same
    segment of ``recent`` (each at least 1 value): ``(statistic, pvalue, effect)``, one
    value per segment.

    ``stats``: the reference's :func:`reference_stats`, cached; when a segment's bandwidth
    needs more autocorrelations than cached (:func:`stale_rows`: the drift window was
    raised after the cache was built) they are computed again from ``reference``, which
    may be None otherwise."""
    n_recent = np.diff(recent[1])
    stale = np.arange(n_recent.size) if stats is None else stale_rows(stats, n_recent)
    if stats is None or stale.size:
        if reference is None:
            raise ValueError(f"{stale.size} segments need a bandwidth their cached "
                             "statistics lack, and no reference values were given")
        stats = reference_stats(*reference, n_recent)
    n_ref, means, stds = stats["n"], stats["mean"], stats["std"]
    bandwidths = np.minimum(np.minimum(n_recent, n_ref // 4), n_ref - 2)
    recent_means, recent_var = block_stats(*recent)
    sizes = 1 / n_recent + 1 / n_ref
    shift = (recent_means - means) / stds
    correction = centring_correction(n_ref, bandwidths)
    factor = factors_from_autocorrelations(*stats["acf"], bandwidths) * correction
    z_mean = shift / np.sqrt(factor * sizes)
    square_spread = _python_max(stats["square_var"], 1e-24) / _math(lambda s: s ** 4, stds)
    variance_recent = _python_max(np.where(n_recent > 1, recent_var, 0.0), 1e-24)
    log_ratio = _math(math.log, variance_recent / _math(lambda s: s ** 2, stds))
    square_factor = factors_from_autocorrelations(*stats["square_acf"], bandwidths) * correction
    z_variance = log_ratio / np.sqrt(square_factor * square_spread * sizes)
    degrees = degrees_of_freedom(n_ref, bandwidths)
    p_variance = t_upper(z_variance, degrees)
    p_mean = 2 * t_upper(np.abs(z_mean), degrees)
    pvalue = _python_min(1.0, 2 * _python_min(p_mean, p_variance))
    effect = _python_max(np.abs(shift), _math(math.exp, log_ratio / 2) - 1)
    return _python_max(np.abs(z_mean), z_variance), pvalue, effect


def dickey_fuller_t(values: np.ndarray, offsets: np.ndarray, critical: float
                    ) -> tuple[np.ndarray, np.ndarray]:
    """The augmented Dickey-Fuller t statistic of ``drift.unit_root_likely`` (default lags)
    of each segment (finite values, at least 20 of them), by normal equations, and whether
    it can be trusted to fall on the same side of ``critical`` as that function's."""
    n_segments = offsets.size - 1
    t_stats, trusted = np.full(n_segments, np.nan), np.zeros(n_segments, bool)
    for length, at in by_length(np.diff(offsets)):
        n_lags = min(12, int(round(length ** (1 / 3))))
        block = values[_index(offsets, at, length)]
        change = np.diff(block, axis=1)
        target = change[:, n_lags:]
        columns = [np.ones_like(target), block[:, n_lags:-1]]
        columns += [change[:, n_lags - lag:-lag] for lag in range(1, n_lags + 1)]
        design = np.stack(columns, axis=2)                              # (G, T, k)
        gram = np.matmul(design.transpose(0, 2, 1), design)
        eigen = np.abs(np.linalg.eigvalsh(gram))
        with np.errstate(divide="ignore", invalid="ignore"):
            condition = eigen.max(axis=1) / eigen.min(axis=1)
        solvable = np.isfinite(condition) & (condition * np.finfo(float).eps < 1e-4)
        if not solvable.any():
            continue
        gram, design, target = gram[solvable], design[solvable], target[solvable]
        inverse = np.linalg.inv(gram)
        moment = np.matmul(design.transpose(0, 2, 1), target[:, :, None])
        coef = np.matmul(inverse, moment)[:, :, 0]
        residual = target - np.matmul(design, coef[:, :, None])[:, :, 0]
        dof = max(target.shape[1] - design.shape[2], 1)
        sigma2 = np.vecdot(residual, residual) / dof
        variance = sigma2 * inverse[:, 1, 1]
        with np.errstate(divide="ignore", invalid="ignore"):
            t_value = coef[:, 1] / np.sqrt(variance)
        margin = np.abs(t_value - critical) / np.maximum(1.0, np.abs(t_value))
        scale = np.vecdot(target, target) / target.shape[1]
        clear = (np.isfinite(t_value) & (sigma2 > 1e-8 * scale) & (variance > 0)
                 & (condition[solvable] * np.finfo(float).eps * TRUST_MARGIN < margin))
        positions = at[solvable]
        t_stats[positions], trusted[positions] = t_value, clear
    return t_stats, trusted
