"""CSV records spanning lines (quoted line breaks): right line numbers, whole raw text."""

from __future__ import annotations

import datetime as dt
import gzip

import numpy as np
import polars as pl

from recurra.data import loaders
from recurra.data.csv_records import record_spans
from recurra.data.quarantine import HEAD_BYTES
from tests.data.test_loaders import check_invariant, write

QUOTED = "\n".join([
    "timestamp,value,note",              # line 1 header
    '2024-01-01 00:00,1.0,"ok"',         # line 2 ok
    '2024-01-01 01:00,2.0,"two',         # line 3 ok, spans lines 3-4
    'lines"',
    "",                                  # line 5 blank: not a record
    '2024-01-01 02:00,abc,"bad"',        # line 6 text in value
    '2024-01-01 03:00,4.0,"three',       # line 7 ok, spans lines 7-9
    "line",
    'say ""hi"""',
    "not a date,5.0,plain",              # line 10 unparseable timestamp
    '2024-01-01 05:00,xyz,"x',           # line 11 text in value, spans 11-12
    'y"',
    "2024-01-01 06:00,6.0,end",          # line 13 ok
]) + "\n"


def test_quoted_line_breaks_keep_source_line_numbers(tmp_path):
    result = loaders.load_sensor(write(tmp_path / "notes.csv", QUOTED), value_columns=["value"])
    check_invariant(result)
    assert result.n_rows_in == 7 and result.n_rows_kept == 4
    rejected = {row["line"]: row for row in result.rejected.iter_rows(named=True)}
    assert sorted(rejected) == [6, 10, 11]
    assert rejected[6]["reason"] == "text in numeric column 'value': 'abc'"
    assert rejected[6]["raw"] == '2024-01-01 02:00,abc,"bad"'
    assert rejected[10]["reason"].startswith("unparseable timestamp")
    assert rejected[11]["raw"] == '2024-01-01 05:00,xyz,"x\ny"'  # the whole record
    assert result.frame["value"].to_list() == [1.0, 2.0, 4.0, 6.0]
    assert result.frame["timestamp"][-1] == dt.datetime(2024, 1, 1, 6, tzinfo=dt.UTC)


def test_crlf_gzip_and_files_read_from_disk_agree(tmp_path, monkeypatch):
    from recurra.data import quarantine

    expected = loaders.load_sensor(write(tmp_path / "a.csv", QUOTED), value_columns=["value"])
    crlf = tmp_path / "b.csv"
    crlf.write_bytes(QUOTED.replace("\n", "\r\n").encode())
    zipped = tmp_path / "c.csv.gz"
    zipped.write_bytes(gzip.compress(QUOTED.encode()))
    monkeypatch.setattr(quarantine, "HEAD_BYTES", 16)  # "large": parsed from disk
    assert HEAD_BYTES > 16
    for path in (crlf, zipped, write(tmp_path / "d.csv", QUOTED)):
        result = loaders.load_sensor(path, value_columns=["value"])
        check_invariant(result)
        assert result.rejected["line"].to_list() == expected.rejected["line"].to_list()
        assert result.rejected["raw"].to_list() == expected.rejected["raw"].to_list()
        assert result.frame.drop("series_id").equals(expected.frame.drop("series_id"))


def test_blank_lines_are_not_records_without_quotes_too(tmp_path):
    path = write(tmp_path / "blank.csv",
                 "timestamp,value\n2024-01-01 00:00,1\n\n   \n2024-01-01 02:00,abc\n,3\n")
    result = loaders.load_sensor(path)
    check_invariant(result)
    assert result.n_rows_in == 3
    rejected = dict(zip(result.rejected["line"], result.rejected["reason"], strict=True))
    assert sorted(rejected) == [5, 6]  # ",3" is a record with an empty timestamp
    assert rejected[6] == "unparseable timestamp: ''"


def test_record_spans_ignore_line_breaks_inside_quotes():
    lines, starts, ends = record_spans(b'h\n"a\nb",1\n"c""\n",2\nlast')
    assert lines.tolist() == [1, 2, 4, 6]
    data = b'h\n"a\nb",1\n"c""\n",2\nlast'
    assert [data[s:e] for s, e in zip(starts, ends, strict=True)] == [
        b"h", b'"a\nb",1', b'"c""\n",2', b"last"]
    assert record_spans(b"")[0].tolist() == [1]
    assert np.array_equal(record_spans(b"a\nb\n")[0], [1, 2])


def test_long_layout_with_quoted_series_names(tmp_path):
    text = ('series_id,timestamp,value\n"pump\n1",2024-01-01,1\n"pump\n1",2024-01-02,oops\n'
            "pump2,2024-01-01,3\n")
    result = loaders.load_sensor(write(tmp_path / "long.csv", text), layout="long")
    check_invariant(result)
    assert result.rejected["line"].to_list() == [4]
    assert set(result.frame["series_id"]) == {"pump\n1", "pump2"}
    assert result.frame.filter(pl.col("series_id") == "pump2")["value"].to_list() == [3.0]


def test_conflicting_duplicates_name_the_physical_line(tmp_path):
    text = ('timestamp,value,note\n2024-01-01,1,"a\nb\nc"\n2024-01-02,2,x\n'
            '2024-01-01,9,"conflict"\n')
    result = loaders.load_sensor(write(tmp_path / "dup.csv", text), value_columns=["value"])
    check_invariant(result)
    (row,) = result.rejected.iter_rows(named=True)
    assert row["line"] == 6 and "same key as line 2" in row["reason"]
    assert result.frame["value"].to_list() == [1.0, 2.0]
