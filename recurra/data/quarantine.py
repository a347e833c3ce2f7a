"""Tolerant reading of delimited text: every line keeps its number and raw text, and every
cell that cannot be parsed becomes a *rejection* (source_file, line, reason, raw) instead of
an exception. The loaders in :mod:`recurra.data.loaders` are built on these pieces.

Unit of account: a **record** is one non-blank data line of the file (header excluded).
Every record is either kept (stored, merged into an identical duplicate, or moved to the
static frame) or rejected as a whole with the reason of its first problem. Blank lines are
not records. Lines are 1-based line numbers in the (decompressed) file.

Quoted fields that contain a line break are read as one record; :mod:`recurra.data.csv_records`
gives such records their physical starting line and whole raw text (only when a record was
rejected, so clean files pay nothing). Spaces and stray quotes around a cell are tolerated:
a cell that fails to parse is retried stripped (clean files never pay for stripping).

Size: ~490 lines, because the fast path (polars' CSV reader on clean UTF-8) and the slow
path (transcoding, quoted line breaks, ragged rows) must give the same line numbers, raw
texts and reasons; keeping them in one module keeps that contract in one reader's view.
"""

from __future__ import annotations

import codecs
import csv
import dataclasses
import gzip
import io
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from recurra.data.schema import CHANNEL, SERIES_ID, SchemaError

LINE = "line"
RAW = "raw"
REASON = "reason"
SOURCE_FILE = "source_file"
REJECTED_SCHEMA: dict[str, pl.DataType] = {
    SOURCE_FILE: pl.Utf8, LINE: pl.Int64, REASON: pl.Utf8, RAW: pl.Utf8}
DELIMITERS = (",", ";", "\t", "|")
HEAD_BYTES = 1 << 20  # files over 4x this are parsed from disk, not from memory
NULL_MARKERS = ("", "NA", "N/A", "NaN", "nan", "NAN", "null", "NULL", "None", "none", "-", "?")
_OFFSET = r"(Z|[+-]\d{2}:?\d{2})$"
NAIVE_FORMATS = ("%Y-%m-%d %H:%M:%S", "%Y-%m-%d %H:%M:%S%.f", "%Y-%m-%dT%H:%M:%S",
                 "%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%d %H:%M",
                 "%Y-%m-%dT%H:%M", "%Y-%m-%d", "%Y/%m/%d %H:%M:%S", "%Y/%m/%d %H:%M",
                 "%Y/%m/%d", "%Y%m%d")
AWARE_FORMATS = ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S%.f%z", "%Y-%m-%d %H:%M:%S%.f%z",
                 "%Y-%m-%dT%H:%M%z", "%Y-%m-%d %H:%M%z")


class LoadError(SchemaError):
    """A whole file cannot be read (empty, wrong delimiter, missing columns...)."""


def empty_rejected() -> pl.DataFrame:
    return pl.DataFrame(schema=REJECTED_SCHEMA)


@dataclass
class RawTable:
    """A delimited file split into string cells, one row per record.

    Attributes
    ----------
    path : the file.
    columns : header names (or ``c0..cN`` when headerless).
    cells : string columns named as ``columns`` plus ``line`` (Int64) and ``raw`` (Utf8).
    delimiter : the delimiter used.
    rejected : records rejected while splitting (wrong number of fields).
    data : the decompressed file content (to recover the raw text of rejected lines).
    warnings : file-level notes that did not reject anything (e.g. the encoding guessed).
    """

    path: Path
    columns: list[str]
    cells: pl.DataFrame
    delimiter: str
    rejected: pl.DataFrame
    data: bytes = b""
    warnings: tuple[str, ...] = ()

    def with_raw(self, rejected: pl.DataFrame) -> pl.DataFrame:
        """``rejected`` with ``raw`` set to the text of each rejected line of the file."""
        if rejected.is_empty():
            return rejected
        data = self.data or (read_bytes(self.path) if self.path.suffix != ".parquet" else b"")
        if not data:
            return rejected
        lines = data.decode("utf-8", "replace").split("\n")
        raw = [lines[n - 1].rstrip("\r") if 0 < n <= len(lines) else ""
               for n in rejected[LINE].to_list()]
        return rejected.with_columns(pl.Series(RAW, raw, dtype=pl.Utf8))


