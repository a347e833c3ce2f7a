"""Loaders: files in, contract frames out, bad rows quarantined (never an exception per row).

Every loader returns a :class:`LoadResult`. Unit of account: a **record** is one non-blank
data line of the source (header excluded; for Parquet input, one row). Each record is either
*kept* (its values are in ``frame``, or it merged into an identical duplicate, or it went to
``static``) or *rejected* (one row of ``rejected`` with source_file, 1-based line, reason,
raw text), so always::

    n_rows_in == n_rows_kept + rejected.height

A record is rejected as a whole, with the reason of its first problem: unparseable
timestamp, text in a numeric column, an infinite value, the wrong number of fields, mixed
time zones (naive and offset timestamps in one file: the first value's convention wins), or
a *conflicting duplicate* (same key as an earlier record, different values: the earlier one
is kept). A quoted field may hold a line break (:mod:`recurra.data.csv_records`): the record's line
is the one it starts on and its raw text is the whole record. Missing markers (empty,
``NA``, ``NaN``, ...) are not problems: they become gaps (value null, observed False).
File-level problems (empty file, wrong delimiter, missing columns) raise
:class:`recurra.data.quarantine.LoadError` (a ``SchemaError``) naming the file.

Time zones: naive timestamps are taken as UTC unless a loader documents otherwise (Beijing
air quality is local time, Asia/Shanghai); everything is stored in UTC.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from recurra.data import csv_records
from recurra.data.quarantine import (
    LINE,
    NULL_MARKERS,
    RAW,
    LoadError,
    RawTable,
    check_header,
    check_ids,
    empty_rejected,
    parse_numbers,
    parse_timestamps,
    read_table,
    reject,
    strip_cells,
)
from recurra.data.regular import BUSINESS_DAY, key_order, parse_every, regularize
from recurra.data.schema import (
    CHANNEL,
    OBSERVED,
    SERIES_ID,
    TIMESTAMP,
    TIMESTAMP_DTYPE,
    VALUE,
    SchemaError,
    empty_frame,
    validate_frame,
)

AIR_CHANNELS = ("PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES", "DEWP", "RAIN",
                "WSPM")
AIR_TIME_ZONE = "Asia/Shanghai"
PRICE_CHANNELS = ("open", "high", "low", "close", "adj_close", "volume")
PHYSIONET_STATIC = ("Age", "Gender", "Height", "ICUType", "Weight")
PHYSIONET_BASE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
MATRIX_START = dt.datetime(1990, 1, 1, tzinfo=dt.UTC)
DUPLICATE_POLICY = "reject"
DUPLICATE_POLICIES = ("reject", "first", "last", "mean")


@dataclass(frozen=True)
class LoadResult:
    """What a loader produced.

    Attributes
    ----------
    frame : validated contract frame (gap rows included).
    rejected : source_file, line (1-based), reason, raw; one row per rejected record.
    source : the file or folder loaded.
    n_rows_in : records read (non-blank data lines, header excluded).
    n_rows_kept : records kept; ``n_rows_in == n_rows_kept + rejected.height``.
    static : per-series static features (PhysioNet), keyed by series_id, else ``None``.
    warnings : file-level notes that rejected nothing, e.g. ``"encoding: f.csv: not valid
        UTF-8; decoded as cp1252"``.
    """

    frame: pl.DataFrame
    rejected: pl.DataFrame
    source: str
    n_rows_in: int
    n_rows_kept: int
    static: pl.DataFrame | None = field(default=None)
    warnings: tuple[str, ...] = ()

    def reasons(self) -> dict[str, int]:
        """Rejected record counts by reason category (text before the first ':')."""
        if self.rejected.is_empty():
            return {}
        kinds = self.rejected.select(pl.col("reason").str.split(":").list.first())
        counts = kinds.group_by("reason").len().sort("reason")
        return dict(zip(counts["reason"].to_list(), counts["len"].to_list(), strict=True))


def combine(results: Sequence[LoadResult], source: str) -> LoadResult:
    """One result from several (e.g. the files of a folder)."""
    frames = [r.frame for r in results if r.frame.height]
    statics = [r.static for r in results if r.static is not None]
    return LoadResult(
        frame=validate_frame(pl.concat(frames)) if frames else empty_frame(),
        rejected=pl.concat([empty_rejected(), *[r.rejected for r in results]]),
        source=source, n_rows_in=sum(r.n_rows_in for r in results),
        n_rows_kept=sum(r.n_rows_kept for r in results),
        static=pl.concat(statics, how="diagonal_relaxed") if statics else None,
        warnings=tuple(w for r in results for w in r.warnings))


# -- the shared record pipeline ------------------------------------------------------------
def _records(cells: pl.DataFrame, stamps: pl.Series, stamp_problems: pl.Series,
             value_columns: Sequence[str], missing: tuple[float, ...] = ()) -> pl.DataFrame:
    """Cells with parsed ``timestamp``, float value columns and ``_problem`` (first one)."""
    if stamp_problems.null_count() == len(stamp_problems):
        values = _clean_numbers(cells, value_columns, missing)
        if values is not None:  # the common case: every cell parsed, one cast per column
            return cells.with_columns(stamps.alias(TIMESTAMP),
                                      stamp_problems.alias("_problem"), *values)
    parsed = [parse_numbers(c, missing=missing) for c in value_columns]
    flags = [f for _, f, _ in parsed]
    if flags and cells.select(pl.any_horizontal(flags).any()).item():
        # some cell failed: retry with spaces/quotes stripped (clean files skip this)
        cells = cells.with_columns(strip_cells(c) for c in value_columns)
    bad = pl.any_horizontal([pl.lit(stamp_problems).is_not_null(), *flags])
    cells = cells.with_columns(pl.lit(stamps).alias(TIMESTAMP),
                               pl.lit(stamp_problems).alias("_problem"), bad.alias("_bad"))
    if not cells["_bad"].any():  # the common case: no copy of the cells
        return cells.with_columns(*[v for v, _, _ in parsed]).drop("_bad")
    good = cells.filter(~pl.col("_bad")).with_columns(*[v for v, _, _ in parsed])
    rows = cells.filter(pl.col("_bad")).rechunk()  # polars 2.1 panics on chunked views
    if rows.height:  # messages only for problem rows: building text for all rows is costly
        rows = rows.with_columns(pl.coalesce(["_problem", *[m for _, _, m in parsed]])
                                 .alias("_problem")).with_columns(*[v for v, _, _ in parsed])
        good = pl.concat([good, rows])
    return good.drop("_bad")


def _clean_numbers(cells: pl.DataFrame, value_columns: Sequence[str],
                   missing: tuple[float, ...]) -> list[pl.Series] | None:
    """Float value columns when no cell of them is a problem (text, infinity), else None.

    Same rules as :func:`recurra.data.quarantine.parse_numbers`, with one cast per column: a cell
    that does not cast must be a null marker, NaN becomes a gap, ``missing`` too.
    """
    values = []
    for column in value_columns:
        text = cells[column]
        number = text.cast(pl.Float64, strict=False)
        if number.is_infinite().any():
            return None
        failed = number.is_null() & text.is_not_null()
        if failed.any() and not text.filter(failed).is_in(list(NULL_MARKERS)).all():
            return None
        value = number.fill_nan(None)
        if missing:
            value = pl.select(pl.when(value.is_in(list(missing))).then(None)
                              .otherwise(value)).to_series()
        values.append(value.alias(column))
    return values


def _split_problems(records: pl.DataFrame, path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    if records["_problem"].null_count() == records.height:
        return records.drop("_problem"), empty_rejected()
    bad = records.filter(pl.col("_problem").is_not_null())
    good = records.filter(pl.col("_problem").is_null()).drop("_problem")
    return good, reject(bad, path, pl.col("_problem"))


def _dedupe(good: pl.DataFrame, key: Sequence[str], value_columns: Sequence[str],
            path: Path, policy: str) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Sort by key (then line); drop identical duplicates; reject (or resolve) conflicting
    ones. Returns (kept records sorted by key, rejected)."""
    if policy not in DUPLICATE_POLICIES:
        raise SchemaError(f"`duplicates` ({policy!r}) must be one of {list(DUPLICATE_POLICIES)}")
    in_order, has_repeat = _key_order(good, key)
    if in_order and not has_repeat:  # the common case: one pass, no sort, no copy
        return good, empty_rejected()
    if not in_order:  # files are usually written in order: skip the sort
        good = good.sort([*key, LINE])
    repeat = pl.all_horizontal([pl.col(k) == pl.col(k).shift(1) for k in key]).fill_null(False)
    good = good.with_columns(repeat.alias("_repeat"))
    if not good["_repeat"].any():
        return good.drop("_repeat"), empty_rejected()
    # sorted by key: the first record of each key sits at the last non-repeat index
    start = pl.when(~pl.col("_repeat")).then(pl.int_range(pl.len())).forward_fill()
    good = good.with_columns(start.alias("_start"))
    same = pl.all_horizontal([pl.col(c).eq_missing(pl.col(c).gather(pl.col("_start")))
                              for c in value_columns])
    first_line = pl.col(LINE).gather(pl.col("_start"))
    good = good.with_columns(same.alias("_same"), first_line.alias("_first_line")).drop("_start")
    rejected = empty_rejected()
    if policy == "reject":
        conflicts = good.filter(pl.col("_repeat") & ~pl.col("_same"))
        rejected = reject(conflicts, path, pl.format(
            "conflicting duplicate: same key as line {} with different values",
            pl.col("_first_line")))
        kept = good.filter(~pl.col("_repeat"))
    elif policy in ("first", "last"):
        kept = good.unique(subset=list(key), keep=policy, maintain_order=True)
    else:
        kept = good.group_by(list(key), maintain_order=True).agg(
            pl.col(LINE).first(), *[pl.col(c).mean() for c in value_columns])
    return kept.drop("_repeat", "_same", "_first_line", strict=False), rejected


