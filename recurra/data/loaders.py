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
from collections.abc import Sequence
from pathlib import Path

import polars as pl

from recurra.data.load_pipeline import (  # noqa: F401 - LoadResult and helpers re-exported
    DUPLICATE_POLICIES,
    DUPLICATE_POLICY,
    SENSOR_SUFFIXES,
    LoadResult,
    check_columns,
    combine,
    file_failure,
    file_stem,
    files_in,
    finish,
    load_folder,
    parquet_table,
    parse_records,
)
from recurra.data.quarantine import (
    LINE,
    LoadError,
    check_ids,
    parse_timestamps,
    read_table,
)
from recurra.data.regular import BUSINESS_DAY, parse_every, regularize
from recurra.data.schema import (
    CHANNEL,
    SERIES_ID,
    TIMESTAMP,
    SchemaError,
)

AIR_CHANNELS = ("PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES", "DEWP", "RAIN",
                "WSPM")
AIR_TIME_ZONE = "Asia/Shanghai"
PRICE_CHANNELS = ("open", "high", "low", "close", "adj_close", "volume")
PHYSIONET_STATIC = ("Age", "Gender", "Height", "ICUType", "Weight")
PHYSIONET_BASE = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
MATRIX_START = dt.datetime(1990, 1, 1, tzinfo=dt.UTC)


# -- generic sensor files ------------------------------------------------------------------
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
        files = [f for f in files_in(path, "*") if f.name.endswith(SENSOR_SUFFIXES)]
        if not files:
            raise LoadError(f"{path}: no sensor file ({', '.join(SENSOR_SUFFIXES)}) in this "
                            "folder")
        return load_folder(files, lambda f: load_sensor(f, **options), str(path))
    if path.suffix == ".parquet":
        table = parquet_table(path)
    else:
        table = read_table(path, delimiter=delimiter)
    check_columns(table, [timestamp_column], "timestamp_column")
    stamps, problems = parse_timestamps(table.cells[timestamp_column], time_zone=time_zone)
    default_id = series_id or file_stem(path)
    if layout == "long":
        check_columns(table, [value_column], "value_column")
        cells = table.cells.with_columns(
            (pl.col(series_column) if series_column in table.columns
             else pl.lit(default_id)).alias(SERIES_ID),
            (pl.col(channel_column) if channel_column in table.columns
             else pl.lit("value")).alias(CHANNEL))
        records = check_ids(parse_records(cells, stamps, problems, [value_column]))
        return finish(table, records, [SERIES_ID, CHANNEL, TIMESTAMP], [value_column],
                       duplicates=duplicates)
    if value_columns is None and series_column in table.columns:
        raise LoadError(f"{path}: column {series_column!r} in a file read with layout='wide' "
                        "(one numeric column per channel); this looks like a long file: "
                        "pass `-o layout=long` (load_sensor(..., layout='long'))")
    columns = list(value_columns or [c for c in table.columns if c != timestamp_column])
    check_columns(table, columns, "value_columns")
    cells = table.cells.with_columns(pl.lit(default_id).alias(SERIES_ID))
    records = parse_records(cells, stamps, problems, columns)
    return finish(table, records, [SERIES_ID, TIMESTAMP], columns, duplicates=duplicates)


def load_nab(path: str | Path) -> LoadResult:
    """NAB ``timestamp,value`` files: one file, or a folder searched recursively.

    series_id is ``"nab/<category>/<file stem>"`` (category = the file's folder name, e.g.
    ``nab/realTraffic/speed_6005``); channel ``"value"``; timestamps naive UTC.
    """
    path = Path(path)
    return load_folder(files_in(path, "*.csv"), lambda f: load_sensor(
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
    check_columns(table, [date_column], "date_column")
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
    records = parse_records(table.cells.with_columns(ident.alias(SERIES_ID)), stamps, problems,
                       columns)
    result = finish(table, _price_problems(records, columns), [SERIES_ID, TIMESTAMP], columns)
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
    records = parse_records(cells, stamps, problems, table.columns)
    return finish(table, records, [SERIES_ID, TIMESTAMP], table.columns,
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
    files = [f for p in items for f in files_in(Path(p), "PRSA_*.csv*")]
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
    records = parse_records(table.cells.with_columns(ident.alias(SERIES_ID)), stamps, problems,
                       columns)
    return finish(table, records, [SERIES_ID, TIMESTAMP], columns)


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
    records = parse_records(cells, stamps, problems, ["Value"], missing=(-1.0,))
    is_static = pl.col(CHANNEL).is_in(list(PHYSIONET_STATIC)) & (pl.col("Time") == "00:00")
    is_id = pl.col(CHANNEL) == "RecordID"
    static_rows = records.filter(pl.col("_problem").is_null() & (is_static | is_id))
    table_rest = dataclasses.replace(table, cells=cells)
    series_records = records.filter(pl.col("_problem").is_not_null() | ~(is_static | is_id))
    result = finish(table_rest, series_records, [SERIES_ID, CHANNEL, TIMESTAMP], ["Value"],
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