def read_bytes(path: Path) -> bytes:
    """File content, gunzipped when the name ends in ``.gz`` or the bytes are gzip."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError, PermissionError) as error:
        raise LoadError(f"{path}: cannot read the file ({error.strerror})") from error
    if data[:2] == b"\x1f\x8b":
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError) as error:
            raise LoadError(f"{path}: corrupt gzip file ({error})") from error
    return data


def transcode(data: bytes, path: Path) -> tuple[bytes, str | None]:
    """``data`` as UTF-8 bytes and the encoding it was decoded from (``None``: UTF-8).

    A UTF-16 BOM (LE or BE) decodes as UTF-16 (a decode error raises :class:`LoadError`
    naming UTF-16); a UTF-8 BOM is dropped; bytes that are not valid UTF-8 decode as cp1252
    (latin-1 for the 5 bytes cp1252 leaves undefined), never as U+FFFD.
    """
    for bom, encoding in ((codecs.BOM_UTF16_LE, "utf-16-le"), (codecs.BOM_UTF16_BE, "utf-16-be")):
        if data.startswith(bom):
            try:
                return data[len(bom):].decode(encoding).encode("utf-8"), encoding
            except UnicodeDecodeError as error:
                raise LoadError(f"{path}: file starts with a {encoding.upper()} byte-order mark "
                                f"but is not valid {encoding.upper()} ({error.reason} at byte "
                                f"{error.start})") from error
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        try:
            return data.decode("cp1252").encode("utf-8"), "cp1252"
        except UnicodeDecodeError:
            return data.decode("latin-1").encode("utf-8"), "latin-1"
    return data, None


def encoding_warning(path: Path, encoding: str) -> str:
    return (f"encoding: {path}: not valid UTF-8; decoded as {encoding}"
            if encoding in ("cp1252", "latin-1") else f"encoding: {path}: decoded as {encoding}")


def check_header(names: list[str], path: Path) -> None:
    """Raise :class:`LoadError` for an empty or a repeated header name (never a channel
    ``""`` or ``a_duplicated_0``)."""
    empty = [i + 1 for i, name in enumerate(names) if not name]
    if empty:
        raise LoadError(f"{path}: empty column name(s) at position(s) {empty} in header "
                        f"{names}; every column needs a name")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise LoadError(f"{path}: duplicated column name(s) {repeated} in header {names}")


def _header_names(first_line: str, delimiter: str) -> list[str]:
    try:
        fields = next(csv.reader([first_line], delimiter=delimiter, strict=True))
    except (csv.Error, StopIteration):
        fields = first_line.split(delimiter)
    return [_clean(name) for name in fields]


def _lines(data: bytes) -> pl.DataFrame:
    """One row per line (1-based ``line``, ``raw`` text), blank lines included."""
    if b"\x1f" in data or b"\r" in data.replace(b"\r\n", b""):  # odd bytes: plain Python
        text = data.decode("utf-8", "replace").split("\n")
        frame = pl.DataFrame({RAW: text[:-1] if text and text[-1] == "" else text},
                             schema={RAW: pl.Utf8})
    else:
        frame = pl.read_csv(io.BytesIO(data), has_header=False, separator="\x1f",
                            quote_char=None, infer_schema=False, new_columns=[RAW],
                            encoding="utf8-lossy", raise_if_empty=False)
    return frame.with_row_index(LINE, offset=1).with_columns(
        pl.col(LINE).cast(pl.Int64),
        pl.col(RAW).fill_null("").str.strip_chars_end("\r").str.strip_chars_start("\ufeff"))


def detect_delimiter(header: str, expected: str | None, path: Path) -> str:
    """The delimiter of ``header``; raises :class:`LoadError` when ``expected`` is not in it
    but another candidate is ("file appears to be ';'-separated")."""
    counts = {d: header.count(d) for d in DELIMITERS}
    best = max(counts, key=counts.get)
    if expected is not None:
        if counts.get(expected, header.count(expected)) or counts[best] == 0:
            return expected
        raise LoadError(f"{path}: wrong delimiter: `delimiter` is {expected!r} but the header "
                        f"{header[:80]!r} appears to be {best!r}-separated; pass "
                        f"delimiter={best!r}")
    return best if counts[best] else ","


def read_table(path: str | Path, *, delimiter: str | None = None, header: bool = True,
               required: tuple[str, ...] = ()) -> RawTable:
    """Split a CSV/TSV (optionally gzipped) into string cells, never raising on bad rows.

    Records with the wrong number of fields are rejected ("expected 3 fields, got 2").
    Raises :class:`LoadError` for an empty file, an undetectable or wrong delimiter, or a
    missing ``required`` column. Fast path: polars' CSV reader (blank lines come back as
    all-null rows, so row ``i`` is line ``i + 2``); a file with over-long records falls
    back to splitting each line.
    """
    path = Path(path)
    head = _head(path)  # a large plain file is parsed by polars from disk (memory-mapped)
    if head is not None and _needs_transcode(head):
        head = None
    data = read_bytes(path) if head is None else head
    warnings: tuple[str, ...] = ()
    if head is None:
        data, encoding = transcode(data, path)
        warnings = (encoding_warning(path, encoding),) if encoding else ()
    end = data.find(b"\n")
    first_line = data[:end if end >= 0 else len(data)].decode("utf-8", "replace").strip(
        "\r\ufeff")
    table = None
    if first_line.strip():
        delimiter = detect_delimiter(first_line, delimiter, path)
        if header:
            check_header(_header_names(first_line, delimiter), path)
        table = _fast_table(path, data if head is None else None, delimiter, header)
    if table is None:
        data = read_bytes(path) if head is not None else data
        table = _slow_table(path, data, delimiter, header)
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise LoadError(f"{path}: missing column(s) {missing}; the header has {table.columns}")
    return dataclasses.replace(table, warnings=warnings) if warnings else table


def _needs_transcode(head: bytes) -> bool:
    """The head of a large file has a BOM or is not UTF-8 (up to its last line break)."""
    if head.startswith((codecs.BOM_UTF8, codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        return True
    try:
        head[:head.rfind(b"\n") + 1].decode("utf-8")
    except UnicodeDecodeError:
        return True
    return False


def _head(path: Path) -> bytes | None:
    """The first :data:`HEAD_BYTES` of a large uncompressed file, else ``None`` (read it
    all: small or gzipped). Whole bytes are then only read when a row is rejected."""
    try:
        if path.stat().st_size <= 4 * HEAD_BYTES:
            return None
        with path.open("rb") as handle:
            head = handle.read(HEAD_BYTES)
    except OSError:
        return None  # read_bytes raises the LoadError naming the problem
    return None if head[:2] == b"\x1f\x8b" or b"\n" not in head else head


def _fast_table(path: Path, data: bytes | None, delimiter: str,
                header: bool) -> RawTable | None:
    """Polars' CSV reader on ``data`` (``None``: on the file itself, and the table keeps no
    bytes: :meth:`RawTable.with_raw` reads the file when a line is rejected)."""
    cells = None
    for encoding in ("utf8", "utf8-lossy"):  # strict UTF-8 is faster; lossy if it fails
        try:
            cells = pl.read_csv(path if data is None else io.BytesIO(data), has_header=header,
                                separator=delimiter, infer_schema=False,
                                empty_string_is_null=False, encoding=encoding,
                                raise_if_empty=False)
            break
        except pl.exceptions.PolarsError:
            continue
    if cells is None:
        return None  # over-long records, bad quoting: split line by line instead
    data = data or b""
    columns = [_clean(c) for c in cells.columns] if header else \
        [f"c{i}" for i in range(cells.width)]
    if len(set(columns)) != len(columns):
        raise LoadError(f"{path}: duplicated column names in header {columns}")
    cells.columns = columns
    cells = cells.with_row_index(LINE, offset=2 if header else 1).with_columns(
        pl.col(LINE).cast(pl.Int64))
    if not any(cells[c].null_count() for c in columns):  # no blank or short line
        return RawTable(path, columns, cells, delimiter, empty_rejected(), data)
    n_present = pl.sum_horizontal([pl.col(c).is_not_null() for c in columns])
    blank = (n_present == 0) | ((n_present == 1) & (pl.col(columns[0]).str.strip_chars() == ""))
    cells = cells.with_columns(n_present.alias("_n")).filter(~blank)
    short = cells.filter(pl.col("_n") < len(columns))
    rejected = reject(short, path, pl.format("expected {} fields, got {}",
                                             pl.lit(len(columns)), pl.col("_n")))
    cells = cells.filter(pl.col("_n") == len(columns)).drop("_n")
    return RawTable(path, columns, cells, delimiter, rejected, data)


def strip_cells(column: str) -> pl.Expr:
    """Spaces and stray double quotes removed from both ends of a string column."""
    return pl.col(column).str.strip_chars().str.strip_chars('"').str.strip_chars()


def _slow_table(path: Path, data: bytes, delimiter: str | None, header: bool) -> RawTable:
    lines = _lines(data).filter(pl.col(RAW).str.strip_chars() != "") if data else pl.DataFrame()
    if lines.is_empty():  # blank lines only (unicode blanks too, e.g. no-break spaces)
        raise LoadError(f"{path}: file is empty (no non-blank lines)")
    first = lines.row(0, named=True)[RAW]
    delimiter = detect_delimiter(first, delimiter, path)
    if header:
        columns = [_clean(c) for c in first.split(delimiter)]
        lines = lines.slice(1)
    else:
        columns = [f"c{i}" for i in range(first.count(delimiter) + 1)]
    if header:
        check_header(columns, path)
    quoted = lines.filter(pl.col(RAW).str.contains('"', literal=True))
    lines = lines.filter(~pl.col(RAW).str.contains('"', literal=True))
    n_fields = pl.col(RAW).str.count_matches(delimiter, literal=True) + 1
    lines = lines.with_columns(n_fields.alias("_n"))
    bad = lines.filter(pl.col("_n") != len(columns))
    rejected = reject(bad, path, pl.format("expected {} fields, got {}", pl.lit(len(columns)),
                                           pl.col("_n")))
    good = lines.filter(pl.col("_n") == len(columns)).drop("_n")
    split = pl.col(RAW).str.split_exact(delimiter, len(columns) - 1)
    cells = good.with_columns(split.alias("_s")).unnest("_s")
    cells = cells.rename({f"field_{i}": c for i, c in enumerate(columns)})
    cells = cells.with_columns(pl.col(c).str.strip_chars() for c in columns).drop(RAW)
    if quoted.height:
        quoted_cells, quoted_rejected = _quoted_lines(quoted, columns, delimiter, path)
        cells = pl.concat([cells, quoted_cells]).sort(LINE)
        rejected = pl.concat([rejected, quoted_rejected]).sort(LINE)
    return RawTable(path, columns, cells, delimiter, rejected, data)


def _quoted_lines(lines: pl.DataFrame, columns: list[str], delimiter: str,
                  path: Path) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Lines holding a double quote, split by the CSV rules one line at a time (so a bad
    quote on one line never changes another); an open quote is ``unterminated quote``."""
    kept: dict[str, list] = {LINE: [], **{c: [] for c in columns}}
    bad_lines, reasons = [], []
    for line, raw in zip(lines[LINE].to_list(), lines[RAW].to_list(), strict=True):
        try:
            fields = next(csv.reader([raw], delimiter=delimiter, strict=True))
        except csv.Error:
            fields = None
        if fields is None or raw.count('"') % 2:
            bad_lines.append(line)
            reasons.append("unterminated quote: a field opens a double quote that is "
                           "never closed")
        elif len(fields) != len(columns):
            bad_lines.append(line)
            reasons.append(f"expected {len(columns)} fields, got {len(fields)}")
        else:
            kept[LINE].append(line)
            for column, value in zip(columns, fields, strict=True):
                kept[column].append(value.strip())
    cells = pl.DataFrame(kept, schema={LINE: pl.Int64, **{c: pl.Utf8 for c in columns}})
    bad = pl.DataFrame({LINE: bad_lines, "_reason": reasons, RAW: [""] * len(bad_lines)},
                       schema={LINE: pl.Int64, "_reason": pl.Utf8, RAW: pl.Utf8})
    return cells, reject(bad, path, pl.col("_reason"))