def _key_order(frame: pl.DataFrame, key: Sequence[str]) -> tuple[bool, bool]:
    """(rows are non-decreasing by ``key`` (ties then stay in line order), some row has
    the same key as the row before it), in one pass."""
    if (shortcut := key_order(frame, key)) is not None:
        return shortcut
    less, equal = pl.lit(False), pl.lit(True)
    for column in key:
        current, previous = pl.col(column), pl.col(column).shift(1)
        less = less | (equal & (current < previous))
        equal = equal & (current == previous)
    decreasing, repeat = frame.select(less.fill_null(False).any(),
                                      equal.fill_null(False).any().alias("_r")).row(0)
    return not decreasing, bool(repeat)


def _to_long(good: pl.DataFrame, value_columns: Sequence[str],
             channels: dict[str, str] | None = None) -> pl.DataFrame:
    """Contract frame from records sorted by key; built to satisfy the contract (unique,
    sorted, UTC, observed mask) without a second validation pass: ``Store.upsert`` and
    every estimator validate it again."""
    channels = channels or {}
    if CHANNEL in good.columns:  # long layout: one value column, already in key order
        frame = good.select(SERIES_ID, CHANNEL, TIMESTAMP, pl.col(value_columns[0]).alias(VALUE))
    else:
        frame = good.select(SERIES_ID, TIMESTAMP, *value_columns).unpivot(
            index=[SERIES_ID, TIMESTAMP], on=list(value_columns), variable_name=CHANNEL,
            value_name="_value").rename({"_value": VALUE})
        if channels:
            frame = frame.with_columns(pl.col(CHANNEL).replace(channels))
        frame = frame.sort([SERIES_ID, CHANNEL, TIMESTAMP])
    return frame.select(
        pl.col(SERIES_ID).cast(pl.Utf8), pl.col(CHANNEL).cast(pl.Utf8),
        pl.col(TIMESTAMP).cast(TIMESTAMP_DTYPE), pl.col(VALUE).cast(pl.Float64),
        pl.col(VALUE).is_not_null().alias(OBSERVED))


