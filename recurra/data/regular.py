"""Regular grids, frequency inference and duplicate resolution for contract frames.

- :func:`infer_frequency` names the spacing of a set of timestamps: ``"5m"``, ``"1h"``,
  ``"1d"``, ``"business-day"`` or ``"irregular"`` (``"unknown"`` for fewer than 3 points).
- :func:`regularize` puts each (series_id, channel) on a grid, inserting gap rows
  (``value`` null, ``observed=False``); existing rows are never changed or dropped.
- :func:`resolve_duplicates` merges rows sharing a (series_id, channel, timestamp) key.

Time zones: every timestamp is converted to UTC (naive ones are taken as UTC) by
:func:`recurra.data.schema.validate_frame`; a business-day calendar is evaluated on UTC dates.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Sequence

import numpy as np
import polars as pl

from recurra.data.schema import (
    CHANNEL,
    KEY,
    OBSERVED,
    SERIES_ID,
    TIMESTAMP,
    TIMESTAMP_DTYPE,
    VALUE,
    SchemaError,
    to_polars,
    validate_frame,
)

BUSINESS_DAY = "business-day"
IRREGULAR = "irregular"
UNKNOWN = "unknown"
DUPLICATE_RULES = ("last", "first", "mean", "error")
REGULAR_SHARE = 0.9  # share of spacings that must be whole multiples of the modal spacing
MODE_SHARE = 0.5  # share of spacings that must equal the modal spacing
MIN_POINTS = 3  # fewer distinct timestamps: "unknown"
_UNITS = (("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1))
_EVERY = re.compile(r"^(\d+)(d|h|m|s|ms|us)$")
_MICROS = {"d": 86_400_000_000, "h": 3_600_000_000, "m": 60_000_000, "s": 1_000_000,
           "ms": 1_000, "us": 1}


def format_every(micros: int) -> str:
    """A spacing in microseconds as text: ``format_every(3_600_000_000) == "1h"``."""
    seconds, rest = divmod(int(micros), 1_000_000)
    if rest:
        return f"{micros}us"
    for unit, size in _UNITS:
        if seconds % size == 0:
            return f"{seconds // size}{unit}"
    return f"{seconds}s"  # pragma: no cover - seconds always divide


def parse_every(every: str) -> int:
    """A spacing like ``"15m"``, ``"1h"``, ``"1d"`` in microseconds (error names the rule)."""
    match = _EVERY.match(str(every).strip())
    if not match or int(match.group(1)) <= 0:
        raise SchemaError(
            f"`every` ({every!r}) must be a positive count and a unit among "
            f"{sorted(_MICROS)} (e.g. '15m', '1h', '1d') or {BUSINESS_DAY!r}"
        )
    return int(match.group(1)) * _MICROS[match.group(2)]


def _as_micros(timestamps: Iterable | pl.Series | np.ndarray) -> np.ndarray:
    series = timestamps if isinstance(timestamps, pl.Series) else pl.Series(list(timestamps))
    if isinstance(series.dtype, pl.Datetime):
        series = series.dt.cast_time_unit("us")
    elif series.dtype == pl.Date:
        series = series.cast(pl.Datetime("us"))
    else:
        raise SchemaError(f"`timestamps` must be datetimes, got {series.dtype}")
    micros = series.drop_nulls().to_physical().to_numpy().astype(np.int64)
    if micros.size > 1 and bool(np.all(micros[1:] > micros[:-1])):
        return micros  # already sorted and distinct (one channel): skip the sort
    return np.unique(micros)


def infer_frequency(timestamps: Iterable | pl.Series | np.ndarray) -> str:
    """Name the spacing of ``timestamps`` (any order, duplicates ignored).

    Rule: take the most common spacing ``m`` between consecutive distinct timestamps; the
    series is regular with spacing ``m`` when at least half the spacings equal ``m`` and at
    least 90 % are whole multiples of ``m`` (multiples are gaps). A daily spacing whose
    points all fall on weekdays and which skips weekends is ``"business-day"``. Otherwise
    ``"irregular"``.

    >>> import datetime as dt
    >>> infer_frequency([dt.datetime(2024, 1, 1, h) for h in range(5)])
    '1h'
    """
    micros = _as_micros(timestamps)
    if micros.size < MIN_POINTS:
        return UNKNOWN
    diffs = np.diff(micros)
    if bool(np.all(diffs == diffs[0])):  # perfectly regular: no need to count spacings
        values, counts = diffs[:1], np.array([diffs.size])
    else:
        values, counts = np.unique(diffs, return_counts=True)
    mode = int(values[np.argmax(counts)])
    if counts.max() < MODE_SHARE * diffs.size or np.mean(diffs % mode == 0) < REGULAR_SHARE:
        return IRREGULAR
    day = _MICROS["d"]
    if mode == day and _on_weekdays_only(micros) and np.any(diffs == 3 * day):
        return BUSINESS_DAY
    return format_every(mode)


MAX_RUNS = 100_000  # above this many key runs, key_order leaves the check to expressions


def key_order(frame: pl.DataFrame, key: Sequence[str]) -> tuple[bool, bool] | None:
    """Whether ``frame`` is non-decreasing by ``key`` and whether some row repeats the key of
    the row before it, from runs of the grouping columns (all but the last, a timestamp) and
    integer differences of the timestamps: no row-by-row string comparison.

    Returns ``None`` when this shortcut does not apply (nulls in the key, more than
    :data:`MAX_RUNS` runs, a last column that is not a datetime); the caller then compares
    rows with expressions. ``(in_order, has_repeat)``; ``has_repeat`` only means something
    when ``in_order``.
    """
    *groups, time_column = key
    if frame.height < 2:
        return True, False
    if not isinstance(frame.schema[time_column], pl.Datetime) or \
            any(frame[c].null_count() for c in key):
        return None
    index = np.zeros(1, dtype=np.int64)  # first row of each run of the grouping columns
    for column in groups:
        lengths = frame[column].rle().struct.field("len").to_numpy().astype(np.int64)
        if lengths.size > MAX_RUNS:
            return None
        index = np.union1d(index, np.cumsum(lengths)[:-1])
    if index.size > MAX_RUNS:
        return None
    heads = frame.select(pl.col(list(groups)).gather(index)).rows() if groups else []
    if any(a > b for a, b in zip(heads, heads[1:], strict=False)):  # str order = polars
        return False, False
    steps = np.diff(frame[time_column].to_physical().to_numpy())
    steps[index[1:] - 1] = 1  # a new run may start at any time
    if steps.size and int(steps.min()) < 0:
        return False, False
    return True, not bool(steps.all())


def _on_weekdays_only(micros: np.ndarray) -> bool:
    days = micros // _MICROS["d"]
    weekday = (days + 3) % 7  # 1970-01-01 was a Thursday (weekday 3, Monday = 0)
    return bool(np.all(weekday < 5))


def business_days(start: dt.date, end: dt.date,
                  holidays: Sequence[dt.date] = ()) -> list[dt.date]:
    """Weekdays from ``start`` to ``end`` inclusive, minus ``holidays``."""
    days = pl.date_range(start, end, "1d", eager=True)
    skip = set(holidays)
    return [d for d in days.to_list() if d.weekday() < 5 and d not in skip]


def regularize(frame, every: str | None = None, *,
               holidays: Sequence[dt.date] = ()) -> pl.DataFrame:
    """Insert gap rows so that each (series_id, channel) lies on a regular grid.

    Parameters
    ----------
    frame : contract frame (pandas or polars).
    every : ``"15m"``, ``"1h"``, ``"1d"``..., ``"business-day"``, or ``None`` to infer it
        per series with :func:`infer_frequency` (irregular series are returned unchanged).
    holidays : dates that are not business days (only with ``"business-day"``); a business
        day without a row is otherwise a gap; weekends never are.

    Returns
    -------
    contract frame: the original rows plus, for each missing grid point between the first
    and last timestamp of each (series_id, channel), a row with value null and
    observed=False. Rows off the grid are kept as they are.
    """
    frame = validate_frame(frame)
    if every is not None and every != BUSINESS_DAY:
        parse_every(every)
    parts = []
    for (series_id,), part in frame.group_by(SERIES_ID, maintain_order=True):
        spacing = every or infer_frequency(part[TIMESTAMP])
        parts.append(_regularize_series(part, str(series_id), spacing, holidays))
    if not parts:
        return frame
    return validate_frame(pl.concat(parts))


def _grid(first: dt.datetime, last: dt.datetime, spacing: str,
          holidays: Sequence[dt.date]) -> pl.Series | None:
    if spacing in (IRREGULAR, UNKNOWN):
        return None
    if spacing == BUSINESS_DAY:
        dates = business_days(first.date(), last.date(), holidays)
        time = first.timetz()
        stamps = [dt.datetime.combine(d, time) for d in dates]
        return pl.Series(TIMESTAMP, stamps, dtype=TIMESTAMP_DTYPE)
    step = dt.timedelta(microseconds=parse_every(spacing))
    return pl.datetime_range(first, last, step, eager=True, time_unit="us",
                             time_zone="UTC").alias(TIMESTAMP)


def _regularize_series(part: pl.DataFrame, series_id: str, spacing: str,
                       holidays: Sequence[dt.date]) -> pl.DataFrame:
    out = [part]
    for (channel,), rows in part.group_by(CHANNEL, maintain_order=True):
        grid = _grid(rows[TIMESTAMP].min(), rows[TIMESTAMP].max(), spacing, holidays)
        if grid is None:
            continue
        missing = grid.to_frame().join(rows.select(TIMESTAMP), on=TIMESTAMP, how="anti")
        if missing.height:
            out.append(missing.with_columns(
                pl.lit(series_id, pl.Utf8).alias(SERIES_ID),
                pl.lit(channel, pl.Utf8).alias(CHANNEL),
                pl.lit(None, pl.Float64).alias(VALUE),
                pl.lit(False).alias(OBSERVED),
            ).select(part.columns))
    return pl.concat(out) if len(out) > 1 else part


def resolve_duplicates(frame, rule: str = "last") -> tuple[pl.DataFrame, pl.DataFrame]:
    """Merge rows that share a (series_id, channel, timestamp) key.

    Identical duplicates (same value, or all null) are merged silently. For a key whose
    rows hold *different* values the rule decides:

    - ``"last"`` / ``"first"``: keep the last / first row in input order (file order);
    - ``"mean"``: the mean of the non-null values;
    - ``"error"``: raise :class:`SchemaError` naming the first conflicting key.

    A null next to a value counts as differing (the value wins under ``"mean"``).

    Parameters
    ----------
    frame : polars or pandas frame with series_id, timestamp (Datetime), value and
        optionally channel; need not be unique or sorted.

    Returns
    -------
    (resolved contract frame, conflicts) where ``conflicts`` has one row per conflicting
    key: series_id, channel, timestamp, n_rows, values (list of the differing values).
    """
    if rule not in DUPLICATE_RULES:
        raise SchemaError(f"`rule` ({rule!r}) must be one of {list(DUPLICATE_RULES)}")
    frame = to_polars(frame)
    if CHANNEL not in frame.columns:
        frame = frame.with_columns(pl.lit("value", pl.Utf8).alias(CHANNEL))
    frame = frame.select([SERIES_ID, CHANNEL, TIMESTAMP, VALUE]).with_row_index("_order")
    key = list(KEY)
    grouped = frame.group_by(key).agg(
        pl.len().alias("n_rows"),
        pl.col(VALUE).n_unique().alias("_n_distinct"),
        pl.col(VALUE).alias("values"),
    )
    conflicts = grouped.filter(pl.col("_n_distinct") > 1).drop("_n_distinct").sort(key)
    if rule == "error" and conflicts.height:
        first = conflicts.row(0, named=True)
        raise SchemaError(
            f"{conflicts.height} duplicate key(s) hold different values (first: "
            f"{first[SERIES_ID]!r}/{first[CHANNEL]!r} at {first[TIMESTAMP]}: "
            f"{first['values']}); rule 'error' forbids conflicting duplicates"
        )
    if rule == "mean":
        resolved = frame.group_by(key).agg(pl.col(VALUE).mean())
    else:
        keep = "first" if rule == "first" else "last"
        resolved = frame.sort("_order").unique(subset=key, keep=keep).drop("_order")
    return validate_frame(resolved), conflicts
