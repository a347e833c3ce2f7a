"""Loaders: good rows kept, every bad record quarantined with file, line and reason."""

from __future__ import annotations

import datetime as dt
import gzip
from pathlib import Path

import polars as pl
import pytest

from recurra.data import loaders
from recurra.data.ingest import SourceSpec, ingest, ingest_sample
from recurra.data.quarantine import LoadError
from recurra.data.schema import SchemaError, validate_frame
from recurra.data.store import Store

UTC = dt.UTC


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def check_invariant(result: loaders.LoadResult) -> None:
    assert result.n_rows_in == result.n_rows_kept + result.rejected.height
    assert validate_frame(result.frame).equals(result.frame)  # already canonical
    assert result.rejected.columns == ["source_file", "line", "reason", "raw"]


def test_wide_sensor_file_becomes_one_channel_per_column(tmp_path):
    path = write(tmp_path / "plant.csv",
                 "timestamp,temp,load\n2024-01-01 00:00:00,1.5,10\n2024-01-01 01:00:00,NA,11\n")
    result = loaders.load_sensor(path)
    check_invariant(result)
    assert result.n_rows_in == 2 and result.rejected.is_empty()
    frame = result.frame
    assert set(frame["series_id"]) == {"plant"} and set(frame["channel"]) == {"temp", "load"}
    temp = frame.filter(pl.col("channel") == "temp")
    assert temp["value"].to_list() == [1.5, None]
    assert temp["observed"].to_list() == [True, False]
    assert temp["timestamp"][0] == dt.datetime(2024, 1, 1, tzinfo=UTC)


def test_bad_records_are_quarantined_with_line_and_reason(tmp_path):
    path = write(tmp_path / "bad.csv", "\n".join([
        "timestamp,value",
        "2024-01-01 00:00:00,1",        # line 2 ok
        "not a date,2",                 # line 3
        "2024-01-01 02:00:00,abc",      # line 4
        "2024-01-01 03:00:00,inf",      # line 5
        "2024-01-01 04:00:00,4,extra",  # line 6
        "",                             # line 7 blank: not a record
        "2024-01-01 05:00:00,5",        # line 8 ok
        "2024-01-01 05:00:00,6",        # line 9 conflicting duplicate of line 8
        "2024-01-01 05:00:00,5",        # line 10 identical duplicate: merged
    ]) + "\n")
    result = loaders.load_sensor(path)
    check_invariant(result)
    assert result.n_rows_in == 8 and result.n_rows_kept == 3
    rejected = {row["line"]: row for row in result.rejected.iter_rows(named=True)}
    assert sorted(rejected) == [3, 4, 5, 6, 9]
    assert rejected[3]["reason"].startswith("unparseable timestamp")
    assert rejected[4]["reason"].startswith("text in numeric column 'value'")
    assert rejected[5]["reason"].startswith("infinite value")
    assert rejected[6]["reason"] == "expected 2 fields, got 3"
    assert "line 8" in rejected[9]["reason"]
    assert rejected[4]["raw"] == "2024-01-01 02:00:00,abc"
    assert result.frame["value"].to_list() == [1.0, 5.0]
    assert result.reasons()["conflicting duplicate"] == 1


def test_large_files_read_from_disk_quarantine_the_same(tmp_path, monkeypatch):
    """Files over 4 x HEAD_BYTES are parsed from disk; raw text is read only on rejection."""
    from recurra.data import quarantine

    monkeypatch.setattr(quarantine, "HEAD_BYTES", 16)
    test_bad_records_are_quarantined_with_line_and_reason(tmp_path)
    clean = write(tmp_path / "clean.csv", "timestamp,value\n" + "".join(
        f"2024-01-01 {h:02d}:00:00,{h}\n" for h in range(24)))
    assert quarantine._head(clean) is not None  # the disk path is really taken
    result = loaders.load_sensor(clean)
    check_invariant(result)
    assert result.frame["value"].to_list() == [float(h) for h in range(24)]