def _finish(table: RawTable, records: pl.DataFrame, key: Sequence[str],
            value_columns: Sequence[str], *, duplicates: str = DUPLICATE_POLICY,
            channels: dict[str, str] | None = None, n_extra_rejected: int = 0) -> LoadResult:
    good, bad = _split_problems(records, table.path)
    kept, conflicts = _dedupe(good, key, value_columns, table.path, duplicates)
    if bad.height or conflicts.height or table.rejected.height:
        repaired = csv_records.repair(table, records)  # records spanning lines, blank lines
        if repaired is not None:
            table, records = repaired
            good, bad = _split_problems(records, table.path)
            kept, conflicts = _dedupe(good, key, value_columns, table.path, duplicates)
    rejected = table.with_raw(pl.concat([table.rejected, bad, conflicts]).sort(LINE))
    n_in = table.cells.height + table.rejected.height
    frame = _to_long(kept, value_columns, channels) if kept.height else empty_frame()
    return LoadResult(frame, rejected, str(table.path), n_in, n_in - rejected.height,
                      warnings=table.warnings)


def _check_columns(table: RawTable, wanted: Sequence[str], parameter: str) -> None:
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise LoadError(f"{table.path}: `{parameter}` names column(s) {missing} that are not "
                        f"in the header {table.columns}")


