"""Hand-computed cases for the pure score, threshold, event and metric functions."""

from __future__ import annotations

import math

import numpy as np
import pytest

from recurra.anomaly import events, metrics, scores, thresholds
from recurra.data.schema import RecurraError


# scores ----------------------------------------------------------------------------------
def test_overlap_mean_averages_the_covering_windows():
    window_errors = np.array([[[1.0], [2.0], [3.0]], [[4.0], [5.0], [6.0]]])  # T=4, W=3
    result = scores.overlap_mean(window_errors, 4)[:, 0]
    np.testing.assert_allclose(result, [1.0, 3.0, 4.0, 6.0])


def test_overlap_mean_rejects_inconsistent_lengths():
    with pytest.raises(RecurraError, match="n_steps"):
        scores.overlap_mean(np.zeros((2, 3, 1)), 5)


def test_ewma_chained_equals_one_pass():
    rng = np.random.default_rng(0)
    x = rng.random((20, 2))
    whole = scores.ewma(x, 0.3)
    first = scores.ewma(x[:7], 0.3)
    second = scores.ewma(x[7:], 0.3, initial=first[-1])
    np.testing.assert_allclose(np.vstack([first, second]), whole)


def test_ewma_rejects_bad_alpha():
    with pytest.raises(RecurraError, match=r"alpha \(0"):
        scores.ewma(np.ones(3), 0.0)


def test_masked_error_ignores_gaps():
    err = scores.masked_squared_error(np.array([[2.0, np.nan]]), np.array([[0.0, 9.0]]),
                                      np.array([[True, False]]))
    assert err.tolist() == [[4.0, 0.0]]


