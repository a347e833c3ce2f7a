"""Files a hostile user hands the loaders: bad files in folders, corrupt Parquet, long files
read as wide. Each error names the file and keeps every good record."""

from __future__ import annotations

import pytest

from recurra.data.ingest import SourceSpec, ingest
from recurra.data.loaders import load_nab, load_sensor
from recurra.data.quarantine import LoadError
from recurra.data.store import Store


def _nab_file(path, n_rows: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = [f"2024-01-01 {h:02d}:00:00,{h}.5" for h in range(n_rows)]
    path.write_text("timestamp,value\n" + "\n".join(rows) + "\n")


def test_folder_ingest_keeps_going_past_an_empty_file(tmp_path):
    folder = tmp_path / "nab"
    _nab_file(folder / "realTraffic" / "a.csv", 5)
    _nab_file(folder / "realTraffic" / "b.csv", 7)
    (folder / "realTraffic" / "empty.csv").write_text("")
    result = load_nab(folder)
    assert result.n_rows_kept == 12
    assert result.n_rows_in == result.n_rows_kept + result.rejected.height
    bad = result.rejected.row(0, named=True)
    assert bad["line"] == 0 and bad["source_file"].endswith("empty.csv")
    assert bad["reason"].startswith("file:")
    store = Store(tmp_path / "store")
    report = ingest([SourceSpec("nab", folder)], store, strict=False)
    assert report.sources[0].n_rows_kept == 12 and store.read().height == 12
    assert store.quarantine()["line"].to_list() == [0]


def test_corrupt_parquet_is_a_load_error_in_the_quarantine(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1" + b"\x00garbage" * 50 + b"PAR1")
    with pytest.raises(LoadError, match="broken.parquet: not a readable Parquet file"):
        load_sensor(broken)
    store = Store(tmp_path / "store")
    report = ingest([SourceSpec("sensor", broken)], store, strict=False)
    assert "not a readable Parquet file" in report.sources[0].error
    quarantined = store.quarantine()
    assert quarantined.height == 1 and quarantined["line"][0] == 0


def test_long_file_read_as_wide_says_to_pass_layout_long(tmp_path):
    long_file = tmp_path / "small.csv"
    long_file.write_text("series_id,timestamp,value\nsmall_a,2024-01-01,1.0\n"
                         "small_b,2024-01-01,2.0\n")
    with pytest.raises(LoadError, match=r"layout=long"):
        load_sensor(long_file)
    assert load_sensor(long_file, layout="long").n_rows_kept == 2


def test_sensor_kind_loads_a_folder_and_skips_a_bad_file(tmp_path):
    folder = tmp_path / "plant"
    _nab_file(folder / "pump.csv", 4)
    (folder / "valve.parquet").write_bytes(b"not parquet at all")
    result = load_sensor(folder)
    assert result.n_rows_kept == 4 and result.frame["series_id"].unique().to_list() == ["pump"]
    assert result.rejected["source_file"][0].endswith("valve.parquet")


def test_blank_and_nul_series_ids_are_rejected_not_stored(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_bytes(b"series_id,timestamp,value\nok,2024-01-01,1.0\n,2024-01-01,2.0\n"
                     b"  ,2024-01-02,2.5\nbad\x00id,2024-01-01,3.0\n")
    result = load_sensor(path, layout="long")
    assert result.frame["series_id"].unique().to_list() == ["ok"]
    reasons = result.rejected["reason"].to_list()
    assert sum(r.startswith("empty series_id") for r in reasons) == 2
    assert any(r.startswith("NUL character in series_id") for r in reasons)
    assert result.n_rows_in == result.n_rows_kept + result.rejected.height