# -- generic sensor files ------------------------------------------------------------------
def _parquet_table(path: Path) -> RawTable:
    try:
        data = pl.read_parquet(path)
    except (pl.exceptions.PolarsError, OSError) as error:
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise LoadError(f"{path}: not a readable Parquet file ({first})") from error
    if data.is_empty():
        raise LoadError(f"{path}: file is empty")
    check_header([c.strip() for c in data.columns], path)
    cells = data.with_columns(pl.col(c).cast(pl.Utf8) for c in data.columns)
    raw = pl.concat_str([pl.col(c).fill_null("") for c in data.columns], separator=",")
    cells = cells.with_row_index(LINE, offset=1).with_columns(pl.col(LINE).cast(pl.Int64),
                                                                raw.alias(RAW))
    return RawTable(path, list(data.columns), cells, ",", empty_rejected(), b"")


def load_sensor(path: str | Path, layout: str = "wide", timestamp_column: str = "timestamp",
                series_id: str | None = None, *, value_columns: Sequence[str] | None = None,
                series_column: str = "series_id", channel_column: str = "channel",
                value_column: str = "value", delimiter: str | None = None,
                time_zone: str | None = None, duplicates: str = DUPLICATE_POLICY) -> LoadResult:
    """Load a sensor CSV (optionally gzipped) or Parquet file.

    Layouts
    -------
    ``"wide"``: a timestamp column and one numeric column per channel (``value_columns``,
    default all others); series_id is ``series_id`` or the file stem.
    ``"long"``: columns ``series_column`` (else ``series_id`` / file stem),
    ``channel_column`` (else ``"value"``), timestamp and ``value_column``.

    ``delimiter`` ``None`` detects it from the header; a given one that does not match the
    header raises LoadError naming the delimiter found. For Parquet, ``line`` is the 1-based
    row number. ``duplicates``: ``"reject"`` (default), ``"first"``, ``"last"``, ``"mean"``.
    """
    if layout not in ("wide", "long"):
        raise SchemaError(f"`layout` ({layout!r}) must be one of ['wide', 'long']")
    path = Path(path)
    if path.is_dir():
        options = dict(layout=layout, timestamp_column=timestamp_column, series_id=series_id,
                       value_columns=value_columns, series_column=series_column,
                       channel_column=channel_column, value_column=value_column,
                       delimiter=delimiter, time_zone=time_zone, duplicates=duplicates)
        files = [f for f in _files(path, "*") if f.name.endswith(SENSOR_SUFFIXES)]
        if not files:
            raise LoadError(f"{path}: no sensor file ({', '.join(SENSOR_SUFFIXES)}) in this "
                            "folder")
        return load_folder(files, lambda f: load_sensor(f, **options), str(path))
    if path.suffix == ".parquet":
        table = _parquet_table(path)
    else:
        table = read_table(path, delimiter=delimiter)
    _check_columns(table, [timestamp_column], "timestamp_column")
    stamps, problems = parse_timestamps(table.cells[timestamp_column], time_zone=time_zone)
    default_id = series_id or file_stem(path)
    if layout == "long":
        _check_columns(table, [value_column], "value_column")
        cells = table.cells.with_columns(
            (pl.col(series_column) if series_column in table.columns
             else pl.lit(default_id)).alias(SERIES_ID),
            (pl.col(channel_column) if channel_column in table.columns
             else pl.lit("value")).alias(CHANNEL))
        records = check_ids(_records(cells, stamps, problems, [value_column]))
        return _finish(table, records, [SERIES_ID, CHANNEL, TIMESTAMP], [value_column],
                       duplicates=duplicates)
    if value_columns is None and series_column in table.columns:
        raise LoadError(f"{path}: column {series_column!r} in a file read with layout='wide' "
                        "(one numeric column per channel); this looks like a long file: "
                        "pass `-o layout=long` (load_sensor(..., layout='long'))")
    columns = list(value_columns or [c for c in table.columns if c != timestamp_column])
    _check_columns(table, columns, "value_columns")
    cells = table.cells.with_columns(pl.lit(default_id).alias(SERIES_ID))
    records = _records(cells, stamps, problems, columns)
    return _finish(table, records, [SERIES_ID, TIMESTAMP], columns, duplicates=duplicates)