def _clean(name: str) -> str:
    return name.strip().strip('"').strip()


def reject(rows: pl.DataFrame, path: Path | str, reason: pl.Expr | str) -> pl.DataFrame:
    """Rejections (source_file, line, reason, raw) for ``rows`` (which hold line and raw)."""
    if rows.is_empty():
        return empty_rejected()
    reason_expr = pl.lit(reason) if isinstance(reason, str) else reason
    raw = pl.col(RAW) if RAW in rows.columns else pl.lit(None, pl.Utf8)
    return rows.select(pl.lit(str(path)).alias(SOURCE_FILE), pl.col(LINE).cast(pl.Int64),
                       reason_expr.cast(pl.Utf8).alias(REASON), raw.cast(pl.Utf8).alias(RAW))


def parse_numbers(column: str, *,
                  missing: tuple[float, ...] = ()) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """(value, is_problem, message) expressions for a string column of numbers.

    Null markers (``NA``, empty, ``NaN``...) and the ``missing`` sentinels give null (a gap,
    not a problem); infinities and text are problems. ``message`` describes the problem; it
    is only meant to be evaluated on the (few) problem rows, building text is costly.
    """
    text = pl.col(column)
    number = text.cast(pl.Float64, strict=False)
    is_marker = text.is_null() | text.is_in(list(NULL_MARKERS))
    value = pl.when(is_marker | number.is_nan()).then(None).otherwise(number)
    if missing:
        value = pl.when(value.is_in(list(missing))).then(None).otherwise(value)
    is_text = ~is_marker & number.is_null()
    is_problem = is_text | number.is_infinite().fill_null(False)
    message = (pl.when(is_text)
               .then(pl.format("text in numeric column '{}': '{}'", pl.lit(column), text))
               .when(number.is_infinite())
               .then(pl.format("infinite value in column '{}': '{}'", pl.lit(column), text)))
    return value.alias(column), is_problem, message