def test_robust_scale_and_normalise():
    center, spread = scores.robust_scale(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    assert center == 3.0 and spread == pytest.approx(1.4826)
    assert scores.normalise(np.array([3.0 + 1.4826]), center, spread)[0] == pytest.approx(1.0)


def test_robust_scale_of_a_constant_is_finite():
    _, spread = scores.robust_scale(np.full(10, 5.0))
    assert spread > 0 and np.isfinite(spread)


def test_rolling_zscore_uses_only_the_past():
    values = np.array([[1.0], [3.0], [1.0], [3.0], [10.0]])
    z = scores.rolling_zscore(values, np.ones_like(values, bool), window=4)
    assert z[-1, 0] == pytest.approx(8.0)  # mean 2, std 1 of the 4 previous points
    assert z[0, 0] == 0.0 and z[1, 0] == 0.0  # fewer than 2 past points
    changed = values.copy()
    changed[-1] = 1000.0
    z2 = scores.rolling_zscore(changed, np.ones_like(values, bool), window=4)
    np.testing.assert_allclose(z2[:-1], z[:-1])


def test_contributions_rows_sum_to_one():
    shares = scores.contributions(np.array([[1.0, 3.0], [0.0, 0.0]]))
    np.testing.assert_allclose(shares, [[0.25, 0.75], [0.0, 0.0]])


# thresholds ------------------------------------------------------------------------------
def test_quantile_and_ksigma():
    assert thresholds.quantile_threshold(np.arange(101.0), 0.9) == pytest.approx(90.0)
    assert thresholds.ksigma_threshold(np.array([1.0, 3.0]), 3.0) == pytest.approx(5.0)
    with pytest.raises(RecurraError, match=r"level \(1.5\)"):
        thresholds.quantile_threshold(np.arange(3.0), 1.5)


def test_gpd_moments_exponential_and_spot_quantile():
    assert thresholds.gpd_moments(2.0, 4.0) == (0.0, 2.0)
    # gamma 0: z = t - sigma * log(q n / N)
    z = thresholds.spot_quantile(1.0, 0.0, 2.0, 0.01, 1000, 20)
    assert z == pytest.approx(1.0 - 2.0 * math.log(0.5))


def test_spot_flags_extremes_and_updates_online():
    rng = np.random.default_rng(1)
    calibration = rng.exponential(1.0, 5000)
    state = thresholds.spot_init(calibration, risk=1e-3, level=0.98)
    # exponential(1): true 1 - 1e-3 quantile is log(1000) = 6.9
    assert 5.5 < state.threshold < 8.5
    flags, used, new_state = thresholds.spot_step(state, np.array([0.5, 4.5, 50.0, np.nan]))
    assert flags.tolist() == [False, False, True, False]
    assert new_state.n_seen == state.n_seen + 2 and new_state.n_peaks == state.n_peaks + 1
    assert used[0] == state.threshold


def test_spot_step_chained_equals_one_pass():
    rng = np.random.default_rng(2)
    state = thresholds.spot_init(rng.exponential(1.0, 1000), risk=1e-3)
    stream = rng.exponential(1.5, 300)
    flags, used, _ = thresholds.spot_step(state, stream)
    f1, u1, mid = thresholds.spot_step(state, stream[:100])
    f2, u2, _ = thresholds.spot_step(mid, stream[100:])
    assert np.array_equal(np.concatenate([f1, f2]), flags)
    np.testing.assert_allclose(np.concatenate([u1, u2]), used)


def test_spot_rejects_risk_above_level():
    with pytest.raises(RecurraError, match=r"risk \(0.05\)"):
        thresholds.spot_init(np.arange(100.0), risk=0.05, level=0.98)


def test_nonparametric_threshold_separates_a_spike():
    errors = np.concatenate([np.full(50, 1.0), [30.0, 31.0], np.full(48, 1.0)])
    errors[::7] = 1.5
    eps = thresholds.nonparametric_threshold(errors)
    assert 1.5 < eps < 30.0


def test_prune_sequences_hand_case():
    e = np.array([0.0, 10.0, 0.0, 9.5, 0.0, 1.0, 0.0])
    kept = thresholds.prune_sequences(e, e > 0.5, min_decrease=0.5)
    # peaks 10, 9.5, 1, then normal max 0: drops 5 %, 89 %, 100 % -> all three kept
    assert kept.tolist() == [False, True, False, True, False, True, False]
    e2 = np.array([0.0, 10.0, 9.0, 0.0, 9.5, 8.0])
    kept2 = thresholds.prune_sequences(e2, e2 > 8.5, min_decrease=0.13)
    # peaks 10, 9.5 and largest normal error 8.0: 5 %, 15.8 % -> both kept
    assert kept2.tolist() == [False, True, True, False, True, False]
    kept3 = thresholds.prune_sequences(e2, e2 > 8.5, min_decrease=0.2)
    assert not kept3.any()


# events ----------------------------------------------------------------------------------
def test_runs_merge_and_onsets():
    flags = np.array([0, 1, 1, 0, 1, 0, 0, 0, 1], bool)
    assert events.runs(flags) == [(1, 2), (4, 4), (8, 8)]
    assert events.merge_runs(events.runs(flags), min_gap=2) == [(1, 4), (8, 8)]
    onsets, since = events.alarm_onsets(flags, suppression=3)
    assert onsets.astype(int).tolist() == [0, 1, 0, 0, 0, 0, 0, 0, 1]
    assert since == 0


def test_onsets_streaming_equals_batch():
    rng = np.random.default_rng(3)
    flags = rng.random(200) < 0.1
    whole, _ = events.alarm_onsets(flags, 5)
    parts, since = [], None
    for chunk in np.array_split(flags, 17):
        onsets, since = events.alarm_onsets(chunk, 5, since)
        parts.append(onsets)
    assert np.array_equal(np.concatenate(parts), whole)


def test_long_gaps_rows_and_holes():
    observed = np.array([1, 0, 0, 0, 1, 1, 0, 1], bool)
    assert events.long_gaps(np.arange(8.0), observed, 3.0) == [(1, 3)]
    assert events.long_gaps(np.array([0.0, 1.0, 9.0]), np.ones(3, bool), 3.0) == [(1, 2)]
    with pytest.raises(RecurraError, match="max_gap"):
        events.long_gaps(np.arange(3.0), np.ones(3, bool), 0.0)


def test_events_frame_peak_severity_channels():
    ts = np.array(["2024-01-01T00", "2024-01-01T01", "2024-01-01T02"], dtype="datetime64[us]")
    shares = np.array([[0.5, 0.5], [0.1, 0.9], [0.3, 0.7]])
    frame = events.events_frame("a", ts, np.array([1.0, 6.0, 2.0]), [(1, 2)], 2.0, shares,
                                ["x", "y"], min_share=0.25)
    row = frame.row(0, named=True)
    assert row["peak_score"] == 6.0 and row["severity"] == 3.0
    assert row["channels"] == ["y"] and row["kind"] == "anomaly"


# metrics ---------------------------------------------------------------------------------
def test_scaled_sigmoid_published_points():
    assert metrics.scaled_sigmoid(-1.0) == pytest.approx(0.98661, abs=1e-5)
    assert metrics.scaled_sigmoid(-0.5) == pytest.approx(0.84828, abs=1e-5)
    assert metrics.scaled_sigmoid(1.0) == pytest.approx(-0.98661, abs=1e-5)


def test_nab_profiles_published_weights():
    assert metrics.NAB_PROFILES["standard"] == metrics.NabProfile(1.0, 0.11, 1.0)
    assert metrics.NAB_PROFILES["reward_low_FP_rate"] == metrics.NabProfile(1.0, 0.22, 1.0)
    assert metrics.NAB_PROFILES["reward_low_FN_rate"] == metrics.NabProfile(1.0, 0.11, 2.0)


def test_nab_hand_computed_series():
    # 40 rows, probation floor(0.15*40)=6; window rows 20..29 (width 10)
    windows = [(20, 29)]
    alarms = np.zeros(40, bool)
    alarms[[2, 10, 25, 27, 31]] = True  # 2 is probationary
    # TP: earliest alarm 25: position -(29-25+1)/10 = -0.5 -> S=0.84828 / 0.98661
    tp = metrics.scaled_sigmoid(-0.5) / metrics.scaled_sigmoid(-1.0)
    # FP at 10, before any window: -0.11; FP at 31: position |29-31|/9 -> 0.11 * S(2/9)
    fp = -0.11 + 0.11 * metrics.scaled_sigmoid(2 / 9)
    assert metrics.nab_score(alarms, windows) == pytest.approx(tp + fp)
    low_fp = metrics.nab_score(alarms, windows, "reward_low_FP_rate")
    assert low_fp == pytest.approx(tp + 2 * fp)
    null, perfect = metrics.nab_baselines(40, windows, "reward_low_FN_rate")
    assert (null, perfect) == (-2.0, pytest.approx(1.0))
    assert metrics.nab_normalise(null, null, perfect) == 0.0
    assert metrics.nab_normalise(perfect, null, perfect) == 100.0


def test_nab_ignores_probationary_alarms_and_windows():
    alarms = np.zeros(100, bool)
    alarms[:10] = True  # all inside the 15-row probation
    assert metrics.nab_score(alarms, []) == 0.0
    assert metrics.nab_score(np.zeros(100, bool), [(2, 5)]) == 0.0  # window unscored
    with pytest.raises(RecurraError, match="profile"):
        metrics.nab_score(alarms, [], "strict")


def test_event_counts_precision_recall():
    alarms = np.array([1, 0, 1, 1, 0, 0, 1, 1, 0, 0], bool)
    # windows (2,3) found, (5,5) missed; runs outside: (0,0) and (6,7) -> 2 FP
    assert metrics.event_counts(alarms, [(2, 3), (5, 5)]) == (1, 1, 2)
    precision, recall, f1 = metrics.event_f1(alarms, [(2, 3), (5, 5)])
    assert (precision, recall) == (pytest.approx(1 / 3), 0.5) and f1 == pytest.approx(0.4)


def test_point_f1_pa_k_and_auc_pr():
    predicted = np.array([0, 1, 0, 0, 0, 1], bool)
    labels = np.array([1, 1, 1, 1, 0, 0], bool)
    assert metrics.point_f1(predicted, labels) == pytest.approx(2 * 0.5 * 0.25 / 0.75)
    assert metrics.pa_k_f1(predicted, labels, 0) == pytest.approx(8 / 9)
    assert metrics.pa_k_f1(predicted, labels, 100) == metrics.point_f1(predicted, labels)
    # ranks: 1 (P=1, R=.5), 0, 1 (P=2/3, R=1), 0 -> AP = .5*1 + .5*2/3
    ap = metrics.auc_pr(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0], bool))
    assert ap == pytest.approx(0.5 + 0.5 * 2 / 3)
    assert math.isnan(metrics.auc_pr(np.ones(3), np.zeros(3, bool)))