def test_clean_values_fast_path_matches_the_rules(tmp_path):
    """Null markers and NaN are gaps, the ``missing`` sentinel too, on the one-cast path."""
    markers = ["NA", "NaN", "nan", "-", "?", "", "null", "2.5", "-1"]
    path = write(tmp_path / "m.csv", "timestamp,value\n" + "".join(
        f"2024-01-01 {h:02d}:00:00,{v}\n" for h, v in enumerate(markers)))
    result = loaders.load_sensor(path)
    check_invariant(result)
    assert result.rejected.is_empty()
    assert result.frame["value"].to_list() == [None] * 7 + [2.5, -1.0]
    assert result.frame["observed"].sum() == 2
    records = "RecordID,Time,Parameter,Value\n1,00:00,RecordID,1\n1,00:05,HR,-1\n1,00:06,HR,80\n"
    physio = loaders.load_physionet(write(tmp_path / "set-a.csv", records))
    assert physio.frame["value"].to_list() == [None, 80.0]  # -1 is missing in PhysioNet


def test_duplicate_policies(tmp_path):
    path = write(tmp_path / "d.csv", "timestamp,value\n2024-01-01,1\n2024-01-01,3\n")
    assert loaders.load_sensor(path, duplicates="last").frame["value"].to_list() == [3.0]
    assert loaders.load_sensor(path, duplicates="mean").frame["value"].to_list() == [2.0]
    assert loaders.load_sensor(path, duplicates="first").frame["value"].to_list() == [1.0]
    with pytest.raises(SchemaError, match="duplicates"):
        loaders.load_sensor(path, duplicates="median")


def test_time_zones_are_normalised_and_mixing_is_rejected(tmp_path):
    path = write(tmp_path / "tz.csv", "timestamp,value\n2024-01-01T01:00:00+01:00,1\n"
                 "2024-01-01T01:00:00Z,2\n2024-01-01 03:00:00,3\n")
    result = loaders.load_sensor(path)
    check_invariant(result)
    assert result.frame["timestamp"].to_list() == [dt.datetime(2024, 1, 1, 0, tzinfo=UTC),
                                                   dt.datetime(2024, 1, 1, 1, tzinfo=UTC)]
    assert result.rejected["line"].to_list() == [4]
    assert result.rejected["reason"][0].startswith("mixed time zones")


def test_out_of_order_rows_are_sorted(tmp_path):
    path = write(tmp_path / "o.csv", "timestamp,value\n2024-01-03,3\n2024-01-01,1\n2024-01-02,2\n")
    assert loaders.load_sensor(path).frame["value"].to_list() == [1.0, 2.0, 3.0]


def test_long_layout_with_series_and_channel_columns(tmp_path):
    path = write(tmp_path / "long.csv", "series_id,channel,timestamp,value\n"
                 "a,x,2024-01-01,1\na,y,2024-01-01,2\nb,x,2024-01-01,3\n")
    result = loaders.load_sensor(path, layout="long")
    check_invariant(result)
    assert result.frame.select("series_id", "channel").rows() == [("a", "x"), ("a", "y"),
                                                                  ("b", "x")]
    with pytest.raises(SchemaError, match="layout"):
        loaders.load_sensor(path, layout="tall")


def test_parquet_sensor_input_counts_rows(tmp_path):
    path = tmp_path / "p.parquet"
    pl.DataFrame({"timestamp": ["2024-01-01", "oops"], "value": [1.0, 2.0]}).write_parquet(path)
    result = loaders.load_sensor(path)
    check_invariant(result)
    assert result.rejected["line"].to_list() == [2]


@pytest.mark.parametrize("text,message", [("", "empty"), ("\n\n", "empty"),
                                          ("a;b\n1;2\n", "not in the header")])
def test_file_level_problems_raise_load_error(tmp_path, text, message):
    path = write(tmp_path / "f.csv", text)
    with pytest.raises(LoadError, match=message):
        loaders.load_sensor(path)


