"""The detector promotion gate: seeded synthetic anomalies and a detection score.

Validation data carries no anomaly labels, so the share of points a detector flags cannot
tell a good detector from a silent one (a detector that never flags would always win).
The gate instead injects a few known anomalies into a *copy* of the validation part and asks
how well each detector finds them:

1. :func:`inject_anomalies` (pure, seeded): per series, ``n_per_series`` anomalies of three
   kinds in turn (a spike of one row, a level shift and a variance burst of a few rows), in
   disjoint slots, each on one channel, sized in units of the channel's robust scale
   (1.4826 x median absolute deviation of its validation values).  Returns the injected copy
   and the label windows.
2. :func:`gate_score`: the detector scores ``context`` history rows followed by the injected
   copy from a fresh state (``detector.score``: the detector's own state is left alone); on
   the validation rows its ``is_anomaly`` flags are matched to the injected windows.  The
   gate metric is the *composite F1* (Garg et al., IEEE TNNLS 2021), pooled over the
   series: the harmonic mean of the event recall (share of injected windows holding at
   least one flag) and the point precision (share of flagged rows inside a window).  Higher
   is better; a detector that never flags scores 0 (no recall) and one that always flags
   scores about twice the share of injected rows (no precision).  Event-level precision
   (alarm runs) is not used: one endless alarm run would count as a single true positive.

Champion and challenger are scored on the same injected copy, so the comparison is like for
like.  Real anomalies of the validation part count as false alarms for both.

>>> from tests.conftest import make_frame
>>> injected, labels = inject_anomalies(make_frame(n_series=1, n_steps=120))
>>> labels.height, sorted(set(labels["kind"]))
(3, ['level_shift', 'spike', 'variance_burst'])
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from recurra.anomaly.events import runs
from recurra.anomaly.metrics import auc_pr, event_counts, precision_recall_f1
from recurra.data.schema import (
    CHANNEL,
    END,
    IS_ANOMALY,
    OBSERVED,
    SCORE,
    SERIES_ID,
    START,
    TIMESTAMP,
    VALUE,
    RecurraError,
)

GATE_METRIC = "val_injected_composite_f1"
KINDS = ("spike", "level_shift", "variance_burst")
LABEL_SCHEMA = {SERIES_ID: pl.Utf8, CHANNEL: pl.Utf8, START: pl.Datetime("us", "UTC"),
                END: pl.Datetime("us", "UTC"), "kind": pl.Utf8, "size": pl.Float64}


@dataclass(frozen=True)
class InjectionConfig:
    """What :func:`inject_anomalies` adds to each series.

    n_per_series : anomalies per series (fewer when the series is too short for them).
    spike_size, shift_size, burst_size : magnitudes in robust-scale units (a spike adds
        +-``spike_size``, a level shift +-``shift_size``, a burst Gaussian noise of standard
        deviation ``burst_size``).
    max_length : rows of a level shift or variance burst (at most; shorter on short series).
    seed : with the series id, the only source of randomness.
    """

    n_per_series: int = 3
    spike_size: float = 6.0
    shift_size: float = 4.0
    burst_size: float = 4.0
    max_length: int = 12
    seed: int = 0

    def __post_init__(self) -> None:
        for name in ("n_per_series", "max_length"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise RecurraError(f"InjectionConfig.{name} ({value!r}) must be an integer >= 1")
        for name in ("spike_size", "shift_size", "burst_size"):
            value = getattr(self, name)
            if not np.isfinite(value) or value <= 0:
                raise RecurraError(f"InjectionConfig.{name} ({value!r}) must be a finite "
                                   "number > 0")
        if not isinstance(self.seed, int) or self.seed < 0:
            raise RecurraError(f"InjectionConfig.seed ({self.seed!r}) must be an integer >= 0")


@dataclass(frozen=True)
class GateScore:
    """Detection of the injected anomalies by one detector (pooled over series).

    composite_f1 : harmonic mean of ``event_recall`` and ``point_precision`` (the gate).
    event_recall : injected windows with at least one flag / injected windows.
    point_precision : flagged rows inside a window / flagged rows (0 when none flagged).
    event_precision : found windows / (found windows + alarm runs wholly outside windows).
    auc_pr : average precision of the scores against the window rows (threshold-free).
    """

    composite_f1: float
    event_recall: float
    point_precision: float
    event_precision: float
    auc_pr: float
    n_injected: int
    n_false_alarms: int
    flag_rate: float

    def metrics(self) -> dict[str, float]:
        """The figures to log (``val_injected_*``; the composite F1 is :data:`GATE_METRIC`)."""
        return {GATE_METRIC: self.composite_f1, "val_injected_recall": self.event_recall,
                "val_injected_point_precision": self.point_precision,
                "val_injected_event_precision": self.event_precision,
                "val_injected_auc_pr": self.auc_pr,
                "val_false_alarm_runs": float(self.n_false_alarms),
                "val_flag_rate": self.flag_rate}


def robust_scale(values: np.ndarray) -> float:
    """1.4826 x MAD of the finite ``values`` (the std, then 1.0, when that is 0).

    >>> robust_scale(np.array([1.0, 2.0, 3.0, 4.0, 100.0]))
    1.4826
    """
    finite = np.asarray(values, np.float64)
    finite = finite[np.isfinite(finite)]
    if finite.size == 0:
        return 1.0
    scale = 1.4826 * float(np.median(np.abs(finite - np.median(finite))))
    if scale > 0:
        return scale
    spread = float(np.std(finite))
    return spread if spread > 0 else 1.0


def inject_anomalies(frame: pl.DataFrame, config: InjectionConfig | None = None
                     ) -> tuple[pl.DataFrame, pl.DataFrame]:
    """A copy of ``frame`` with seeded synthetic anomalies, and their label windows.

    Parameters
    ----------
    frame : long frame (the data contract), typically the validation part of each series.
    config : what to inject (:class:`InjectionConfig`).

    Returns
    -------
    injected : ``frame`` with changed values at the anomalies (same rows, order and schema;
        unobserved rows untouched).
    labels : one row per anomaly (``LABEL_SCHEMA``): series_id, channel, start, end
        (inclusive timestamps), kind, size (in the channel's units).

    The same frame and seed give the same result; a series' anomalies depend only on the
    seed, its id and its own rows.
    """
    config = config or InjectionConfig()
    if frame.is_empty():
        return frame, pl.DataFrame(schema=LABEL_SCHEMA)
    values = frame[VALUE].cast(pl.Float64).to_numpy().copy()
    observed = frame[OBSERVED].to_numpy()
    micros = frame[TIMESTAMP].dt.epoch("us").to_numpy()
    groups = (frame.select(SERIES_ID, CHANNEL).with_row_index("_row")
              .group_by(SERIES_ID, CHANNEL, maintain_order=True).agg(pl.col("_row")))
    by_series: dict[str, list[tuple[str, np.ndarray]]] = {}
    for series_id, channel, rows in groups.iter_rows():
        rows = np.asarray(rows, np.int64)
        by_series.setdefault(series_id, []).append((channel, rows[observed[rows]]))
    labels = []
    for series_id, channels in by_series.items():
        rng = np.random.default_rng([config.seed, zlib.crc32(series_id.encode())])
        for channel, rows, kind, size in _plan(channels, values, micros, rng, config):
            _apply(values, rows, kind, size, rng)
            labels.append({SERIES_ID: series_id, CHANNEL: channel,
                           START: int(micros[rows[0]]), END: int(micros[rows[-1]]),
                           "kind": kind, "size": size})
    injected = frame.with_columns(pl.Series(VALUE, values, pl.Float64).fill_nan(None))
    label_frame = pl.DataFrame(labels, schema={**LABEL_SCHEMA, START: pl.Int64, END: pl.Int64})
    return injected, label_frame.with_columns(
        pl.col(START, END).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))


def _plan(channels: list[tuple[str, np.ndarray]], values: np.ndarray, micros: np.ndarray,
          rng: np.random.Generator, config: InjectionConfig
          ) -> list[tuple[str, np.ndarray, str, float]]:
    """(channel, rows, kind, size) of each anomaly of one series.

    The series' time span is cut into equal slots, one anomaly per slot on a random channel,
    placed at random among the channel's observed rows in the slot's last three quarters, so
    anomalies never touch each other.  A slot with fewer than 4 such rows gets none.
    """
    longest = max(rows.size for _, rows in channels)
    count = min(config.n_per_series, longest // 8)
    observed_rows = [rows for _, rows in channels if rows.size]
    if count == 0 or not observed_rows:
        return []
    everything = np.concatenate(observed_rows)
    first, last = int(micros[everything].min()), int(micros[everything].max()) + 1
    kinds = [KINDS[i] for i in rng.permutation(len(KINDS))]
    plan = []
    for slot in range(count):
        name, rows = channels[int(rng.integers(len(channels)))]
        low_t = first + (last - first) * slot // count
        high_t = first + (last - first) * (slot + 1) // count
        inside = rows[(micros[rows] >= low_t) & (micros[rows] < high_t)]
        if inside.size < 4:
            continue
        kind = kinds[slot % len(kinds)]
        length = 1 if kind == "spike" else max(2, min(config.max_length, inside.size // 4))
        start = int(rng.integers(inside.size // 4, inside.size - length + 1))
        factor = {"spike": config.spike_size, "level_shift": config.shift_size,
                  "variance_burst": config.burst_size}[kind]
        sign = 1.0 if rng.random() < 0.5 else -1.0
        plan.append((name, inside[start:start + length], kind,
                     sign * factor * robust_scale(values[rows])))
    return plan


def _apply(values: np.ndarray, rows: np.ndarray, kind: str, size: float,
           rng: np.random.Generator) -> None:
    """Add one anomaly to ``values[rows]`` in place."""
    if kind == "variance_burst":
        noise = rng.normal(0.0, abs(size), rows.size)
        values[rows] += noise + np.sign(noise) * 0.5 * abs(size)  # never a near-zero draw
    else:
        values[rows] += size


def gate_score(detector: Any, injected: pl.DataFrame, labels: pl.DataFrame,
               history: pl.DataFrame | None = None, context: int = 256) -> GateScore:
    """How well ``detector`` finds the injected anomalies (see the module docstring).

    Parameters
    ----------
    detector : a fitted detector (``score(frame) -> scores frame``); its state is untouched.
    injected, labels : from :func:`inject_anomalies`.
    history : rows before ``injected`` (the training part); the last ``context`` timestamps
        of each series are scored first so the detector's window is full at the first
        validation row, but only validation rows are evaluated.
    context : history rows per series.
    """
    if context < 0:
        raise RecurraError(f"`context` ({context}) must be >= 0")
    if injected.is_empty():
        return GateScore(0.0, 0.0, 0.0, 0.0, float("nan"), 0, 0, 0.0)
    frame = injected
    if history is not None and not history.is_empty() and context:
        tail = history.filter(pl.col(TIMESTAMP).rank("dense", descending=True)
                              .over(SERIES_ID) <= context)
        frame = pl.concat([tail, injected], how="vertical_relaxed").sort(
            [SERIES_ID, CHANNEL, TIMESTAMP])
    scores = detector.score(frame)
    first = injected.group_by(SERIES_ID).agg(pl.col(TIMESTAMP).min().alias("_first"))
    scores = (scores.join(first, on=SERIES_ID).filter(pl.col(TIMESTAMP) >= pl.col("_first"))
              .drop("_first").sort([SERIES_ID, TIMESTAMP]))
    return _match(scores, labels)


def _match(scores: pl.DataFrame, labels: pl.DataFrame) -> GateScore:
    """Pool event counts, flagged rows and AUC-PR of the series against the label windows."""
    found = missed = false_runs = 0
    all_scores, all_labels, all_flags = [], [], []
    windows_of = {sid: part for (sid,), part in labels.partition_by(
        SERIES_ID, as_dict=True).items()} if labels.height else {}
    for (series_id,), part in scores.partition_by(SERIES_ID, as_dict=True).items():
        stamps = part[TIMESTAMP]
        mask = np.zeros(part.height, dtype=bool)
        windows = windows_of.get(series_id)
        if windows is not None:
            for start, end in windows.select(START, END).iter_rows():
                mask |= ((stamps >= start) & (stamps <= end)).to_numpy()
        flags = part[IS_ANOMALY].fill_null(False).to_numpy()
        counts = event_counts(flags, runs(mask))
        found, missed, false_runs = found + counts[0], missed + counts[1], false_runs + counts[2]
        all_scores.append(part[SCORE].cast(pl.Float64).to_numpy())
        all_labels.append(mask)
        all_flags.append(flags)
    event_precision, recall, _ = precision_recall_f1(found, false_runs, missed)
    flags = np.concatenate(all_flags) if all_flags else np.zeros(0, bool)
    truth = np.concatenate(all_labels) if all_labels else np.zeros(0, bool)
    n_flagged = int(flags.sum())
    point_precision = float((flags & truth).sum() / n_flagged) if n_flagged else 0.0
    composite = (2 * recall * point_precision / (recall + point_precision)
                 if recall + point_precision > 0 else 0.0)
    area = float("nan")
    if all_scores:  # unscored (unobserved, warm-up) rows are left out of the ranking
        ranked = np.concatenate(all_scores)
        area = auc_pr(ranked[np.isfinite(ranked)], truth[np.isfinite(ranked)])
    return GateScore(composite, recall, point_precision, event_precision, area,
                     found + missed, false_runs, float(flags.mean()) if flags.size else 0.0)
