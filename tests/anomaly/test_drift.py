"""Drift statistics (recurra.anomaly.drift): hand-computed pieces and calibration on synthetic
stationary, shifted and random-walk series; the demo's sample data does not drift."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recurra.anomaly.drift import (
    benjamini_hochberg,
    cusum_step,
    drift_fleet,
    long_run_factor,
    model_inputs,
    resolve_input,
    unit_root_likely,
)

N_SERIES, N_REFERENCE, N_RECENT = 300, 500, 48


def ar1(rng: np.random.Generator, n_series: int, n_steps: int, rho: float = 0.5) -> np.ndarray:
    """(S, T) stationary AR(1) paths with unit variance."""
    noise = rng.normal(size=(n_series, n_steps)) * np.sqrt(1 - rho ** 2)
    paths = np.empty_like(noise)
    paths[:, 0] = rng.normal(size=n_series)
    for step in range(1, n_steps):
        paths[:, step] = rho * paths[:, step - 1] + noise[:, step]
    return paths


def pairs(paths: np.ndarray, level: float = 10.0):
    return [(f"s{i}", "value", row[:N_REFERENCE] + level, row[N_REFERENCE:] + level)
            for i, row in enumerate(paths)]


def share(results) -> float:
    return float(np.mean([r.drifted for r in results]))


def test_benjamini_hochberg_hand_computed():
    p = np.array([0.01, 0.04, 0.03, 0.20, np.nan])
    # sorted 0.01, 0.03, 0.04, 0.20 vs 0.05 * k / 4 = 0.0125, 0.025, 0.0375, 0.05
    assert benjamini_hochberg(p, 0.05).tolist() == [True, False, False, False, False]
    # step-up: 0.04 <= 0.05 * 3 / 3 rejects everything below it too
    assert benjamini_hochberg(np.array([0.04, 0.03, 0.02]), 0.05).all()


def test_model_inputs_and_unit_root_choice():
    assert model_inputs(np.array([1.0, 2.0, 4.0]), "returns") == pytest.approx(
        [np.log(2), np.log(2)])
    rng = np.random.default_rng(0)
    walk = np.cumsum(rng.normal(size=600)) + 100
    assert unit_root_likely(walk) and resolve_input(walk, "auto") == "difference"
    assert resolve_input(rng.normal(size=600), "auto") == "scaled"
    assert resolve_input(walk, "returns") == "returns"
    with pytest.raises(ValueError, match="drift_on"):
        resolve_input(walk, "levels")
    assert long_run_factor(ar1(rng, 1, 20_000, rho=0.6)[0], 200) == pytest.approx(4.0, rel=0.15)


def test_stationary_share_flagged_is_below_the_fdr_and_raw_tests_are_not():
    paths = ar1(np.random.default_rng(1), N_SERIES, N_REFERENCE + N_RECENT)
    assert share(drift_fleet(pairs(paths), on="scaled", fdr=0.05)) <= 0.05
    # the same data under an uncorrected KS test at p < 0.01 flags far more (autocorrelation)
    raw_ks = drift_fleet(pairs(paths), test="ks", on="scaled", correction="none",
                         min_effect=0.0)
    assert share(raw_ks) > 0.05


@pytest.mark.parametrize("shift", ["level", "variance"])
def test_a_one_std_shift_is_flagged_within_48_rows(shift):
    paths = ar1(np.random.default_rng(2), N_SERIES, N_REFERENCE + N_RECENT)
    if shift == "level":
        paths[:, N_REFERENCE:] += 1.0
    else:
        paths[:, N_REFERENCE:] *= 2.0   # the standard deviation grows by one
    results = drift_fleet(pairs(paths), on="scaled", fdr=0.05)
    assert share(results) >= 0.9
    flagged = next(r for r in results if r.drifted)
    assert flagged.test == "mean_variance" and flagged.effect >= 0.5 and flagged.threshold > 0


def test_random_walks_are_not_flagged_on_differences_but_are_on_levels():
    rng = np.random.default_rng(3)
    walks = np.cumsum(rng.normal(size=(100, N_REFERENCE + 168)), axis=1) + 1000
    levels = [(f"s{i}", "close", w[:N_REFERENCE], w[N_REFERENCE:]) for i, w in enumerate(walks)]
    # the old behaviour: a KS test of the raw levels fires on most random walks
    assert share(drift_fleet(levels, test="ks", on="scaled", correction="none",
                             min_effect=0.0)) > 0.5
    automatic = drift_fleet(levels, on="auto")
    # the Dickey-Fuller test has 5 % size: a few walks look stationary to it
    assert sum(r.on == "difference" for r in automatic) >= 90 and share(automatic) <= 0.05
    assert share(drift_fleet(levels, on="returns")) <= 0.05


def test_min_effect_and_min_rows():
    rng = np.random.default_rng(4)
    reference = rng.normal(size=20_000)
    small = [("a", "value", reference, rng.normal(0.1, 1.0, 20_000))]  # clear but tiny
    assert drift_fleet(small, on="scaled")[0].pvalue < 1e-4   # t with 12 degrees (bandwidth 5,000)
    assert not drift_fleet(small, on="scaled")[0].drifted
    few = drift_fleet([("a", "value", reference, np.full(5, 9.0))], on="scaled")[0]
    assert not few.drifted and np.isnan(few.pvalue)


def test_cusum_accumulates_and_resets():
    total = 0.0
    for ratio in (1.1, 1.5, 1.5, 1.5, 1.5):   # allowance 0.25: +0.25 per run at the margin
        total = cusum_step(total, ratio, 0.25)
    assert total == pytest.approx(1.0)
    assert cusum_step(1.0, 0.5, 0.25) == pytest.approx(0.25)
    assert cusum_step(0.7, float("nan"), 0.25) == 0.7


def test_cusum_rarely_alarms_on_noise_and_soon_on_a_doubled_error():
    """Per-point ratios |e| / mean|e| of half-normal errors (mean 1, often above 2): with the
    default allowance (margin 1.5 - 1) and threshold 8 few of 500 series alarm in 200 runs;
    a doubled error alarms within 48 runs in almost all."""
    rng = np.random.default_rng(6)
    noise = np.abs(rng.normal(size=(500, 200))) / np.sqrt(2 / np.pi)

    def alarms(ratios: np.ndarray, n_runs: int) -> float:
        fired = []
        for series in ratios:
            total, hit = 0.0, False
            for ratio in series[:n_runs]:
                total = cusum_step(total, ratio, 0.5)
                hit |= total > 8.0
            fired.append(hit)
        return float(np.mean(fired))

    assert alarms(noise, 200) <= 0.01
    assert alarms(2 * noise, 48) >= 0.95


def test_the_demo_sample_data_does_not_drift():
    """The demo trains on all but the last 400 rows of each series and scores those: the
    old PSI test flagged four of six series on the clean sample, the default test none."""
    from recurra.data.ingest import sample_sources
    from recurra.pipelines.config import MonitoringConfig
    from recurra.pipelines.monitoring import drift_by_series

    frame = pl.concat([spec.load().frame for spec in sample_sources()], how="diagonal_relaxed")
    rank = pl.col("timestamp").rank("dense", descending=True).over("series_id")
    config = MonitoringConfig()
    reference = frame.filter(rank > 400).group_by(["series_id", "channel"]).tail(
        config.drift_reference_rows)
    recent = frame.filter(rank <= 400)
    # the demo config tests the market group on log returns (price levels wander by nature)
    on = {"market/SP500": "returns", "market/NASDAQ": "returns"}
    assert not [r for r in drift_by_series(reference, recent, config, on) if r.drifted]
    shifted = recent.with_columns(pl.when(pl.col("series_id") == "air/Aotizhongxin")
                                  .then(pl.col("value") * 1.3).otherwise(pl.col("value")))
    flagged = [r for r in drift_by_series(reference, shifted, config, on) if r.drifted]
    assert [r.series_id for r in flagged] == ["air/Aotizhongxin"]


def _null_fleet(n_pairs: int, n_reference: int, n_windows: int, window: int, seed: int):
    """Stationary AR(1) (rho 0.6) + daily-cycle pairs with 2 % gaps: a reference and
    ``n_windows`` disjoint recent windows after it."""
    rng = np.random.default_rng(seed)
    n_steps = n_reference + n_windows * window
    noise = rng.normal(size=(n_pairs, n_steps)) * np.sqrt(1 - 0.36)
    paths = np.empty_like(noise)
    paths[:, 0] = rng.normal(size=n_pairs)
    for step in range(1, n_steps):
        paths[:, step] = 0.6 * paths[:, step - 1] + noise[:, step]
    paths += 10 + np.sin(2 * np.pi * np.arange(n_steps) / 24
                         + rng.uniform(0, 2 * np.pi, (n_pairs, 1)))
    paths[rng.random(paths.shape) < 0.02] = np.nan
    return paths[:, :n_reference], [paths[:, n_reference + k * window:
                                          n_reference + (k + 1) * window]
                                    for k in range(n_windows)]


def test_null_pvalues_hold_in_the_tail_with_a_short_reference():
    """A 336-row reference and a 48-row window (the size of a scheduled fleet's): the
    share of p-values below 1e-3 on stationary pairs stays near 1e-3 (a normal tail gives
    about 9e-3 here), and Benjamini-Hochberg across the fleet flags almost nothing."""
    reference, windows = _null_fleet(3000, 336, 3, 48, seed=11)
    small, flagged = [], 0
    for recent in windows:
        found = drift_fleet([(f"s{i}", "value", reference[i], recent[i])
                             for i in range(reference.shape[0])], on="scaled")
        small.append(np.mean([f.pvalue < 1e-3 for f in found]))
        flagged += sum(f.drifted for f in found)
    assert np.mean(small) < 0.004 and flagged <= 2