def test_wrong_delimiter_is_detected_and_named(tmp_path):
    path = write(tmp_path / "semi.csv", "timestamp;value\n2024-01-01;1\n")
    assert loaders.load_sensor(path).frame["value"].to_list() == [1.0]  # detected
    with pytest.raises(LoadError, match="appears to be ';'-separated"):
        loaders.load_sensor(path, delimiter=",")


def test_nab_folder_names_series_by_category(tmp_path):
    folder = tmp_path / "data" / "realTraffic"
    folder.mkdir(parents=True)
    write(folder / "speed_1.csv", "timestamp,value\n2015-09-01 00:00:00,90\n")
    result = loaders.load_nab(tmp_path / "data")
    assert result.frame["series_id"].to_list() == ["nab/realTraffic/speed_1"]


def test_prices_business_day_calendar_inserts_gaps_and_rejects_weekends(tmp_path):
    path = write(tmp_path / "acme.csv", "Date,Open,High,Low,Close,Volume\n"
                 "2024-01-05,1,2,0.5,1.5,100\n"   # Friday
                 "2024-01-06,1,2,0.5,1.5,100\n"   # Saturday: rejected
                 "2024-01-09,1,2,0.5,1.7,100\n")  # Tuesday (Monday 8th is a gap)
    result = loaders.load_prices(path)
    check_invariant(result)
    close = result.frame.filter(pl.col("channel") == "close")
    assert [t.day for t in close["timestamp"]] == [5, 8, 9]
    assert close["observed"].to_list() == [True, False, True]
    assert set(result.frame["channel"]) == {"open", "high", "low", "close", "volume"}
    assert result.rejected["reason"][0].startswith("date on a weekend")
    holiday = loaders.load_prices(path, holidays=[dt.date(2024, 1, 8)])
    assert holiday.frame.filter(pl.col("channel") == "close").height == 2


def test_matrix_gets_synthetic_daily_or_business_day_index(tmp_path):
    path = tmp_path / "m.txt.gz"
    path.write_bytes(gzip.compress(b"1,2\n3,4\n5,6\n7,8\n"))
    daily = loaders.load_matrix(path, "fx")
    check_invariant(daily)
    c0 = daily.frame.filter(pl.col("channel") == "c0")
    assert c0["timestamp"][2] == dt.datetime(1990, 1, 3, tzinfo=UTC)
    assert c0["value"].to_list() == [1.0, 3.0, 5.0, 7.0]
    bday = loaders.load_matrix(path, "fx", start="2024-01-05", calendar="business-day",
                               channels=["usd", "eur"])
    stamps = bday.frame.filter(pl.col("channel") == "usd")["timestamp"]
    assert [t.day for t in stamps] == [5, 8, 9, 10]
    with pytest.raises(LoadError, match="channels"):
        loaders.load_matrix(path, "fx", channels=["one"])


def test_air_quality_local_time_to_utc_and_text_column_skipped(tmp_path):
    path = write(tmp_path / "PRSA_Data_Test_20130301-20170228.csv",
                 '"No","year","month","day","hour","PM2.5","TEMP","wd","station"\n'
                 '1,2013,3,1,0,4,NA,"NNW","Test"\n2,2013,3,1,1,8,-1.1,"N","Test"\n'
                 '3,2013,2,30,2,8,-1.1,"N","Test"\n')
    result = loaders.load_air_quality(path)
    check_invariant(result)
    assert set(result.frame["channel"]) == {"PM2.5", "TEMP"}
    assert result.frame["series_id"][0] == "air/Test"
    assert result.frame["timestamp"].min() == dt.datetime(2013, 2, 28, 16, tzinfo=UTC)
    assert result.rejected["line"].to_list() == [4]  # 30 February


