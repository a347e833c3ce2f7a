"""CSV records that span lines: a quoted field holding a line break.

:func:`data.quarantine.read_table` numbers polars' rows as if every record were one line
(row ``i`` is line ``i + 2``), which is right for the numeric files the loaders read, and
cheap.  A quoted line break makes one record span several lines, so every later record
would be quarantined under a wrong line number (and with only part of its raw text).
:func:`read_records` is ``read_table`` plus a repair that only files holding a quote and a
cell with a line break pay for:

- each record's line is the 1-based *physical* line it starts on;
- a rejected record's raw text is the whole record (its lines joined by ``\\n``);
- blank lines are not records (polars returns them as rows of empty cells; files with an
  empty first cell pay for this check too).

Record boundaries are the line breaks outside double quotes (``""`` inside a quoted field
toggles twice, so it is handled).  When polars and this count disagree (quotes that do not
follow the CSV rules), the table is left as ``read_table`` made it.
"""

from __future__ import annotations

import dataclasses
import mmap
from pathlib import Path

import numpy as np
import polars as pl

from data.quarantine import LINE, RAW, RawTable, read_bytes, read_table

QUOTE, NEWLINE = ord('"'), ord("\n")


@dataclasses.dataclass
class RecordTable(RawTable):
    """A :class:`RawTable` whose records may span lines; ``spans`` holds, per record (header
    included), its first line, start byte and end byte in ``data``."""

    spans: tuple[np.ndarray, np.ndarray, np.ndarray] = (np.zeros(0, np.int64),) * 3

    def with_raw(self, rejected: pl.DataFrame) -> pl.DataFrame:
        """``rejected`` with ``raw`` set to the whole text of each rejected record."""
        if rejected.is_empty():
            return rejected
        first_lines, starts, ends = self.spans
        raw = []
        for line in rejected[LINE].to_list():
            index = int(np.searchsorted(first_lines, line))
            if index < first_lines.size and first_lines[index] == line:
                text = self.data[starts[index]:ends[index]].decode("utf-8", "replace")
                raw.append("\n".join(part.rstrip("\r") for part in text.split("\n")))
            else:
                raw.append("")
        return rejected.with_columns(pl.Series(RAW, raw, dtype=pl.Utf8))


def read_records(path: str | Path, **options) -> RawTable:
    """:func:`data.quarantine.read_table` (same options) with records that span lines
    numbered by their first physical line (see the module docstring)."""
    table = read_table(path, **options)
    if table.cells.is_empty():
        return table
    if (_has_quote(table) and _has_line_break(table)) or _may_hold_blank_lines(table):
        return renumber(table, table.data or read_bytes(table.path))
    return table


def record_spans(data: bytes) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first line (1-based), start byte, end byte (exclusive, before the line break)) of
    every record of ``data``; records end at line breaks outside double quotes.

    >>> lines, starts, ends = record_spans(b'a,b\\n1,"x\\ny"\\n2,z\\n')
    >>> lines.tolist(), starts.tolist(), ends.tolist()
    ([1, 2, 4], [0, 4, 12], [3, 11, 15])
    """
    array = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(array == NEWLINE)
    quotes = np.flatnonzero(array == QUOTE)
    outside = (np.searchsorted(quotes, newlines) & 1) == 0  # even quotes before the break
    ends = newlines[outside]
    if ends.size == 0 or ends[-1] != array.size - 1:
        ends = np.append(ends, array.size)  # a last record without a line break
    starts = np.concatenate([[0], ends[:-1] + 1])
    first_lines = np.searchsorted(newlines, starts) + 1
    return first_lines.astype(np.int64), starts.astype(np.int64), ends.astype(np.int64)


def renumber(table: RawTable, data: bytes) -> RawTable:
    """``table`` (polars row ``r`` numbered ``r + 1`` counting the header) with physical
    first lines, blank lines dropped and whole-record raw text; unchanged when polars'
    records and :func:`record_spans` do not line up."""
    spans = record_spans(data)
    first_lines = spans[0]
    numbered = [frame[LINE] for frame in (table.cells, table.rejected) if frame.height]
    highest = max((int(column.max()) for column in numbered), default=0)
    if highest > first_lines.size:
        return table

    def physical(frame: pl.DataFrame) -> pl.DataFrame:
        if frame.is_empty():
            return frame
        index = frame[LINE].to_numpy().astype(np.int64) - 1
        blank = np.zeros(index.size, dtype=bool)
        empty = _all_empty(frame, table.columns)
        for row in np.flatnonzero(empty):  # few rows: check their bytes
            start, end = spans[1][index[row]], spans[2][index[row]]
            blank[row] = not data[start:end].strip()
        moved = frame.with_columns(pl.Series(LINE, first_lines[index], pl.Int64))
        return moved.filter(~pl.Series(blank)) if blank.any() else moved

    return RecordTable(table.path, table.columns, physical(table.cells), table.delimiter,
                       physical(table.rejected), data, spans)


def _all_empty(frame: pl.DataFrame, columns: list[str]) -> np.ndarray:
    """Rows whose every cell is empty or null (blank-line candidates)."""
    present = [c for c in columns if c in frame.columns]
    if not present:
        return np.ones(frame.height, dtype=bool)
    return frame.select(pl.all_horizontal(
        pl.col(c).cast(pl.Utf8).fill_null("").str.strip_chars() == "" for c in present)
    ).to_series().to_numpy()


def _may_hold_blank_lines(table: RawTable) -> bool:
    """Whether some row's first cell is empty (a blank line reads as a row of "" cells)."""
    first = table.cells[table.columns[0]]
    return first.dtype == pl.Utf8 and bool((first.str.len_bytes() == 0).any())


def _has_quote(table: RawTable) -> bool:
    """Whether the file holds a double quote (memory-mapped search for files on disk)."""
    if table.data:
        return QUOTE in table.data
    try:
        with table.path.open("rb") as handle, \
                mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            return view.find(b'"') >= 0
    except (OSError, ValueError):
        return False


def _has_line_break(table: RawTable) -> bool:
    """Whether a cell holds a line break (only a quoted field can)."""
    return any(table.cells[c].str.contains("\n", literal=True).any() for c in table.columns
               if table.cells.schema[c] == pl.Utf8)
