"""CSV records that span lines: a quoted field holding a line break.

:func:`recurra.data.quarantine.read_table` numbers polars' rows as if every record were one line
(row ``i`` is line ``i + 2``), which is right for the numeric files the loaders read, and
cheap.  A quoted line break makes one record span several lines, so every later record
would be quarantined under a wrong line number (and with only part of its raw text).
:func:`repair` fixes that, and is only called by the loaders when a record was rejected
(line numbers are not shown otherwise, so clean files pay nothing):

- each record's line is the 1-based *physical* line it starts on;
- a rejected record's raw text is the whole record (its lines joined by ``\n``);
- blank lines are not records (polars returns them as rows of empty cells).

Record boundaries are the line breaks outside double quotes (``""`` inside a quoted field
toggles twice, so it is handled).  When polars and this count disagree (quotes that do not
follow the CSV rules), the table is left as ``read_table`` made it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import polars as pl

from recurra.data.quarantine import LINE, RAW, RawTable, read_bytes

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


def record_spans(data: bytes, quoted: bool = True
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(first line (1-based), start byte, end byte (exclusive, before the line break)) of
    every record of ``data``; records end at line breaks outside double quotes (at every
    line break when not ``quoted``).

    >>> lines, starts, ends = record_spans(b'a,b\\n1,"x\\ny"\\n2,z\\n')
    >>> lines.tolist(), starts.tolist(), ends.tolist()
    ([1, 2, 4], [0, 4, 12], [3, 11, 15])
    """
    array = np.frombuffer(data, np.uint8)
    newlines = np.flatnonzero(array == NEWLINE)
    ends = newlines
    if quoted:
        quotes = np.flatnonzero(array == QUOTE)
        ends = newlines[(np.searchsorted(quotes, newlines) & 1) == 0]  # even quotes before
    if ends.size == 0 or ends[-1] != array.size - 1:
        ends = np.append(ends, array.size)  # a last record without a line break
    starts = np.concatenate([[0], ends[:-1] + 1])
    first_lines = np.searchsorted(newlines, starts) + 1
    return first_lines.astype(np.int64), starts.astype(np.int64), ends.astype(np.int64)


def repair(table: RawTable, records: pl.DataFrame
           ) -> tuple[RecordTable, pl.DataFrame] | None:
    """``table`` and its ``records`` (frames with a ``line`` column numbered as polars'
    row ``r`` -> ``r + 1`` counting the header) with physical first lines, blank lines
    dropped, and whole-record raw text; None when nothing needs repair (no record spans
    lines and no row is all empty cells) or polars' records and the file's do not line up.

    Loaders call it only when a record was rejected: line numbers are not shown otherwise.
    """
    if table.path.suffix == ".parquet":
        return None
    empty = _all_empty(records, table.columns)
    data = table.data or read_bytes(table.path)
    multiline = QUOTE in data and _has_line_break(table)
    if not multiline and not empty.any():
        return None
    spans = record_spans(data, quoted=multiline)
    numbered = [frame[LINE] for frame in (table.cells, table.rejected, records) if frame.height]
    if max((int(column.max()) for column in numbered), default=0) > spans[0].size:
        return None
    blank_lines = {int(line) for line in records.filter(pl.Series(empty))[LINE].to_list()
                   if not data[spans[1][line - 1]:spans[2][line - 1]].strip()}

    def physical(frame: pl.DataFrame) -> pl.DataFrame:
        if frame.is_empty():
            return frame
        if blank_lines:
            frame = frame.filter(~pl.col(LINE).is_in(list(blank_lines)))
        index = frame[LINE].to_numpy().astype(np.int64) - 1
        return frame.with_columns(pl.Series(LINE, spans[0][index], pl.Int64))

    table = RecordTable(table.path, table.columns, physical(table.cells), table.delimiter,
                        physical(table.rejected), data, table.warnings, spans)
    return table, physical(records)


def _all_empty(frame: pl.DataFrame, columns: list[str]) -> np.ndarray:
    """Rows whose every cell is empty or null (blank-line candidates)."""
    present = [c for c in columns if c in frame.columns]
    if not present or frame.is_empty():
        return np.zeros(frame.height, dtype=bool)
    return frame.select(pl.all_horizontal(
        pl.col(c).cast(pl.Utf8).fill_null("").str.strip_chars() == "" for c in present)
    ).to_series().to_numpy()


def _has_line_break(table: RawTable) -> bool:
    """Whether a cell holds a line break (only a quoted field can)."""
    return any(table.cells[c].str.contains("\n", literal=True).any() for c in table.columns
               if c in table.cells.columns and table.cells.schema[c] == pl.Utf8)