def parse_timestamps(text: pl.Series, *, time_zone: str | None = None,
                     retry_stripped: bool = True) -> tuple[pl.Series, pl.Series]:
    """Parse text timestamps to UTC; returns (timestamps, problems) aligned with ``text``.

    Surrounding spaces/quotes are tolerated (stripped only when some value fails to parse).
    Naive timestamps are in ``time_zone`` (UTC when ``None``); ones with an offset (``Z``,
    ``+01:00``) are converted to UTC. A file must not mix the two: the convention of the
    first parseable value wins and rows in the other are problems ("mixed time zones").
    """
    naive_parsed = _first_format(text, NAIVE_FORMATS, None, text.is_not_null())
    if naive_parsed.null_count() == 0:  # all naive (formats are exact): skip the offset regex
        aware, normalised = pl.repeat(False, len(text), eager=True), text
    else:
        aware = text.str.contains(_OFFSET).fill_null(False)
        normalised = text.str.replace(r"Z$", "+00:00") if aware.any() else text
        naive_parsed = _first_format(normalised, NAIVE_FORMATS, None, ~aware)
    if time_zone is not None:
        naive_parsed = naive_parsed.dt.replace_time_zone(
            time_zone, ambiguous="null", non_existent="null")
    naive_parsed = naive_parsed.dt.convert_time_zone("UTC") if time_zone else \
        naive_parsed.dt.replace_time_zone("UTC")
    if not aware.any() and naive_parsed.null_count() == 0:  # the common case: all parsed
        return naive_parsed.alias("timestamp"), pl.repeat(None, len(text), dtype=pl.Utf8,
                                                          eager=True)
    aware_parsed = _first_format(normalised, AWARE_FORMATS, "UTC", aware)
    frame = pl.DataFrame({"a": aware, "n": naive_parsed, "z": aware_parsed, "t": text})
    ok_aware = frame["a"] & frame["z"].is_not_null()
    ok_naive = ~frame["a"] & frame["n"].is_not_null()
    parsed_any = ok_aware | ok_naive
    first_aware = bool(frame.filter(parsed_any)["a"].head(1).sum()) if parsed_any.any() else False
    stamps = frame.select(pl.when(pl.col("a")).then(pl.col("z")).otherwise(pl.col("n"))
                          .alias("timestamp"))["timestamp"]
    convention_mismatch = parsed_any & (frame["a"] != first_aware)
    other = "naive timestamp in a file with UTC offsets" if first_aware else \
        "timestamp with a UTC offset in a file of naive timestamps"
    bad = convention_mismatch | ~parsed_any
    if retry_stripped and (~parsed_any).any():  # clean files never pay for stripping
        stripped = text.to_frame("t").select(strip_cells("t")).to_series()
        if not stripped.equals(text):
            return parse_timestamps(stripped, time_zone=time_zone, retry_stripped=False)
    problems = pl.repeat(None, len(text), dtype=pl.Utf8, eager=True)
    if bad.any():  # messages only for the bad rows: building text for all rows is costly
        messages = frame.with_columns(mixed=convention_mismatch).filter(bad).select(
            pl.when(pl.col("mixed"))
            .then(pl.format("mixed time zones: {} ('{}')", pl.lit(other), pl.col("t")))
            .otherwise(pl.format("unparseable timestamp: '{}'", pl.col("t")))).to_series()
        problems = problems.scatter(bad.arg_true(), messages)
        stamps = pl.select(pl.when(bad).then(None).otherwise(stamps)).to_series()
    return stamps.alias("timestamp"), problems


