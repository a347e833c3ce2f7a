"""From per-point flags to events: runs, merging, alarm onsets, data-quality gaps.

Pure numpy helpers plus :func:`events_frame`, which builds an ``EVENT_SCHEMA`` frame.
Index runs are inclusive ``(start, end)`` pairs.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from recurra.data.schema import (
    CHANNELS,
    END,
    EVENT_SCHEMA,
    KIND,
    PEAK_SCORE,
    SERIES_ID,
    SEVERITY,
    START,
    RecurraError,
    empty_like,
)

ANOMALY = "anomaly"
DATA_QUALITY = "data_quality"


def runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Inclusive index runs of True values.

    >>> runs(np.array([0, 1, 1, 0, 1], bool))
    [(1, 2), (4, 4)]
    """
    padded = np.concatenate([[0], np.asarray(flags, dtype=np.int8), [0]])
    change = np.diff(padded)
    starts = np.nonzero(change == 1)[0]
    ends = np.nonzero(change == -1)[0] - 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


def merge_runs(index_runs: Sequence[tuple[int, int]], min_gap: int) -> list[tuple[int, int]]:
    """Merge runs separated by fewer than ``min_gap`` normal points.

    >>> merge_runs([(1, 2), (4, 4), (9, 9)], min_gap=2)
    [(1, 4), (9, 9)]
    """
    if min_gap < 0:
        raise RecurraError(f"min_gap ({min_gap}) must be >= 0")
    merged: list[tuple[int, int]] = []
    for start, end in index_runs:
        if merged and start - merged[-1][1] - 1 < min_gap:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return merged


def alarm_onsets(flags: np.ndarray, suppression: int, since_onset: int | None = None
                 ) -> tuple[np.ndarray, int | None]:
    """Alarms raised at the first flagged point, then silenced for ``suppression`` steps.

    A flag becomes an alarm when no alarm was raised in the previous ``suppression`` steps.
    Streaming: pass the returned ``since_onset`` (steps since the last alarm, None if none)
    to the next call and the result equals one call over the concatenated flags.

    >>> alarm_onsets(np.array([1, 1, 1, 0, 1, 1], bool), 3)[0].astype(int).tolist()
    [1, 0, 0, 0, 1, 0]
    """
    if suppression < 0:
        raise RecurraError(f"suppression ({suppression}) must be >= 0")
    flags = np.asarray(flags, dtype=bool)
    onsets = np.zeros(flags.size, dtype=bool)
    for i, flag in enumerate(flags):
        if since_onset is not None:
            since_onset += 1
        if flag and (since_onset is None or since_onset > suppression):
            onsets[i] = True
            since_onset = 0
    return onsets, since_onset


def long_gaps(elapsed: np.ndarray, observed_any: np.ndarray, max_gap: float
              ) -> list[tuple[int, int]]:
    """Stretches where nothing was observed for longer than ``max_gap`` time units.

    Parameters
    ----------
    elapsed : (T,) increasing times (units of the series' median spacing).
    observed_any : (T,) True where at least one channel is observed.
    max_gap : the longest tolerated silence (same unit as ``elapsed``).

    Returns
    -------
    Inclusive index runs ``(first unobserved row, last unobserved row)`` of the silences;
    for a time hole with no rows at all, the pair of observed rows around it.

    >>> long_gaps(np.arange(8.), np.array([1, 0, 0, 0, 1, 1, 0, 1], bool), 3.0)
    [(1, 3)]
    >>> long_gaps(np.array([0., 1., 9.]), np.ones(3, bool), 3.0)
    [(1, 2)]
    """
    if max_gap <= 0:
        raise RecurraError(f"max_gap ({max_gap}) must be > 0")
    seen = np.nonzero(observed_any)[0]
    result = []
    anchors = [-1, *seen.tolist(), len(elapsed)]
    for before, after in zip(anchors[:-1], anchors[1:], strict=True):
        start_time = elapsed[before] if before >= 0 else elapsed[0]
        end_time = elapsed[after] if after < len(elapsed) else elapsed[-1]
        if end_time - start_time <= max_gap:
            continue
        if after - before > 1:
            result.append((before + 1, after - 1))
        elif before >= 0 and after < len(elapsed):
            result.append((before, after))
    return result


def event_channels(shares: np.ndarray, channels: Sequence[str], min_share: float) -> list[str]:
    """Channels whose mean share of the error over an event is at least ``min_share``,
    largest first (at least the top one).

    >>> event_channels(np.array([[0.1, 0.9], [0.3, 0.7]]), ["a", "b"], 0.25)
    ['b']
    """
    if shares.size == 0:
        return list(channels[:1])
    mean = np.asarray(shares, dtype=np.float64).mean(axis=0)
    order = np.argsort(-mean, kind="stable")
    chosen = [channels[i] for i in order if mean[i] >= min_share]
    return chosen or [channels[int(order[0])]]


def events_frame(series_id: str, timestamps: np.ndarray, scores: np.ndarray,
                 index_runs: Sequence[tuple[int, int]], threshold: float | np.ndarray,
                 shares: np.ndarray, channels: Sequence[str], *, kind: str = ANOMALY,
                 min_share: float = 0.2) -> pl.DataFrame:
    """An ``EVENT_SCHEMA`` frame with one row per index run.

    ``peak_score`` is the largest score in the run and ``severity`` the peak divided by the
    threshold in force at the peak (> 1 for an alarm; NaN for data-quality events).

    Parameters
    ----------
    timestamps : (T,) ``datetime64[us]`` (UTC).
    scores : (T,) normalised scores.
    threshold : scalar or (T,) thresholds.
    shares : (T, F) per-channel shares of the error (:func:`recurra.anomaly.scores.contributions`).
    """
    if kind not in (ANOMALY, DATA_QUALITY):
        raise RecurraError(f"kind ({kind!r}) must be one of {[ANOMALY, DATA_QUALITY]}")
    if not index_runs:
        return empty_like(EVENT_SCHEMA)
    thresholds = np.broadcast_to(np.asarray(threshold, dtype=np.float64), scores.shape)
    rows = {SERIES_ID: [], START: [], END: [], PEAK_SCORE: [], SEVERITY: [], CHANNELS: [],
            KIND: []}
    for start, end in index_runs:
        part = np.nan_to_num(scores[start:end + 1], nan=-np.inf)
        peak_at = start + int(np.argmax(part))
        peak = float(scores[peak_at]) if np.isfinite(scores[peak_at]) else float("nan")
        limit = float(thresholds[peak_at])
        severity = peak / limit if kind == ANOMALY and limit > 0 else float("nan")
        rows[SERIES_ID].append(series_id)
        rows[START].append(timestamps[start])
        rows[END].append(timestamps[end])
        rows[PEAK_SCORE].append(peak)
        rows[SEVERITY].append(severity)
        rows[CHANNELS].append(list(channels) if kind == DATA_QUALITY
                              else event_channels(shares[start:end + 1], channels, min_share))
        rows[KIND].append(kind)
    frame = pl.DataFrame({
        **{k: v for k, v in rows.items() if k not in (START, END)},
        START: pl.Series(np.array(rows[START], dtype="datetime64[us]")),
        END: pl.Series(np.array(rows[END], dtype="datetime64[us]")),
    })
    frame = frame.with_columns(pl.col(START).dt.replace_time_zone("UTC"),
                               pl.col(END).dt.replace_time_zone("UTC"),
                               pl.col(PEAK_SCORE).fill_nan(None),
                               pl.col(SEVERITY).fill_nan(None))
    return frame.select([pl.col(c).cast(t) for c, t in EVENT_SCHEMA.items()])