def file_stem(path: Path) -> str:
    """``exchange_rate.txt.gz`` -> ``exchange_rate``."""
    name = path.name
    for suffix in (".gz", ".csv", ".txt", ".tsv", ".parquet"):
        name = name.removesuffix(suffix)
    return name


SENSOR_SUFFIXES = (".csv", ".csv.gz", ".tsv", ".txt", ".parquet")


def file_failure(path: Path, error: LoadError) -> LoadResult:
    """A file that cannot be read, as one rejected record: line 0 (the whole file)."""
    rejected = pl.DataFrame({"source_file": [str(path)], LINE: [0],
                             "reason": [f"file: {error}"], RAW: [""]},
                            schema=empty_rejected().schema)
    return LoadResult(empty_frame(), rejected, str(path), 1, 0)


def load_folder(files: Sequence[Path], load: Callable[[Path], LoadResult],
                source: str) -> LoadResult:
    """``load`` each file; a file that fails (LoadError) becomes its line-0 rejection and the
    other files still load. One file: its own result (or its LoadError)."""
    if len(files) == 1:
        return load(files[0])
    results = []
    for file in files:
        try:
            results.append(load(file))
        except LoadError as error:
            results.append(file_failure(file, error))
    return combine(results, source)


def _files(path: Path, pattern: str) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob(pattern) if p.is_file())
        if not files:
            raise LoadError(f"{path}: no {pattern} file in this folder")
        return files
    if not path.exists():
        raise LoadError(f"{path}: no such file or folder")
    return [path]


def load_nab(path: str | Path) -> LoadResult:
    """NAB ``timestamp,value`` files: one file, or a folder searched recursively.

    series_id is ``"nab/<category>/<file stem>"`` (category = the file's folder name, e.g.
    ``nab/realTraffic/speed_6005``); channel ``"value"``; timestamps naive UTC.
    """
    path = Path(path)
    return load_folder(_files(path, "*.csv"), lambda f: load_sensor(
        f, series_id=f"nab/{f.parent.name}/{file_stem(f)}", value_columns=["value"]), str(path))


def load_ett(path: str | Path) -> LoadResult:
    """ETT files (``date`` + HUFL, HULL, MUFL, MULL, LUFL, LULL, OT): series ``ett/<stem>``,
    7 channels, naive timestamps taken as UTC."""
    path = Path(path)
    return load_sensor(path, timestamp_column="date", series_id=f"ett/{file_stem(path)}")


