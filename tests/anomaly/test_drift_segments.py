"""The drift fleet derives every pair's inputs at once (``segment_inputs``) and tests only the
pairs with enough of them: its verdicts equal a loop over the pairs, one ``model_inputs``
and one test each, on ragged, gappy pairs of every input kind."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recurra.anomaly import drift
from recurra.anomaly.drift import (
    PSI_THRESHOLD,
    benjamini_hochberg,
    bh_cut,
    drift_fleet,
    ks_test,
    mean_variance_test,
    model_inputs,
    population_stability_index,
    resolve_input,
    segment_inputs,
    segments,
)

KINDS = ("scaled", "difference", "returns", "auto")


def ragged_pairs(seed: int = 0):
    """Pairs of random lengths (0 to 400 reference rows, 0 to 80 recent) with NaN gaps,
    levels, random walks and series crossing zero; some recent windows shift."""
    rng = np.random.default_rng(seed)
    pairs, on = [], {}
    for i in range(120):
        n_reference, n_recent = int(rng.integers(0, 400)), int(rng.integers(0, 80))
        walk = rng.random() < 0.4
        path = rng.normal(size=n_reference + n_recent)
        path = np.cumsum(path) if walk else path + (rng.choice([0.0, 10.0]))
        path[n_reference:] += rng.choice([0.0, 0.0, 3.0])
        path[rng.random(path.size) < 0.08] = np.nan
        if i % 7 == 0:
            path[: n_reference // 2] = 0.0  # zeros: the relative-difference branch of returns
        pairs.append((f"s{i // 2}", f"c{i % 2}", path[:n_reference], path[n_reference:]))
        on[(f"s{i // 2}", f"c{i % 2}")] = KINDS[i % 4]
    return pairs, on


def loop_verdicts(pairs, on, test, correction="bh", fdr=0.05, min_effect=0.5, min_rows=30,
                  pvalue=0.01):
    """The per-pair reference: the drift fleet as a loop, one pair at a time."""
    rows = []
    for series_id, channel, reference, recent in pairs:
        reference = np.asarray(reference, np.float64)
        chosen = resolve_input(reference[np.isfinite(reference)], on[(series_id, channel)])
        ref, new = model_inputs(reference, chosen), model_inputs(recent, chosen)
        if ref.size < min_rows or new.size < min_rows:
            rows.append((chosen, drift.TestResult(0.0, float("nan"), 0.0)))
        elif test == "psi":
            value = population_stability_index(ref, new)
            rows.append((chosen, drift.TestResult(value, float("nan"), value)))
        else:
            rows.append((chosen, (ks_test if test == "ks" else mean_variance_test)(ref, new)))
    pvalues = np.array([r.pvalue for _, r in rows])
    if test == "psi":
        flags, threshold = np.array([r.statistic > PSI_THRESHOLD for _, r in rows]), \
            PSI_THRESHOLD
    elif correction == "bh":
        flags, threshold = benjamini_hochberg(pvalues, fdr), bh_cut(pvalues, fdr)
    else:
        flags, threshold = np.nan_to_num(pvalues, nan=1.0) < pvalue, pvalue
    if test != "psi":
        flags = flags & (np.array([r.effect for _, r in rows]) >= min_effect)
    return [(p[0], p[1], test, chosen, r.statistic, r.pvalue, r.effect, threshold, bool(f))
            for p, (chosen, r), f in zip(pairs, rows, flags, strict=True)]


def as_tuple(verdict):
    return (verdict.series_id, verdict.channel, verdict.test, verdict.on, verdict.statistic,
            verdict.pvalue, verdict.effect, verdict.threshold, verdict.drifted)


def same(a, b) -> bool:
    return all(x == y or (isinstance(x, float) and math.isnan(x) and math.isnan(y))
               for x, y in zip(a, b, strict=True))


def test_segment_inputs_equal_model_inputs_of_each_segment():
    pairs, on = ragged_pairs(1)
    arrays = [p[2] for p in pairs] + [np.array([]), np.array([np.nan]), np.array([2.0])]
    kinds = [k if k != "auto" else "returns" for k in on.values()] + ["difference"] * 3
    values, offsets = segments(arrays)
    flat, at = segment_inputs(values, offsets, kinds)
    for i, (array, kind) in enumerate(zip(arrays, kinds, strict=True)):
        assert np.array_equal(flat[at[i]:at[i + 1]], model_inputs(array, kind))


@pytest.mark.parametrize(("test", "correction"), [("mean_variance", "bh"),
                                                  ("mean_variance", "none"), ("ks", "bh"),
                                                  ("psi", "bh")])
def test_drift_fleet_equals_a_loop_over_ragged_gappy_pairs(test, correction):
    pairs, on = ragged_pairs(0)
    expected = loop_verdicts(pairs, on, test, correction)
    found = drift_fleet(pairs, test=test, on=on, correction=correction)
    assert len(found) == len(expected)
    assert all(same(as_tuple(f), e) for f, e in zip(found, expected, strict=True))
    assert any(e[-1] for e in expected) or test == "psi"   # the case flags something


def test_an_unknown_input_kind_is_named():
    with pytest.raises(ValueError, match="drift_on"):
        drift_fleet([("a", "value", np.ones(40), np.ones(40))], on="levels")


def test_drift_by_series_gives_a_series_without_reference_no_verdict():
    import datetime as dt

    import polars as pl

    from recurra.pipelines.config import MonitoringConfig
    from recurra.pipelines.monitoring import drift_by_series

    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    rng = np.random.default_rng(2)

    def frame(series_ids, n_rows, shift, begin):
        values = rng.normal(size=len(series_ids) * n_rows) + shift
        return pl.DataFrame({
            "series_id": np.repeat(series_ids, n_rows), "channel": "value",
            "timestamp": [begin + dt.timedelta(hours=h) for h in range(n_rows)]
            * len(series_ids), "value": values, "observed": True})

    reference = frame(["a"], 300, 0.0, start)
    recent = frame(["a", "b"], 60, 4.0, start + dt.timedelta(hours=300))
    results = {r.series_id: r for r in drift_by_series(reference, recent, MonitoringConfig(),
                                                       on="scaled")}
    assert results["a"].drifted and not results["b"].drifted
    assert results["b"].statistic == 0.0 and results["b"].pvalue == 1.0
