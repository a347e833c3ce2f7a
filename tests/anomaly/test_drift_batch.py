"""The batched drift statistics (``recurra.anomaly.drift_batch``) equal the single-pair
functions of ``recurra.anomaly.drift`` pair by pair: the mean-variance verdicts of the drift
fleet, the long-run factors and the ``"auto"`` input choices, on ragged, gappy pairs with the
edge cases (too few rows, constant segments, short references)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from recurra.anomaly import drift, drift_batch
from recurra.anomaly.drift import (
    drift_fleet,
    long_run_factor,
    mean_variance_test,
    resolve_input,
    resolve_inputs,
    segments,
)
from tests.anomaly.test_drift_segments import (
    KINDS,
    as_tuple,
    loop_verdicts,
    ragged_pairs,
    same,
)

CLOSE = dict(rtol=1e-12, atol=1e-14)


def edge_pairs(seed: int = 3):
    """Constant segments (exact and inexact sums, zero), short references (n_ref // 4 and
    n_ref - 2 bind the bandwidth), one-value recent windows and empty sides."""
    rng = np.random.default_rng(seed)
    shapes = [(5.0, 300, 60), (0.1, 280, 48), (0.0, 120, 40), (None, 3, 3), (None, 4, 2),
              (None, 5, 5), (None, 9, 40), (None, 33, 48), (None, 121, 48), (None, 40, 1),
              (None, 0, 40), (None, 40, 0), (None, 2, 2), (None, 1, 1)]
    pairs, on = [], {}
    for i, (constant, n_reference, n_recent) in enumerate(shapes * 4):
        if constant is None:
            path = np.cumsum(rng.normal(size=n_reference + n_recent)) if i % 3 == 0 else \
                rng.normal(size=n_reference + n_recent) + 10
        else:
            path = np.full(n_reference + n_recent, constant)
        key = (f"e{i}", "value")
        pairs.append((*key, path[:n_reference], path[n_reference:]))
        on[key] = KINDS[i // len(shapes)]
    return pairs, on


def compare(found, expected):
    assert [as_tuple(f)[:4] for f in found] == [e[:4] for e in expected]     # ids, test, on
    assert [f.drifted for f in found] == [e[-1] for e in expected]
    assert [f.threshold for f in found] == [e[-2] for e in expected]
    for column, name in ((4, "statistic"), (5, "pvalue"), (6, "effect")):
        np.testing.assert_allclose([getattr(f, name) for f in found],
                                   [e[column] for e in expected], **CLOSE)


@pytest.mark.parametrize("correction", ["bh", "none"])
@pytest.mark.parametrize("seed", [0, 4])
def test_batched_mean_variance_equals_the_loop_on_ragged_gappy_pairs(seed, correction):
    pairs, on = ragged_pairs(seed)
    expected = loop_verdicts(pairs, on, "mean_variance", correction)
    compare(drift_fleet(pairs, on=on, correction=correction), expected)
    assert any(e[-1] for e in expected)            # the case flags something
    assert any(np.isnan(e[5]) for e in expected)   # and has pairs below min_rows


@pytest.mark.parametrize("min_rows", [1, 3, 30])
@pytest.mark.parametrize("correction", ["bh", "none"])
def test_batched_mean_variance_equals_the_loop_on_edge_cases(min_rows, correction):
    pairs, on = edge_pairs()
    with warnings.catch_warnings(), np.errstate(all="ignore"):   # ddof=1 of one value
        warnings.simplefilter("ignore", RuntimeWarning)
        expected = loop_verdicts(pairs, on, "mean_variance", correction, min_rows=min_rows)
        found = drift_fleet(pairs, on=on, correction=correction, min_rows=min_rows)
    compare(found, expected)


def test_mean_variance_tests_of_one_segment_equal_mean_variance_test():
    rng = np.random.default_rng(5)
    for n_reference, n_recent in [(500, 48), (31, 30), (200, 1), (8, 7)]:
        reference, recent = rng.normal(size=n_reference), rng.normal(1, 2, size=n_recent)
        statistic, pvalue, effect = drift_batch.mean_variance_tests(segments([reference]),
                                                                   segments([recent]))
        single = mean_variance_test(reference, recent)
        assert (statistic[0], pvalue[0], effect[0]) == (single.statistic, single.pvalue,
                                                        single.effect)


def test_long_run_factors_equal_long_run_factor_per_segment():
    rng = np.random.default_rng(6)
    arrays = [rng.normal(size=int(n)).cumsum() for n in rng.integers(0, 600, 150)]
    arrays += [np.full(50, 0.1), np.zeros(20), np.ones(1), np.ones(2), np.arange(3.0)]
    bandwidths = np.array([int(b) for b in rng.integers(0, 200, len(arrays))])
    bandwidths[:10] = 10_000   # capped at n - 2
    values, offsets = segments(arrays)
    found = drift_batch.long_run_factors(values, offsets, bandwidths)
    expected = [long_run_factor(a, int(b)) if a.size else 1.0
                for a, b in zip(arrays, bandwidths, strict=True)]
    np.testing.assert_allclose(found, expected, **CLOSE)


def auto_segments(seed: int = 7):
    """Walks, stationary series, daily cycles, short and constant ones, an ill-conditioned
    level (1e6 + noise of 1e-4) and gaps: what ``"auto"`` resolves."""
    rng = np.random.default_rng(seed)
    arrays = []
    for i in range(200):
        n = int(rng.integers(0, 500))
        kind = i % 5
        if kind == 0:
            array = np.cumsum(rng.normal(size=n)) + 100
        elif kind == 1:
            array = rng.normal(size=n)
        elif kind == 2:
            array = np.sin(2 * np.pi * np.arange(n) / 24) + 0.3 * rng.normal(size=n)
        elif kind == 3:
            array = 0.95 ** np.arange(n) + np.cumsum(rng.normal(size=n)) * 0.05
        else:
            array = 1e6 + 1e-4 * rng.normal(size=n)
        array[rng.random(n) < 0.05] = np.nan
        arrays.append(array)
    return arrays + [np.full(100, 3.0), np.arange(100.0), np.ones(19), np.array([])]


def test_resolve_inputs_equals_resolve_input_per_segment():
    arrays = auto_segments()
    on = ["auto"] * (len(arrays) - 3) + ["scaled", "returns", "difference"]
    expected = [resolve_input(a[np.isfinite(a)], choice) for a, choice in zip(arrays, on,
                                                                             strict=True)]
    assert resolve_inputs(*segments(arrays), on) == expected
    assert {"difference", "scaled"} <= set(expected[:-3])


def test_untrusted_t_statistics_run_the_single_segment_test(monkeypatch):
    arrays = auto_segments(8)
    calls, single = [], drift.unit_root_likely

    def counted(values, *args, **kwargs):
        calls.append(values.size)
        return single(values, *args, **kwargs)

    expected = [resolve_input(a[np.isfinite(a)], "auto") for a in arrays]
    monkeypatch.setattr(drift, "unit_root_likely", counted)
    assert resolve_inputs(*segments(arrays), ["auto"] * len(arrays)) == expected
    assert calls                                  # the ill-conditioned levels fell back
    assert len(calls) < len(arrays) // 2          # the rest ran batched
    monkeypatch.setattr(drift_batch, "TRUST_MARGIN", np.inf)
    calls.clear()
    assert resolve_inputs(*segments(arrays), ["auto"] * len(arrays)) == expected
    assert len(calls) == sum(np.isfinite(a).sum() >= 20 for a in arrays)


def test_resolve_inputs_names_an_unknown_choice():
    with pytest.raises(ValueError, match="drift_on"):
        resolve_inputs(np.ones(3), np.array([0, 3]), ["levels"])


def _keys_on_segments(pairs, on):
    keys = [(p[0], p[1]) for p in pairs]
    reference = segments([p[2] for p in pairs])
    chosen = resolve_inputs(*reference, [on[key] for key in keys])
    return keys, chosen, reference, segments([p[3] for p in pairs])


@pytest.mark.parametrize("seed", [0, 4])
def test_cached_reference_statistics_give_the_same_verdicts(seed):
    """Statistics cached for recent windows of up to 40 values: a pair with a longer window
    (and a reference long enough to use it) recomputes its own from the reference; every
    verdict is unchanged."""
    keys, chosen, reference, recent = _keys_on_segments(*ragged_pairs(seed))
    stats = drift_batch.reference_stats(*drift_batch.segment_inputs(*reference, chosen), 40)
    found = drift.drift_segments(keys, chosen, reference, recent, reference_stats=stats)
    expected = drift.drift_segments(keys, chosen, reference, recent)
    assert all(same(as_tuple(f), as_tuple(e)) for f, e in zip(found, expected, strict=True))
    tested = ~np.isnan([e.pvalue for e in expected])
    stale = np.zeros(len(keys), bool)
    stale[drift_batch.stale_rows(stats, np.diff(drift_batch.segment_inputs(
        *recent, chosen)[1]))] = True
    assert (tested & stale).any() and (tested & ~stale).any()   # both paths ran


def test_factors_from_cached_autocorrelations_equal_long_run_factors():
    """Autocorrelations cached up to one bandwidth give the long-run factor of every
    smaller one, as computed from the values."""
    pairs, _ = ragged_pairs(2)
    values, offsets = segments([p[2][np.isfinite(p[2])] for p in pairs])
    n = np.diff(offsets)
    cached = drift_batch.autocorrelations(values, offsets, np.minimum(60, n - 2))
    for bandwidth in (1, 7, 30, 60):
        wanted = np.minimum(bandwidth, n - 2)
        np.testing.assert_array_equal(
            drift_batch.factors_from_autocorrelations(*cached, wanted),
            drift_batch.long_run_factors(values, offsets, wanted))
    assert (drift_batch.long_run_factors(values, offsets, np.minimum(30, n - 2)) > 1).any()


def test_cached_statistics_leave_the_reference_unread_when_every_window_fits():
    rng = np.random.default_rng(2)
    pairs = [(f"s{i}", "value", rng.normal(size=200) + 3 * (i % 2), rng.normal(size=60))
             for i in range(6)]
    keys, chosen, reference, recent = _keys_on_segments(pairs, dict.fromkeys(
        ((p[0], p[1]) for p in pairs), "scaled"))
    stats = drift_batch.reference_stats(*drift_batch.segment_inputs(*reference, chosen), 60)

    def unread():
        raise AssertionError("the reference values were read")

    found = drift.drift_segments(keys, chosen, unread, recent, reference_stats=stats)
    expected = drift.drift_segments(keys, chosen, reference, recent)
    assert [as_tuple(f) for f in found] == [as_tuple(e) for e in expected]
    assert sum(f.drifted for f in found) == 3                # the shifted half


def test_stale_cached_statistics_without_reference_values_are_named():
    rng = np.random.default_rng(5)
    values, offsets = segments([rng.normal(size=200), rng.normal(size=120)])
    stats = drift_batch.reference_stats(values, offsets, 10)
    with pytest.raises(ValueError, match="2 segments need a bandwidth"):
        drift_batch.mean_variance_tests(None, segments([np.ones(60), np.ones(40)]), stats)