# -- prices -------------------------------------------------------------------------------
def load_prices(path: str | Path, date_column: str = "date", series_id: str | None = None,
                *, symbol_column: str | None = None, holidays: Sequence[dt.date] = (),
                delimiter: str | None = None) -> LoadResult:
    """OHLCV (or close-only) daily prices on a business-day calendar.

    Columns are matched case-insensitively: ``open, high, low, close, adj close/adj_close,
    volume`` become those channels. Rows dated on a weekend are rejected; business days
    without a row (minus ``holidays``) become gap rows. series_id: the ``symbol_column``
    value per row, else ``series_id``, else the file stem.
    """
    path = Path(path)
    table = read_table(path, delimiter=delimiter)
    names = {c: c.strip().lower().replace(" ", "_") for c in table.columns}
    cells = table.cells.rename({c: n for c, n in names.items() if c != n})
    table = dataclasses.replace(table, columns=[names[c] for c in table.columns], cells=cells)
    date_column = date_column.lower()
    _check_columns(table, [date_column], "date_column")
    columns = [c for c in PRICE_CHANNELS if c in table.columns]
    if not columns:
        raise LoadError(f"{path}: no price column among {list(PRICE_CHANNELS)} in "
                        f"{table.columns}")
    stamps, problems = parse_timestamps(table.cells[date_column])
    weekend = stamps.dt.weekday() > 5
    problems = pl.select(pl.when(weekend & problems.is_null())
                         .then(pl.lit("date on a weekend (business-day calendar)"))
                         .otherwise(problems)).to_series()
    ident = pl.col(symbol_column.lower()) if symbol_column else pl.lit(series_id or file_stem(path))
    records = _records(table.cells.with_columns(ident.alias(SERIES_ID)), stamps, problems,
                       columns)
    result = _finish(table, _price_problems(records, columns), [SERIES_ID, TIMESTAMP], columns)
    frame = regularize(result.frame, BUSINESS_DAY, holidays=holidays) if result.frame.height \
        else result.frame
    return LoadResult(frame, result.rejected, result.source, result.n_rows_in,
                      result.n_rows_kept, warnings=result.warnings)


def _price_problems(records: pl.DataFrame, columns: Sequence[str]) -> pl.DataFrame:
    """Mark impossible OHLCV rows (``_problem``): a price <= 0, high < low, open or close
    outside [low, high], volume <= 0 (a day without trades is not a quote)."""
    prices = [c for c in ("open", "high", "low", "close", "adj_close") if c in columns]
    rules = [(pl.col(c) <= 0, f"non-positive price: {c} <= 0") for c in prices]
    if {"high", "low"} <= set(columns):
        rules.append((pl.col("high") < pl.col("low"), "inconsistent OHLC: high < low"))
        rules += [((pl.col(c) > pl.col("high")) | (pl.col(c) < pl.col("low")),
                   f"inconsistent OHLC: {c} outside [low, high]")
                  for c in ("open", "close") if c in columns]
    if "volume" in columns:
        rules.append((pl.col("volume") < 0, "negative volume"))
        rules.append((pl.col("volume") == 0, "zero volume: no trades that day"))
    if not rules:
        return records
    found = pl.coalesce([pl.when(rule.fill_null(False)).then(pl.lit(reason))
                         for rule, reason in rules])
    return records.with_columns(pl.coalesce(pl.col("_problem"), found).alias("_problem"))