def test_physionet_static_missing_and_outcomes(tmp_path):
    records = write(tmp_path / "set.csv", "RecordID,Time,Parameter,Value\n"
                    "1,00:00,RecordID,1\n1,00:00,Age,54\n1,00:00,Height,-1\n"
                    "1,00:07,HR,73\n1,47:30,HR,-1\n1,01:00,Weight,80\n1,xx:00,HR,70\n")
    outcomes = write(tmp_path / "out.txt", "RecordID,In-hospital_death\n1,1\n")
    result = loaders.load_physionet(records, outcomes)
    check_invariant(result)
    assert result.n_rows_in == 7 and result.rejected["line"].to_list() == [8]
    hr = result.frame.filter(pl.col("channel") == "HR")
    assert hr["timestamp"].to_list() == [dt.datetime(2000, 1, 1, 0, 7, tzinfo=UTC),
                                         dt.datetime(2000, 1, 2, 23, 30, tzinfo=UTC)]
    assert hr["observed"].to_list() == [True, False]
    assert set(result.frame["channel"]) == {"HR", "Weight"}
    static = result.static.row(0, named=True)
    assert static["series_id"] == "physionet/1" and static["Age"] == 54.0
    assert static["Height"] is None and static["In-hospital_death"] == 1.0


def test_ingest_reports_and_is_idempotent(tmp_path):
    store = Store(tmp_path / "store")
    path = write(tmp_path / "s.csv", "timestamp,value\n2024-01-01,1\nbad,2\n")
    with pytest.raises(SchemaError, match="quarantined"):
        ingest([SourceSpec("sensor", path)], store)
    report = ingest([SourceSpec("sensor", path)], store, strict=False)
    source = report.sources[0]
    assert (source.n_rows_in, source.n_rows_kept, source.n_quarantined) == (2, 1, 1)
    assert source.n_unchanged == 1 and source.n_new == 0
    assert store.quarantine()["line"].to_list() == [3]
    empty = write(tmp_path / "empty.csv", "")
    report = ingest([SourceSpec("sensor", empty)], store, strict=False)
    assert "empty" in report.errors[0] and store.quarantine()["line"].min() == 0


def test_source_spec_errors_list_valid_choices(tmp_path):
    with pytest.raises(SchemaError, match="must be one of .*'nab'"):
        SourceSpec("excel", "x.xlsx")
    spec = SourceSpec("nab", tmp_path, {"colour": "red"})
    with pytest.raises(SchemaError, match="valid options"):
        spec.load()


def test_ingest_sample_bundled_data(tmp_path):
    store = Store(tmp_path / "store")
    first = ingest_sample(store)
    assert first.n_new > 0 and not first.errors
    # the one vendor glitch of the real market sample (NASDAQ 2018-01-09, volume 0)
    assert [s.by_reason for s in first.sources if s.n_quarantined] == [{"zero volume": 1}]
    again = ingest_sample(store)
    assert again.n_new == 0
    catalogue = store.catalogue()
    assert {"nab/realTraffic/speed_6005", "air/Aotizhongxin", "market/SP500"} <= set(
        catalogue["series_id"])
    frequency = dict(catalogue.select("series_id", "frequency").unique().iter_rows())
    assert frequency["market/SP500"] == "business-day"
    assert frequency["air/Aotizhongxin"] == "1h"




def test_every_shared_data_set_ingests(shared_data):
    ett = loaders.load_ett(shared_data / "ett" / "ETTh1.csv")
    assert ett.n_rows_kept == 17_420 and ett.frame.height == 17_420 * 7
    fx = loaders.load_matrix(shared_data / "finance" / "exchange_rate.txt.gz", "fx/rates")
    assert fx.n_rows_kept == 7_588 and fx.frame["channel"].n_unique() == 8
    air = loaders.load_air_quality(shared_data / "air")
    assert air.n_rows_kept == 4 * 35_064 and air.frame["series_id"].n_unique() == 4
    nab = loaders.load_nab(shared_data / "nab" / "data")
    check_invariant(nab)
    assert nab.frame["series_id"].n_unique() == 35 and nab.rejected.height == 9
    physionet = loaders.load_physionet(shared_data / "physionet2012" / "set-a.csv.gz",
                                       shared_data / "physionet2012" / "Outcomes-a.txt")
    check_invariant(physionet)
    assert physionet.static.height == 3_996
    assert physionet.static["In-hospital_death"].null_count() == 0


