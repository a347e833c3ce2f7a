"""Live error, drift tests and the retrain decision, on tiny hand-computed frames."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from recurra.pipelines.config import MonitoringConfig
from recurra.pipelines.monitoring import (
    drift_by_series,
    drift_test,
    live_errors,
    live_rows,
    population_stability_index,
    retrain_decision,
)

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _times(n: int, start: int = 0) -> list[dt.datetime]:
    return [T0 + dt.timedelta(hours=start + i) for i in range(n)]


def test_live_errors_hand_computed_with_latest_issue_and_coverage():
    forecasts = pl.DataFrame({
        "series_id": ["a", "a", "a", "b"], "channel": ["value"] * 4,
        "issued_at": [T0, T0 + dt.timedelta(hours=1), T0, T0],
        "timestamp": [_times(1, 5)[0], _times(1, 5)[0], _times(1, 6)[0], _times(1, 5)[0]],
        "y_hat": [0.0, 2.0, 4.0, 1.0], "q10": [0.0, 1.0, 3.0, 0.0],
        "q90": [1.0, 3.0, 5.0, 2.0]})
    actuals = pl.DataFrame({
        "series_id": ["a", "a", "b"], "channel": ["value"] * 3,
        "timestamp": [_times(1, 5)[0], _times(1, 6)[0], _times(1, 5)[0]],
        "value": [3.0, 4.5, None], "observed": [True, True, False]})
    result = live_errors(forecasts, actuals)
    # a: the later issue (y_hat 2.0) counts at t5 -> |3-2| = 1, t6 -> 0.5; b unobserved: no row
    assert result["series_id"].to_list() == ["a"]
    assert result["mae"][0] == pytest.approx(0.75)
    assert result["n_points"][0] == 2
    # 3.0 is inside the later issue's [1, 3] (outside the earlier [0, 1]); 4.5 in [3, 5]
    assert result["coverage"][0] == pytest.approx(1.0)


def test_live_errors_coverage_strict():
    forecasts = pl.DataFrame({"series_id": ["a", "a"], "channel": ["value"] * 2,
                              "timestamp": _times(2), "y_hat": [0.0, 0.0],
                              "q10": [-1.0, -1.0], "q90": [1.0, 1.0]})
    actuals = pl.DataFrame({"series_id": ["a", "a"], "channel": ["value"] * 2,
                            "timestamp": _times(2), "value": [0.5, 2.0],
                            "observed": [True, True]})
    result = live_errors(forecasts, actuals)
    assert result["mae"][0] == pytest.approx(1.25)
    assert result["coverage"][0] == pytest.approx(0.5)
    assert live_errors(forecasts.head(0), actuals).is_empty()


def test_drift_test_detects_a_shift_and_not_the_same_distribution():
    rng = np.random.default_rng(0)
    config = MonitoringConfig()
    reference = rng.normal(0.0, 1.0, 500)
    assert drift_test(reference, rng.normal(3.0, 1.0, 100), config).drifted
    assert not drift_test(reference, rng.normal(0.0, 1.0, 100), config).drifted
    few = drift_test(reference, np.array([100.0] * 5), config)
    assert not few.drifted and few.pvalue == 1.0  # too few rows: no evidence
    psi = MonitoringConfig(drift_test="psi")
    assert drift_test(reference, rng.normal(3.0, 1.0, 100), psi).drifted
    assert population_stability_index(reference, reference) == pytest.approx(0.0)


def test_drift_by_series_per_channel():
    rng = np.random.default_rng(1)
    reference = pl.DataFrame({"series_id": ["a"] * 200 + ["b"] * 200,
                              "channel": ["value"] * 400, "timestamp": _times(200) * 2,
                              "value": rng.normal(0, 1, 400), "observed": [True] * 400})
    recent = pl.DataFrame({"series_id": ["a"] * 50 + ["b"] * 50, "channel": ["value"] * 100,
                           "timestamp": _times(50, 200) * 2,
                           "value": np.r_[rng.normal(5, 1, 50), rng.normal(0, 1, 50)],
                           "observed": [True] * 100})
    results = {r.series_id: r for r in drift_by_series(reference, recent, MonitoringConfig())}
    assert results["a"].drifted and not results["b"].drifted


def test_retrain_after_n_consecutive_runs_above_margin():
    config = MonitoringConfig(error_margin=1.5, consecutive_runs=3, accuracy_test="runs")
    errors = pl.DataFrame({"series_id": ["a"], "n_points": [4], "mae": [2.0],
                           "coverage": [0.5]})
    above = live_rows(errors, {"a": 1.0}, "r1", "g", 1.5, now=T0)
    assert above["above_margin"].to_list() == [True]  # 2.0 > 1.5 x 1.0
    below = live_rows(errors, {"a": 2.0}, "r1", "g", 1.5, now=T0)
    assert below["above_margin"].to_list() == [False]
    history = pl.DataFrame({"series_id": ["a"] * 4, "group": ["g"] * 4,
                            "evaluated_at": _times(4),
                            "above_margin": [False, True, True, True]})
    decision = retrain_decision("g", history, [], config)
    assert decision.retrain
    assert "live MAE above 1.5 x reference MAE for 3 consecutive runs" in decision.watch[0]
    assert "1 of 1 series (100.0%) fired" in decision.reasons[0]
    broken = history.with_columns(pl.Series("above_margin", [True, True, False, True]))
    assert not retrain_decision("g", broken, [], config).retrain
    assert not retrain_decision("other", history, [], config).retrain


def test_a_few_series_out_of_many_are_watched_not_a_reason_to_retrain():
    config = MonitoringConfig(cusum_threshold=8.0, accuracy_min_share=0.05)
    ids = [f"s{i:03d}" for i in range(100)]

    def history(n_fired: int) -> pl.DataFrame:
        return pl.DataFrame({"series_id": ids, "group": ["g"] * 100,
                             "evaluated_at": [T0] * 100,
                             "cusum": [9.0] * n_fired + [1.0] * (100 - n_fired)})

    few = retrain_decision("g", history(4), [], config)
    assert not few.retrain and len(few.watch) == 4
    assert few.watch[0] == ("series 's000': live accuracy (CUSUM test of live / reference MAE "
                            "per point, allowance 0.5): statistic 9 > threshold 8")
    many = retrain_decision("g", history(7), [], config)
    assert many.retrain and len(many.watch) == 7
    assert many.reasons == ("live accuracy (CUSUM): 7 of 100 series (7.0%) fired, at least "
                            "5.0% needed: 's000', 's001', 's002', 's003', 's004' and 2 more",)
    assert retrain_decision("g", history(1), [], replace(config, accuracy_min_share=0.0)
                            ).retrain


def test_retrain_on_drift_says_why():
    rng = np.random.default_rng(2)
    config = MonitoringConfig()
    drift = [drift_test(rng.normal(0, 1, 300), rng.normal(4, 1, 60), config, "a")]
    decision = retrain_decision("g", pl.DataFrame(), drift, config)
    assert decision.retrain
    assert "series 'a' channel 'value': input drift (mean_variance test on scaled inputs" \
        in decision.reasons[0]
    assert "Benjamini-Hochberg threshold" in decision.reasons[0]


@pytest.mark.parametrize("window", [None, 50])
def test_drift_by_series_on_a_cached_reference_equals_the_contract_frame(window):
    """A champion's cached reference (drift_inputs, with its statistics) gives the results
    of the same reference without them, for short recent windows and for windows longer
    than the statistics were cached for (50: those pairs recompute theirs)."""
    from recurra.pipelines.monitoring import STATS_PREFIX, drift_inputs

    rng = np.random.default_rng(3)

    def ar1(n: int) -> np.ndarray:   # autocorrelated: the long-run factors depend on the
        out = np.zeros(n)            # bandwidth, so a stale cached one would show
        for t in range(1, n):
            out[t] = 0.7 * out[t - 1] + rng.normal()
        return out

    ids = [f"s{i}" for i in range(8)]
    reference = pl.DataFrame({
        "series_id": np.repeat(ids, 240), "channel": ["value"] * 1920,
        "timestamp": _times(240) * 8,
        "value": np.concatenate([np.cumsum(rng.normal(size=240)) if i % 3 == 0 else
                                 ar1(240) for i in range(8)]),
        "observed": rng.random(1920) > 0.05})
    lengths = [70, 70, 70, 70, 40, 40, 35, 70]   # 4 short of n // 4 (about 57)
    recent = pl.concat([pl.DataFrame({
        "series_id": [sid] * n, "channel": ["value"] * n, "timestamp": _times(n, 240),
        "value": ar1(n) + (4.0 if i % 2 else 0.0), "observed": [True] * n})
        for i, (sid, n) in enumerate(zip(ids, lengths, strict=True))])
    config = MonitoringConfig(drift_window=70)
    cached = drift_inputs(reference, window=window)
    plain = cached.drop([c for c in cached.columns if c.startswith(STATS_PREFIX)])
    with_stats = drift_by_series(cached, recent, config)
    without = drift_by_series(plain, recent, config)
    assert with_stats == without
    assert drift_by_series(cached.lazy(), recent, config) == without   # a scan of the cache
    assert {r.series_id for r in with_stats if r.drifted} >= {"s1", "s5", "s7"}