# -- headerless matrices --------------------------------------------------------------------
def load_matrix(path: str | Path, series_id: str, start: dt.datetime | str | None = None,
                every: str = "1d", calendar: str | None = None, *,
                channels: Sequence[str] | None = None, delimiter: str | None = None
                ) -> LoadResult:
    """A headerless numeric matrix (rows = time steps, columns = channels), gzip or plain.

    Timestamps are synthetic, because such files carry none: row ``i`` (0-based data line,
    counting rejected lines so a bad line never shifts later dates) is ``start + i * every``
    with ``start`` defaulting to 1990-01-01 UTC (the exchange-rate series starts in 1990),
    or, with ``calendar="business-day"``, the ``i``-th business day from ``start``.
    Channels are ``c0, c1, ...`` unless ``channels`` names them.
    """
    path = Path(path)
    if calendar not in (None, BUSINESS_DAY):
        raise SchemaError(f"`calendar` ({calendar!r}) must be None or {BUSINESS_DAY!r}")
    step = parse_every(every)
    table = read_table(path, delimiter=delimiter, header=False)
    names = list(channels) if channels else table.columns
    if len(names) != len(table.columns):
        raise LoadError(f"{path}: `channels` has {len(names)} names but rows have "
                        f"{len(table.columns)} fields")
    first = MATRIX_START if start is None else _start(start)
    index = (table.cells[LINE] - 1).cast(pl.Int64)
    if calendar == BUSINESS_DAY:
        offsets = pl.select(pl.lit(first.date()).dt.add_business_days(index))
        stamps = offsets.to_series().cast(pl.Datetime("us")).dt.replace_time_zone("UTC")
        stamps = stamps + (first - dt.datetime.combine(first.date(), dt.time(), dt.UTC))
    else:
        stamps = pl.lit(first) + pl.duration(microseconds=index * step)
        stamps = pl.select(stamps).to_series()
    problems = pl.repeat(None, table.cells.height, dtype=pl.Utf8, eager=True)
    cells = table.cells.with_columns(pl.lit(series_id).alias(SERIES_ID))
    records = _records(cells, stamps, problems, table.columns)
    return _finish(table, records, [SERIES_ID, TIMESTAMP], table.columns,
                   channels=dict(zip(table.columns, names, strict=True)))


def _start(value: dt.datetime | dt.date | str) -> dt.datetime:
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError as error:
            raise SchemaError(f"`start` ({value!r}) must be an ISO date") from error
    if not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


# -- Beijing air quality --------------------------------------------------------------------
def load_air_quality(paths: str | Path | Sequence[str | Path]) -> LoadResult:
    """Beijing multi-site air-quality CSVs (files, or a folder of ``PRSA_*.csv``).

    Timestamps from year/month/day/hour in Beijing local time (Asia/Shanghai, UTC+8, no DST)
    converted to UTC. series_id ``"air/<station>"`` (``station`` column, else from the file
    name); channels PM2.5, PM10, SO2, NO2, CO, O3, TEMP, PRES, DEWP, RAIN, WSPM (``wd``, the
    wind direction text, and ``No`` are not channels); ``NA`` cells are gaps.
    """
    items = [paths] if isinstance(paths, str | Path) else list(paths)
    files = [f for p in items for f in _files(Path(p), "PRSA_*.csv*")]
    return load_folder(files, _load_air_file, ",".join(map(str, items)))


def _load_air_file(path: Path) -> LoadResult:
    table = read_table(path, required=("year", "month", "day", "hour"))
    columns = [c for c in AIR_CHANNELS if c in table.columns]
    part = [pl.col(c).str.zfill(2) for c in ("month", "day", "hour")]
    text = table.cells.select(pl.format("{}-{}-{} {}:00", pl.col("year"), *part)).to_series()
    stamps, problems = parse_timestamps(text, time_zone=AIR_TIME_ZONE)
    match = re.match(r"PRSA_Data_(.+?)_\d{8}-\d{8}", path.name)
    station = match.group(1) if match else file_stem(path)
    ident = (pl.lit("air/") + pl.col("station")) if "station" in table.columns \
        else pl.lit(f"air/{station}")
    records = _records(table.cells.with_columns(ident.alias(SERIES_ID)), stamps, problems,
                       columns)
    return _finish(table, records, [SERIES_ID, TIMESTAMP], columns)


