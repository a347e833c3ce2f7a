"""Evaluation metrics for anomaly detection, as pure numpy functions.

Labels are anomaly *windows*: inclusive ``(start, end)`` row-index pairs (NAB's convention).
Alarms are a (T,) bool array of the points where the detector raised an alarm.

* :func:`nab_score` - Numenta Anomaly Benchmark scoring (Lavin & Ahmad 2015, ``nab/sweeper.py``):
  the earliest alarm in each window earns ``tp * S(position) / S(-1)`` with the scaled sigmoid
  ``S(y) = 2 / (1 + exp(5 y)) - 1``; every alarm outside the windows costs ``fp * S(position
  past the preceding window)`` (``-fp`` before any window); every missed window costs ``fn``.
  The first ``min(floor(0.15 T), 750)`` rows are probationary and unscored.
  :func:`nab_normalise` maps summed raw scores to 100 (perfect) / 0 (null detector).
* event-level precision / recall / F1, point-wise F1, AUC-PR, PA%K F1, mean time to detect.
  Never report point-adjusted F1 alone: PA%K with K=0 rewards a single lucky point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from recurra.anomaly.events import runs
from recurra.data.schema import RecurraError

Windows = Sequence[tuple[int, int]]


@dataclass(frozen=True)
class NabProfile:
    """Weights of an application profile (NAB ``config/profiles.json``)."""

    tp: float
    fp: float
    fn: float


NAB_PROFILES = {
    "standard": NabProfile(tp=1.0, fp=0.11, fn=1.0),
    "reward_low_FP_rate": NabProfile(tp=1.0, fp=0.22, fn=1.0),
    "reward_low_FN_rate": NabProfile(tp=1.0, fp=0.11, fn=2.0),
}
PROBATION_PERCENT = 0.15


def scaled_sigmoid(position: float) -> float:
    """NAB's ``2 * sigmoid(-5 y) - 1``, and -1 from ``y >= 3`` on.

    >>> round(scaled_sigmoid(-1.0), 5), scaled_sigmoid(0.0), scaled_sigmoid(3.0)
    (0.98661, 0.0, -1.0)
    """
    if position >= 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * position)) - 1.0


def probationary_length(n_steps: int, percent: float = PROBATION_PERCENT) -> int:
    """``min(floor(percent * T), percent * 5000)`` rows that NAB leaves unscored.

    >>> probationary_length(4032), probationary_length(10000)
    (604, 750)
    """
    return int(min(math.floor(percent * n_steps), percent * 5000))


def _check_windows(windows: Windows, n_steps: int) -> list[tuple[int, int]]:
    checked = []
    for start, end in windows:
        if not 0 <= start <= end < n_steps:
            raise RecurraError(f"window ({start}, {end}) must satisfy 0 <= start <= end < "
                               f"n_steps ({n_steps})")
        if checked and start <= checked[-1][1]:
            raise RecurraError(f"windows must be sorted and disjoint; ({start}, {end}) "
                               f"overlaps {checked[-1]}")
        checked.append((int(start), int(end)))
    return checked


def nab_point_weights(n_steps: int, windows: Windows, profile: NabProfile
                      ) -> tuple[np.ndarray, np.ndarray]:
    """The weight an alarm at each row would earn, and the window id of each row (-1 outside).

    Mirrors ``Sweeper.calcSweepScore``: inside a window of width ``w`` ending at ``e`` the
    position is ``-(e - i + 1) / w``; after a window ending at ``e`` it is
    ``|e - i| / (w - 1)``; before any window an alarm is a full false positive.
    """
    windows = _check_windows(windows, n_steps)
    weights = np.empty(n_steps)
    window_id = np.full(n_steps, -1)
    max_tp = scaled_sigmoid(-1.0)
    previous: tuple[int, int] | None = None
    k = 0
    for i in range(n_steps):
        while k < len(windows) and windows[k][1] < i:
            previous, k = windows[k], k + 1
        if k < len(windows) and windows[k][0] <= i <= windows[k][1]:
            start, end = windows[k]
            position = -(end - i + 1) / (end - start + 1)
            weights[i] = scaled_sigmoid(position) * profile.tp / max_tp
            window_id[i] = k
        elif previous is None:
            weights[i] = -1.0 * profile.fp
        else:
            width = previous[1] - previous[0] + 1
            position = abs(previous[1] - i) / max(width - 1, 1)
            weights[i] = scaled_sigmoid(position) * profile.fp
    return weights, window_id


def nab_score(alarms: np.ndarray, windows: Windows, profile: str | NabProfile = "standard",
              probation_percent: float = PROBATION_PERCENT) -> float:
    """Raw NAB score of one series (sum of TP, FP and FN parts over the scored rows).

    Examples
    --------
    One window (rows 25..29) in 30 rows, 4 probationary rows; an alarm at the window's first
    row earns the full tp weight, a missed window costs fn:

    >>> windows = [(25, 29)]
    >>> alarms = np.zeros(30, bool); alarms[25] = True
    >>> nab_score(alarms, windows), nab_score(np.zeros(30, bool), windows)
    (1.0, -1.0)
    """
    profile = _profile(profile)
    alarms = np.asarray(alarms, dtype=bool)
    n_steps = alarms.size
    weights, window_id = nab_point_weights(n_steps, windows, profile)
    scored = np.arange(n_steps) >= probationary_length(n_steps, probation_percent)
    active = alarms & scored
    total = float(weights[active & (window_id < 0)].sum())
    for k in np.unique(window_id[scored & (window_id >= 0)]):
        hits = active & (window_id == k)
        total += float(weights[hits].max()) if hits.any() else -profile.fn
    return total


def nab_baselines(n_steps: int, windows: Windows, profile: str | NabProfile = "standard",
                  probation_percent: float = PROBATION_PERCENT) -> tuple[float, float]:
    """Raw scores of the null detector (no alarm) and the perfect one (alarm on every window
    row), for :func:`nab_normalise`."""
    null = nab_score(np.zeros(n_steps, bool), windows, profile, probation_percent)
    perfect_alarms = np.zeros(n_steps, bool)
    for start, end in windows:
        perfect_alarms[start:end + 1] = True
    perfect = nab_score(perfect_alarms, windows, profile, probation_percent)
    return null, perfect


def nab_normalise(raw: float, null: float, perfect: float) -> float:
    """``100 * (raw - null) / (perfect - null)`` over summed scores (NaN when undefined).

    >>> nab_normalise(0.0, -2.0, 2.0)
    50.0
    """
    if perfect == null:
        return float("nan")
    return 100.0 * (raw - null) / (perfect - null)


def _profile(profile: str | NabProfile) -> NabProfile:
    if isinstance(profile, NabProfile):
        return profile
    if profile not in NAB_PROFILES:
        raise RecurraError(f"profile ({profile!r}) must be one of {sorted(NAB_PROFILES)}")
    return NAB_PROFILES[profile]


def window_mask(n_steps: int, windows: Windows) -> np.ndarray:
    """(T,) bool labels: True inside any window.

    >>> window_mask(5, [(1, 2)]).astype(int).tolist()
    [0, 1, 1, 0, 0]
    """
    mask = np.zeros(n_steps, dtype=bool)
    for start, end in _check_windows(windows, n_steps):
        mask[start:end + 1] = True
    return mask


def event_counts(alarms: np.ndarray, windows: Windows) -> tuple[int, int, int]:
    """``(found windows, missed windows, false-positive alarm runs)``.

    A window is found when any alarm falls in it; each run of consecutive alarms lying wholly
    outside every window is one false positive.

    >>> a = np.array([1, 0, 1, 1, 0, 0, 1, 0], bool)
    >>> event_counts(a, [(2, 3), (5, 5)])
    (1, 1, 2)
    """
    alarms = np.asarray(alarms, dtype=bool)
    windows = _check_windows(windows, alarms.size)
    labels = window_mask(alarms.size, windows)
    found = sum(bool(alarms[start:end + 1].any()) for start, end in windows)
    false_runs = sum(1 for start, end in runs(alarms) if not labels[start:end + 1].any())
    return found, len(windows) - found, false_runs


def precision_recall_f1(tp: float, fp: float, fn: float) -> tuple[float, float, float]:
    """Precision, recall and F1 from counts (0 where a denominator is 0).

    >>> precision_recall_f1(1, 2, 1)
    (0.3333333333333333, 0.5, 0.4)
    """
    precision = tp / (tp + fp) if tp + fp > 0 else 0.0
    recall = tp / (tp + fn) if tp + fn > 0 else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0
    return precision, recall, f1


def event_f1(alarms: np.ndarray, windows: Windows) -> tuple[float, float, float]:
    """Event-level precision (found / (found + FP runs)), recall (found / windows), F1."""
    found, missed, false_runs = event_counts(alarms, windows)
    return precision_recall_f1(found, false_runs, missed)


def point_f1(predicted: np.ndarray, labels: np.ndarray) -> float:
    """Point-wise F1 of bool predictions against bool labels.

    >>> point_f1(np.array([1, 1, 0, 0], bool), np.array([1, 0, 1, 0], bool))
    0.5
    """
    predicted, labels = np.asarray(predicted, bool), np.asarray(labels, bool)
    tp = int(np.sum(predicted & labels))
    return precision_recall_f1(tp, int(np.sum(predicted & ~labels)),
                               int(np.sum(~predicted & labels)))[2]


def pa_k_f1(predicted: np.ndarray, labels: np.ndarray, k: float) -> float:
    """PA%K F1 (Kim et al., AAAI 2022): a labelled segment counts as wholly detected when at
    least ``k`` percent of its points are predicted, else its predictions stand as they are.
    ``k=0`` is the (inflated) point-adjusted F1, ``k=100`` the point-wise F1.

    >>> p = np.array([0, 1, 0, 0, 0, 1], bool); y = np.array([1, 1, 1, 1, 0, 0], bool)
    >>> round(pa_k_f1(p, y, 20), 4), round(pa_k_f1(p, y, 50), 4)
    (0.8889, 0.3333)
    """
    if not 0.0 <= k <= 100.0:
        raise RecurraError(f"k ({k}) must be a percentage in [0, 100]")
    adjusted = np.asarray(predicted, bool).copy()
    labels = np.asarray(labels, bool)
    for start, end in runs(labels):
        segment = adjusted[start:end + 1]
        share = 100.0 * segment.mean()
        if segment.any() and share >= k:
            adjusted[start:end + 1] = True
    return point_f1(adjusted, labels)


def auc_pr(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the precision-recall curve as average precision (sklearn's definition:
    ``sum_n (R_n - R_{n-1}) P_n`` over distinct thresholds); NaN scores rank lowest; NaN when
    there is no positive label.

    >>> auc_pr(np.array([0.9, 0.8, 0.3, 0.1]), np.array([1, 0, 1, 0], bool))
    0.8333333333333333
    """
    labels = np.asarray(labels, bool)
    if not labels.any():
        return float("nan")
    scores = np.nan_to_num(np.asarray(scores, np.float64), nan=-np.inf)
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    distinct = np.nonzero(np.diff(sorted_scores))[0]
    last = np.concatenate([distinct, [sorted_scores.size - 1]])
    tp = np.cumsum(sorted_labels)[last]
    predicted = last + 1
    precision = tp / predicted
    recall = tp / labels.sum()
    previous = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - previous) * precision))


