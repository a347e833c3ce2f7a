"""Hostile text in files (issue 19 items 8, 9, 11): header names, ids with control
characters, unterminated quotes, files that are not UTF-8. Each problem is a clear
LoadError naming it, or a quarantined record with its reason; nothing is stored garbled."""

from __future__ import annotations

import polars as pl
import pytest

from recurra.data.ingest import SourceSpec, ingest
from recurra.data.loaders import load_sensor
from recurra.data.quarantine import LoadError
from recurra.data.store import Store


def _balanced(result) -> None:
    assert result.n_rows_in == result.n_rows_kept + result.rejected.height


# -- item 8: header names and ids -------------------------------------------------------
def test_duplicated_header_name_is_a_load_error_naming_it(tmp_path):
    path = tmp_path / "dup.csv"
    path.write_text("timestamp,temp,temp\n2024-01-01,1,2\n2024-01-02,3,4\n")
    with pytest.raises(LoadError, match=r"duplicated column name\(s\) \['temp'\]"):
        load_sensor(path)


def test_empty_header_name_is_a_load_error_naming_its_position(tmp_path):
    path = tmp_path / "empty_name.csv"
    path.write_text("timestamp,a,\n2024-01-01,1,2\n")
    with pytest.raises(LoadError, match=r"empty column name\(s\) at position\(s\) \[3\]"):
        load_sensor(path)


def test_empty_header_name_in_parquet_is_a_load_error(tmp_path):
    path = tmp_path / "empty_name.parquet"
    pl.DataFrame({"timestamp": ["2024-01-01"], "": [1.0]}).write_parquet(path)
    with pytest.raises(LoadError, match="empty column name"):
        load_sensor(path)


@pytest.mark.parametrize("suffix", [".csv", ".parquet"])
def test_control_characters_in_ids_are_quarantined_with_a_reason(tmp_path, suffix):
    ids = ["ok", "", "red\x1b[31m", "a\x00b", "bs\x08id"]
    frame = pl.DataFrame({"series_id": ids, "channel": ["c", "c", "c", "c", "bell\x07"],
                          "timestamp": [f"2024-01-0{i + 1}" for i in range(5)],
                          "value": ["1", "2", "3", "4", "5"]})
    path = tmp_path / f"ids{suffix}"
    frame.write_csv(path) if suffix == ".csv" else frame.write_parquet(path)
    result = load_sensor(path, layout="long")
    assert result.frame["series_id"].to_list() == ["ok"]
    reasons = dict(zip(result.rejected["line"], result.rejected["reason"], strict=True))
    first = 2 if suffix == ".csv" else 1  # CSV lines count the header; Parquet rows do not
    assert reasons == {first + 1: "empty series_id: ''",
                       first + 2: "control character in series_id",
                       first + 3: "NUL character in series_id",
                       first + 4: "control character in series_id"}
    _balanced(result)


def test_each_row_of_a_repeated_bad_id_is_quarantined_with_its_first_problem(tmp_path):
    # ids are judged once per distinct value: every row holding one is still rejected, and
    # a row keeps the first problem it has (timestamp, then series_id, then channel)
    lines = ["series_id,channel,timestamp,value"]
    for day in range(1, 9):
        lines += [f"ok,c,2024-01-0{day},1", f"bad\x07,c,2024-01-0{day},2",
                  f"ok,\x00,2024-01-0{day},3"]
    lines += ["bad\x07,\x00,2024-01-09,4", "bad\x07,c,not a date,5", ",c,2024-01-09,6"]
    path = tmp_path / "repeated.csv"
    path.write_text("\n".join(lines) + "\n")
    result = load_sensor(path, layout="long")
    assert result.frame.height == 8 and set(result.frame["series_id"]) == {"ok"}
    reasons = dict(zip(result.rejected["line"], result.rejected["reason"], strict=True))
    for day in range(8):
        assert reasons[3 + 3 * day] == "control character in series_id"
        assert reasons[4 + 3 * day] == "NUL character in channel"
    assert reasons[26] == "control character in series_id"
    assert reasons[27] == "unparseable timestamp: 'not a date'"
    assert reasons[28] == "empty series_id: ''"
    _balanced(result)


# -- item 9: quotes ------------------------------------------------------------------
def test_unterminated_quote_is_rejected_and_other_rows_keep_their_values(tmp_path):
    path = tmp_path / "quotes.csv"
    path.write_text('series_id,timestamp,value\n"pump, north",2024-01-01,1\n'
                    'pump,2024-01-02,"3.0\npump,2024-01-03,4\n')
    result = load_sensor(path, layout="long")
    rows = result.frame.select("series_id", "value").rows()
    assert rows == [("pump", 4.0), ("pump, north", 1.0)]
    bad = result.rejected.row(0, named=True)
    assert result.rejected.height == 1 and bad["line"] == 3
    assert bad["reason"].startswith("unterminated quote")
    assert bad["raw"] == 'pump,2024-01-02,"3.0'
    _balanced(result)


def test_lone_unterminated_quote_cell_is_not_accepted(tmp_path):
    path = tmp_path / "lone.csv"
    path.write_text('timestamp,value\n2024-01-01,1\n2024-01-02,"3.0\n')
    result = load_sensor(path)
    assert result.frame["value"].to_list() == [1.0]
    assert result.rejected["reason"].to_list()[0].startswith("unterminated quote")
    _balanced(result)


# -- item 11: encodings ----------------------------------------------------------------
def test_cp1252_file_is_decoded_with_a_warning_naming_the_encoding(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("timestamp,température\n2024-01-01,1.5\n".encode("cp1252"))
    result = load_sensor(path)
    assert result.frame["channel"].to_list() == ["température"]
    assert not any("\ufffd" in c for c in result.frame["channel"])
    assert result.warnings == (f"encoding: {path}: not valid UTF-8; decoded as cp1252",)
    _balanced(result)


@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-8-sig"])
def test_files_with_a_byte_order_mark_are_decoded(tmp_path, encoding):
    path = tmp_path / "bom.csv"
    text = "timestamp,niveau\n2024-01-01,2.5\n2024-01-02,3.5\n"
    data = text.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data
    path.write_bytes(data)
    result = load_sensor(path)
    assert result.frame["channel"].unique().to_list() == ["niveau"]
    assert result.frame["value"].to_list() == [2.5, 3.5]
    _balanced(result)


def test_broken_utf16_is_a_load_error_naming_utf16(tmp_path):
    path = tmp_path / "broken16.csv"
    path.write_bytes(b"\xff\xfe" + "timestamp,v\n".encode("utf-16-le") + b"\x00\xd8")
    with pytest.raises(LoadError, match="UTF-16-LE"):
        load_sensor(path)


def test_ingest_reports_the_encoding_warning(tmp_path):
    path = tmp_path / "latin.csv"
    path.write_bytes("timestamp,température\n2024-01-01,1.5\n".encode("cp1252"))
    report = ingest([SourceSpec("sensor", path)], Store(tmp_path / "store"), strict=False)
    assert report.sources[0].warnings == [f"encoding: {path}: not valid UTF-8; decoded as cp1252"]