def test_bare_paths_get_a_guessed_kind(tmp_path):
    from recurra.data.ingest import guess_kind

    (tmp_path / "air").mkdir()
    (tmp_path / "air" / "PRSA_Data_X_1-2.csv").write_text("year\n")
    assert guess_kind(tmp_path / "air") == "air"
    assert guess_kind(tmp_path) == "nab"
    assert guess_kind(tmp_path / "ETTh1.csv") == "ett"
    assert guess_kind(tmp_path / "exchange_rate.txt.gz") == "matrix"
    assert guess_kind(tmp_path / "plant.parquet") == "sensor"
    csv = write(tmp_path / "plant.csv", "timestamp,value\n2024-01-01,1\n")
    report = ingest([csv], Store(tmp_path / "store"))
    assert report.sources[0].kind == "sensor" and report.n_new == 1


def test_spaces_and_quotes_around_cells_are_tolerated(tmp_path):
    path = write(tmp_path / "spaces.csv", 'timestamp,value\n 2024-01-01 00:00:00 , 7 \n'
                 '"2024-01-01 01:00:00","3"\n2024-01-01 02:00:00,x y\n')
    result = loaders.load_sensor(path)
    check_invariant(result)
    assert result.frame["value"].to_list() == [7.0, 3.0]
    assert result.rejected["line"].to_list() == [4]


def test_invalid_utf8_bytes_are_quarantined_not_fatal(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes(b"timestamp,value\n2024-01-01 00:00:00,1\n2024-01-01 01:00:00,\xe9t\xe9\n")
    result = loaders.load_sensor(path)
    check_invariant(result)
    assert result.frame["value"].to_list() == [1.0]
    assert result.rejected["line"].to_list() == [3]
    assert result.rejected["reason"][0].startswith("text in numeric column 'value'")


def test_prices_quarantine_impossible_ohlcv_rows_with_a_reason(tmp_path):
    path = write(tmp_path / "bad.csv", "Date,Open,High,Low,Close,Volume\n"
                 "2024-01-02,1,2,0.5,1.5,100\n"     # good
                 "2024-01-03,-1,2,0.5,1.5,100\n"    # negative price
                 "2024-01-04,1,0.4,0.5,0.45,100\n"  # high < low
                 "2024-01-05,1,2,0.5,1.5,0\n"       # zero volume
                 "2024-01-08,1,2,0.5,2.5,100\n"     # close above high
                 "2024-01-09,1,2,0.5,1.6,100\n")    # good
    result = loaders.load_prices(path)
    check_invariant(result)
    reasons = dict(zip(result.rejected["line"], result.rejected["reason"], strict=True))
    assert reasons[3].startswith("non-positive price: open")
    assert reasons[4] == "inconsistent OHLC: high < low"
    assert reasons[5].startswith("zero volume")
    assert reasons[6] == "inconsistent OHLC: close outside [low, high]"
    close = result.frame.filter(pl.col("channel") == "close")
    # quarantined days stay on the business-day calendar as gaps, never silently dropped
    assert close["observed"].to_list() == [True, False, False, False, False, True]
    assert close["value"].to_list()[0] == 1.5


def test_bundled_market_sample_has_holidays_as_gaps():
    from recurra.data.ingest import sample_sources
    spec = next(s for s in sample_sources() if s.kind == "prices")
    result = loaders.load_prices(spec.path, **spec.options)
    check_invariant(result)
    assert result.rejected["reason"].to_list() == ["zero volume: no trades that day"]
    close = result.frame.filter(pl.col("channel") == "close")
    assert set(close["series_id"]) == {"market/SP500", "market/NASDAQ"}
    sp = close.filter(pl.col("series_id") == "market/SP500")
    gaps = sp.filter(~pl.col("observed"))["timestamp"].dt.date().to_list()
    assert dt.date(2018, 12, 25) in gaps and dt.date(2018, 7, 4) in gaps   # exchange holidays
    assert sp["observed"].sum() > 700 and sp["timestamp"].dt.weekday().max() <= 5