def detection_delays(alarms: np.ndarray, windows: Windows) -> list[int]:
    """Rows from each found window's start to its first alarm.

    >>> detection_delays(np.array([0, 0, 0, 1, 1, 0], bool), [(1, 4), (5, 5)])
    [2]
    """
    alarms = np.asarray(alarms, bool)
    delays = []
    for start, end in _check_windows(windows, alarms.size):
        hits = np.nonzero(alarms[start:end + 1])[0]
        if hits.size:
            delays.append(int(hits[0]))
    return delays


def mean_time_to_detect(alarms: np.ndarray, windows: Windows, step_seconds: float = 1.0
                        ) -> float:
    """Mean delay (rows x ``step_seconds``) from window start to first alarm over the found
    windows; NaN when none is found."""
    delays = detection_delays(alarms, windows)
    return float(np.mean(delays) * step_seconds) if delays else float("nan")


def scored_windows(n_steps: int, windows: Windows, probation_percent: float = PROBATION_PERCENT
                   ) -> list[tuple[int, int]]:
    """The windows clipped to the scored rows (after the probationary period), dropping any
    that lie wholly inside it."""
    first = probationary_length(n_steps, probation_percent)
    return [(max(start, first), end) for start, end in _check_windows(windows, n_steps)
            if end >= first]
