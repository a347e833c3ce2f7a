"""The record pipeline every loader shares: cells -> parsed records -> kept rows and
rejected records, plus :class:`LoadResult` and the folder helpers.

A loader reads a :class:`recurra.data.quarantine.RawTable`, parses its timestamps and
numbers with :func:`parse_records` (each record gets its first problem, if any) and hands
the records to :func:`finish`, which splits off the rejected ones, resolves duplicate keys
(``DUPLICATE_POLICIES``), repairs records that span lines and returns the long contract
frame with ``n_rows_in == n_rows_kept + rejected.height``.
"""

from __future__ import annotations

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
    empty_rejected,
    parse_numbers,
    reject,
    strip_cells,
)
from recurra.data.regular import key_order
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
def parse_records(cells: pl.DataFrame, stamps: pl.Series, stamp_problems: pl.Series,
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


def finish(table: RawTable, records: pl.DataFrame, key: Sequence[str],
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


def check_columns(table: RawTable, wanted: Sequence[str], parameter: str) -> None:
    missing = [c for c in wanted if c not in table.columns]
    if missing:
        raise LoadError(f"{table.path}: `{parameter}` names column(s) {missing} that are not "
                        f"in the header {table.columns}")


def parquet_table(path: Path) -> RawTable:
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


def files_in(path: Path, pattern: str) -> list[Path]:
    if path.is_dir():
        files = sorted(p for p in path.rglob(pattern) if p.is_file())
        if not files:
            raise LoadError(f"{path}: no {pattern} file in this folder")
        return files
    if not path.exists():
        raise LoadError(f"{path}: no such file or folder")
    return [path]