def _first_format(text: pl.Series, formats: tuple[str, ...], time_zone: str | None,
                  mask: pl.Series) -> pl.Series:
    """Each value parsed with the first of ``formats`` that fits (only where ``mask``)."""
    dtype = pl.Datetime("us", time_zone)
    result = pl.repeat(None, len(text), dtype=dtype, eager=True)
    todo = text.is_not_null() & mask
    for fmt in formats:
        if not todo.any():
            break
        parsed = text.str.to_datetime(fmt, strict=False, time_unit="us", time_zone=time_zone,
                                      cache=False)  # (the cache is slower, even on repeats)
        if parsed.dtype != dtype:
            parsed = parsed.cast(dtype)
        if todo.all():  # the first format, on a clean column: nothing to merge
            result = parsed
        else:
            result = pl.select(pl.when(todo).then(parsed).otherwise(result)).to_series()
        todo = todo & result.is_null()
    return result


def check_ids(records: pl.DataFrame) -> pl.DataFrame:
    """A blank ``series_id``/``channel``, or one holding a NUL or another control character
    (U+0000-U+001F and U+007F-U+009F except tab and line feed, which a quoted CSV field may
    hold and the CLI shows visibly), is the row's problem (``empty series_id: ''``), never
    a series named ``""``.  Each distinct id is judged once (a file repeats a few ids over
    millions of rows); a row keeps the first problem it already had."""
    problem = pl.col("_problem")
    for column in (SERIES_ID, CHANNEL):
        verdicts = id_problems(records[column].cast(pl.Utf8).unique(), column)
        if verdicts.is_empty():
            continue  # the common case: every id is fine, nothing to mark
        named = verdicts.drop_nulls(column)
        found = (pl.col(column).cast(pl.Utf8)
                 .replace_strict(named[column], named["_verdict"], default=None,
                                 return_dtype=pl.Utf8))
        if named.height < verdicts.height:  # a missing id is blank too
            found = (pl.when(pl.col(column).is_null()).then(pl.lit(f"empty {column}: ''"))
                     .otherwise(found))
        problem = pl.coalesce(problem, found)
    return records.with_columns(problem.alias("_problem"))


def id_problems(ids: pl.Series, column: str) -> pl.DataFrame:
    """The ids of ``ids`` that are a problem, with the reason (first rule that applies)."""
    text = pl.col(column)
    verdict = (pl.when(text.is_null() | (text.str.strip_chars() == ""))
               .then(pl.lit(f"empty {column}: ''"))
               .when(text.str.contains("\x00", literal=True))
               .then(pl.lit(f"NUL character in {column}"))
               .when(text.str.contains(r"[\x01-\x08\x0b-\x1f\x7f-\x9f]"))
               .then(pl.lit(f"control character in {column}")))
    return (ids.alias(column).to_frame().with_columns(verdict.alias("_verdict"))
            .filter(pl.col("_verdict").is_not_null()))
