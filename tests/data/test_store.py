"""The store (Delta tables): upsert semantics, safe partitions, catalogue, quarantine, tables."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from recurra.data.schema import validate_frame
from recurra.data.store import Store, StoreError, UpsertReport, partition_name
from tests.conftest import make_frame


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "store")


def test_upsert_then_read_round_trips(store, gappy_frame):
    report = store.upsert(gappy_frame, source="test")
    assert report == UpsertReport(n_new=gappy_frame.height)
    assert store.read().equals(validate_frame(gappy_frame))


def test_reupserting_the_same_rows_changes_nothing(store, gappy_frame):
    store.upsert(gappy_frame, source="test")
    files = sorted((store.root / "series").rglob("*.parquet"))
    mtimes = [f.stat().st_mtime_ns for f in files]
    report = store.upsert(gappy_frame, source="test")
    assert report == UpsertReport(n_unchanged=gappy_frame.height)
    assert [f.stat().st_mtime_ns for f in files] == mtimes  # nothing rewritten


def test_incremental_upsert_appends_new_and_updates_changed(store):
    frame = make_frame(n_series=1, n_steps=10, gap_share=0.0)
    store.upsert(frame.head(6), source="a")
    changed = frame.with_columns(
        pl.when(pl.int_range(pl.len()) == 0).then(100.0).otherwise(pl.col("value"))
        .alias("value"))
    report = store.upsert(changed.slice(0, 10), source="b")
    assert report == UpsertReport(n_new=4, n_updated=1, n_unchanged=5)
    out = store.read()
    assert out.height == 10 and out["value"][0] == 100.0


def test_value_becoming_missing_counts_as_update(store):
    frame = make_frame(n_series=1, n_steps=5, gap_share=0.0)
    store.upsert(frame, source="a")
    gone = frame.with_columns(pl.lit(None, pl.Float64).alias("value"),
                              pl.lit(False).alias("observed"))
    assert store.upsert(gone, source="a").n_updated == 5
    assert store.read()["observed"].sum() == 0


def test_read_filters(store, multichannel_frame):
    store.upsert(multichannel_frame, source="m")
    out = store.read(series_ids="s1", channels=["c0", "c2"],
                     start="2024-01-02", end=dt.datetime(2024, 1, 2, 23))
    assert set(out["series_id"]) == {"s1"} and set(out["channel"]) == {"c0", "c2"}
    assert out.height == 2 * 24
    assert store.read(series_ids=["unknown"]).height == 0


def test_a_long_id_list_reads_the_same_rows_as_a_short_one(store, monkeypatch):
    """Above SEMI_JOIN_IDS ids the series filter is a semi join, not an ``is_in`` list: the
    rows read (and the upsert's matching of stored rows) are the same either way."""
    from recurra.data import store_catalogue

    frame = make_frame(n_series=40, n_steps=3, gap_share=0.0)
    store.upsert(frame, source="a")
    wanted = sorted(frame["series_id"].unique().to_list())[::3] + ["unknown"]
    listed = store.read(series_ids=wanted)
    monkeypatch.setattr(store_catalogue, "SEMI_JOIN_IDS", 2)
    joined = store.read(series_ids=wanted)
    assert joined.equals(listed)
    assert set(joined["series_id"]) == set(wanted) - {"unknown"}
    assert joined.height == 3 * (len(wanted) - 1)
    report = store.upsert(frame.with_columns(pl.col("value") + 1.0), source="b")
    assert report == UpsertReport(n_updated=frame.height)


def test_catalogue_describes_each_channel(store, multichannel_frame):
    store.upsert(multichannel_frame, source="file.csv")
    cat = store.catalogue()
    assert cat.height == 6
    assert set(cat["frequency"]) == {"1h"} and set(cat["source"]) == {"file.csv"}
    row = cat.filter((pl.col("series_id") == "s0") & (pl.col("channel") == "c1")).row(
        0, named=True)
    part = multichannel_frame.filter((pl.col("series_id") == "s0") & (pl.col("channel") == "c1"))
    assert row["n_rows"] == 240
    assert row["share_observed"] == pytest.approx(part["observed"].mean())
    assert row["first"] == part["timestamp"].min()
    assert Store(store.root / "fresh").catalogue().columns == cat.columns


@pytest.mark.parametrize("series_id", ["../../etc", "a/b", "..", ".", "/etc/passwd",
                                       "bad\x00id", "x" * 5000, "C:\\windows", "", " "])
def test_hostile_series_ids_stay_inside_the_root(tmp_path, series_id):
    store = Store(tmp_path / "store")
    frame = pl.DataFrame({"series_id": [series_id], "timestamp": [dt.datetime(2024, 1, 1)],
                          "value": [1.0]})
    store.upsert(frame, source="evil")
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert written and all(p.resolve().is_relative_to(store.root) for p in written)
    assert store.read(series_ids=[series_id])["series_id"].to_list() == [series_id]
    name = partition_name(series_id)
    assert "/" not in name and "\x00" not in name and len(name) <= 57
    assert name not in ("..", ".")


def test_partition_names_differ_for_ids_with_the_same_slug():
    assert partition_name("a/b") != partition_name("a_b")


@pytest.mark.parametrize("name", ["../x", "a b", "", "1abc", "x" * 65, "a.b"])
def test_table_names_are_validated(store, name):
    with pytest.raises(StoreError, match="table name"):
        store.write_table(name, pl.DataFrame({"a": [1]}), [])


def test_write_table_upserts_by_key_and_appends_without_key(store):
    store.write_table("runs", pl.DataFrame({"run": ["a", "b"], "loss": [1.0, 2.0]}), ["run"])
    store.write_table("runs", pl.DataFrame({"run": ["b", "c"], "loss": [3.0, 4.0]}), ["run"])
    runs = store.read_table("runs").sort("run")
    assert runs.to_dict(as_series=False) == {"run": ["a", "b", "c"], "loss": [1.0, 3.0, 4.0]}
    store.write_table("log", pl.DataFrame({"x": [1]}), [])
    store.write_table("log", pl.DataFrame({"x": [1]}), [])
    assert store.read_table("log").height == 2
    assert store.read_table("never_written").is_empty()
    assert set(store.tables()) == {"runs", "log"}
    with pytest.raises(StoreError, match="key column"):
        store.write_table("runs", pl.DataFrame({"x": [1]}), ["run"])
    with pytest.raises(StoreError, match="not in the stored table"):
        store.write_table("runs", pl.DataFrame({"x": [1]}), ["x"])


def test_write_table_key_dtypes_may_differ_from_the_stored_ones(store):
    store.write_table("scores", pl.DataFrame({"step": pl.Series([1, 2], dtype=pl.Int32),
                                              "v": [1.0, 2.0]}), ["step"])
    store.write_table("scores", pl.DataFrame({"step": [2], "v": [5.0]}), ["step"])
    assert store.read_table("scores").sort("step")["v"].to_list() == [1.0, 5.0]


def test_quarantine_is_keyed_so_reingesting_does_not_duplicate(store):
    rejected = pl.DataFrame({"source_file": ["f.csv", "f.csv"], "line": [3, 7],
                             "reason": ["unparseable timestamp", "text in value"],
                             "raw": ["xx,1", "2024-01-01,abc"]})
    store.add_quarantine(rejected)
    store.add_quarantine(rejected)
    q = store.quarantine()
    assert q.height == 2 and q["line"].to_list() == [3, 7]
    assert q.columns == ["source_file", "line", "reason", "raw", "ingested_at"]
    assert Store(store.root / "other").quarantine().height == 0


def test_no_temporary_files_are_left_behind(store, gappy_frame):
    store.upsert(gappy_frame, source="a")
    store.upsert(gappy_frame.head(5).with_columns(pl.col("value") + 1), source="a")
    assert not [p for p in store.root.rglob(".tmp-*")]
    assert not [p for p in store.root.rglob("*.lock")]  # Delta commits need no lock files


def test_default_root_follows_recurra_home(recurra_home):
    assert Store().root == (recurra_home / "store").resolve()


def test_fast_check_still_rejects_unsorted_duplicated_or_inconsistent_frames(store):
    from recurra.data.schema import SchemaError
    from recurra.data.store import checked_frame

    frame = validate_frame(make_frame(n_series=2, n_steps=5))
    assert checked_frame(frame, "x").equals(frame)
    assert checked_frame(frame.reverse(), "x").equals(frame)  # unsorted: sorted by the gate
    with pytest.raises(SchemaError, match="share a"):
        checked_frame(pl.concat([frame, frame.head(1)]), "x")
    first_missing = pl.when(pl.int_range(pl.len()) == 0).then(None).otherwise(pl.col("value"))
    bad_mask = frame.with_columns(first_missing.alias("value"), pl.lit(True).alias("observed"))
    with pytest.raises(SchemaError, match="observed"):
        checked_frame(bad_mask, "x")
    with pytest.raises(SchemaError, match="NaN/inf"):
        checked_frame(frame.with_columns(pl.lit(float("inf")).alias("value")), "x")


def _keys(rows: list[tuple[str, str, int]]) -> pl.DataFrame:
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return pl.DataFrame({"series_id": [r[0] for r in rows], "channel": [r[1] for r in rows],
                         "timestamp": [base + dt.timedelta(hours=r[2]) for r in rows]})


@pytest.mark.parametrize(("rows", "expected"), [
    ([("a", "x", 0), ("a", "x", 1), ("a", "y", 0), ("b", "x", 0)], (True, False)),
    ([("a", "x", 0), ("a", "x", 0), ("a", "x", 1)], (True, True)),      # repeated key
    ([("a", "x", 1), ("a", "x", 0)], (False, False)),                   # time goes back
    ([("b", "x", 0), ("a", "x", 1)], (False, False)),                   # series out of order
    ([("a", "y", 0), ("a", "x", 1)], (False, False)),                   # channel out of order
    ([("a", "x", 5), ("b", "x", 0), ("b", "x", 1)], (True, False)),     # time resets per series
    ([("a", "x", 0), ("b", "x", 1), ("a", "x", 2)], (False, False)),    # series split in two
])
def test_key_order_from_runs_matches_row_comparisons(rows, expected):
    from recurra.data.regular import key_order

    frame = _keys(rows)
    assert key_order(frame, ["series_id", "channel", "timestamp"]) == expected
    nulls = frame.with_columns(pl.lit(None, pl.Utf8).alias("channel"))
    assert key_order(nulls, ["series_id", "channel", "timestamp"]) is None  # not applicable


def test_upsert_accepts_unsorted_frames_and_stores_them_sorted(store, gappy_frame):
    shuffled = gappy_frame.sample(fraction=1.0, shuffle=True, seed=3)
    assert store.upsert(shuffled, source="test").n_new == gappy_frame.height
    assert store.read().equals(validate_frame(gappy_frame))