def test_auc_pr_ties_share_one_threshold():
    ap = metrics.auc_pr(np.array([1.0, 1.0, 0.0]), np.array([1, 0, 1], bool))
    assert ap == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)


def test_time_to_detect():
    alarms = np.array([0, 0, 0, 1, 1, 0, 0, 0], bool)
    assert metrics.detection_delays(alarms, [(1, 4), (6, 7)]) == [2]
    assert metrics.mean_time_to_detect(alarms, [(1, 4)], step_seconds=300) == 600.0
    assert math.isnan(metrics.mean_time_to_detect(np.zeros(8, bool), [(1, 4)]))


def test_windows_are_checked():
    with pytest.raises(RecurraError, match="n_steps"):
        metrics.window_mask(5, [(3, 9)])
    with pytest.raises(RecurraError, match="disjoint"):
        metrics.window_mask(10, [(1, 4), (3, 6)])


def test_dspot_follows_a_drifting_level():
    rng = np.random.default_rng(4)
    calibration = rng.exponential(1.0, 2000)
    state, recent = thresholds.drift_init(calibration, depth=20, risk=1e-3, level=0.98)
    drifted = rng.exponential(1.0, 500) + np.linspace(0, 20, 500)  # slow drift, no spike
    flags, used, _, _ = thresholds.drift_step(state, recent, drifted)
    assert flags.mean() < 0.02 and used[-1] > used[0] + 15
    plain, _, _ = thresholds.spot_step(thresholds.spot_init(calibration, 1e-3), drifted)
    assert plain.mean() > 0.5  # plain SPOT alarms on most of the drifted scores
    with pytest.raises(RecurraError, match=r"depth \(0\)"):
        thresholds.drift_init(calibration, depth=0)