# -- PhysioNet 2012 --------------------------------------------------------------------------
def load_physionet(records_path: str | Path, outcomes_path: str | Path | None = None, *,
                   duplicates: str = DUPLICATE_POLICY) -> LoadResult:
    """PhysioNet 2012 long records ``RecordID,Time,Parameter,Value`` (gzip or plain).

    Time ``HH:MM`` (hours may exceed 23) is elapsed time since admission; timestamps are
    2000-01-01 00:00 UTC + that offset (irregular, kept as they are). Value -1 is missing.
    series_id ``"physionet/<RecordID>"``, channel = parameter. The static parameters (Age,
    Gender, Height, ICUType, Weight) at 00:00 go to ``static`` (one row per series), joined
    with the outcomes file when given; the ``RecordID`` rows are consumed (kept, no value).
    """
    path = Path(records_path)
    table = read_table(path, required=("RecordID", "Time", "Parameter", "Value"))
    cells = table.cells
    clock = cells["Time"].str.split_exact(":", 1).struct.unnest()
    hours = clock["field_0"].cast(pl.Int64, strict=False)
    minutes = clock["field_1"].cast(pl.Int64, strict=False)
    record = cells["RecordID"].cast(pl.Int64, strict=False)
    ok = hours.is_not_null() & minutes.is_not_null() & (hours >= 0) & minutes.is_between(0, 59)
    stamps = pl.select(pl.when(ok).then(pl.lit(PHYSIONET_BASE) + pl.duration(
        hours=hours, minutes=minutes))).to_series()
    problems = pl.select(
        pl.when(record.is_null()).then(pl.format("unparseable RecordID: '{}'",
                                                 pl.lit(cells["RecordID"])))
        .when(~ok).then(pl.format("unparseable timestamp: '{}'", pl.lit(cells["Time"])))
        .when(pl.lit(cells["Parameter"]) == "").then(pl.lit("empty Parameter"))).to_series()
    cells = cells.with_columns(
        pl.format("physionet/{}", pl.lit(record)).alias(SERIES_ID),
        pl.col("Parameter").alias(CHANNEL))
    records = _records(cells, stamps, problems, ["Value"], missing=(-1.0,))
    is_static = pl.col(CHANNEL).is_in(list(PHYSIONET_STATIC)) & (pl.col("Time") == "00:00")
    is_id = pl.col(CHANNEL) == "RecordID"
    static_rows = records.filter(pl.col("_problem").is_null() & (is_static | is_id))
    table_rest = dataclasses.replace(table, cells=cells)
    series_records = records.filter(pl.col("_problem").is_not_null() | ~(is_static | is_id))
    result = _finish(table_rest, series_records, [SERIES_ID, CHANNEL, TIMESTAMP], ["Value"],
                     duplicates=duplicates)
    static = _physionet_static(static_rows, records.select(SERIES_ID).unique())
    if outcomes_path is not None:
        static = static.join(_physionet_outcomes(Path(outcomes_path)), on=SERIES_ID,
                             how="left")
    return LoadResult(result.frame, result.rejected, str(path), result.n_rows_in,
                      result.n_rows_kept, static, result.warnings)


def _physionet_static(rows: pl.DataFrame, ids: pl.DataFrame) -> pl.DataFrame:
    values = rows.filter(pl.col(CHANNEL) != "RecordID").group_by(
        [SERIES_ID, CHANNEL], maintain_order=True).agg(pl.col("Value").last())
    wide = values.pivot(on=CHANNEL, index=SERIES_ID, values="Value") if values.height \
        else pl.DataFrame(schema={SERIES_ID: pl.Utf8})
    for name in PHYSIONET_STATIC:
        if name not in wide.columns:
            wide = wide.with_columns(pl.lit(None, pl.Float64).alias(name))
    wide = ids.join(wide, on=SERIES_ID, how="left")
    return wide.select(SERIES_ID, *[pl.col(n).cast(pl.Float64) for n in PHYSIONET_STATIC]
                       ).sort(SERIES_ID)


def _physionet_outcomes(path: Path) -> pl.DataFrame:
    table = read_table(path, required=("RecordID",))
    others = [c for c in table.columns if c != "RecordID"]
    return table.cells.select(
        pl.format("physionet/{}", pl.col("RecordID").cast(pl.Int64, strict=False))
        .alias(SERIES_ID),
        *[pl.col(c).cast(pl.Float64, strict=False) for c in others])
