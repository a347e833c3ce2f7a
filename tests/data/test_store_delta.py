"""The Delta Lake store: versions, time travel, idempotent merges, concurrent writers,
a catalogue that is repaired from the data, and clear errors for foreign folders."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import polars as pl
import pytest
from deltalake import write_deltalake

from recurra.data.schema import validate_frame
from recurra.data.store import Store, StoreError, UpsertReport
from tests.conftest import make_frame

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def store(tmp_path) -> Store:
    return Store(tmp_path / "store")


def test_every_write_reports_its_version_and_old_versions_stay_readable(store):
    frame = make_frame(n_series=2, n_steps=30, gap_share=0.0, seed=1)
    first = store.upsert(frame, source="a")
    changed = frame.with_columns(pl.col("value") + 1.0)
    second = store.upsert(changed, source="b")
    assert (first.version, second.version) == (0, 1) == (0, store.version())
    assert second == UpsertReport(n_updated=frame.height)
    assert store.read(version=0).equals(validate_frame(frame))
    assert store.read().equals(validate_frame(changed))
    assert store.read(series_ids="s0", version=0)["value"].to_list() == \
        frame.filter(pl.col("series_id") == "s0")["value"].to_list()
    with pytest.raises(StoreError, match="no version 7"):
        store.read(version=7)
    store.write_table("runs", pl.DataFrame({"run_id": ["r1"], "loss": [1.0]}), ["run_id"])
    store.write_table("runs", pl.DataFrame({"run_id": ["r1"], "loss": [2.0]}), ["run_id"])
    assert store.versions["runs"] == 1 == store.table_stamp("runs")
    assert store.read_table("runs", version=0)["loss"].to_list() == [1.0]


def test_unchanged_writes_commit_nothing(store):
    frame = make_frame(n_series=3, n_steps=40, seed=2)
    store.upsert(frame, source="a")
    rejected = pl.DataFrame({"source_file": ["f.csv"], "line": [3], "reason": ["bad"],
                             "raw": ["x"]})
    store.add_quarantine(rejected)
    store.write_table("static", pl.DataFrame({"series_id": ["s0"], "site": ["x"]}),
                      ["series_id"])
    before = {name: store.version(name) for name in ("series", "catalogue", "quarantine",
                                                      "static")}
    assert store.upsert(frame.sample(fraction=1.0, shuffle=True, seed=1), source="a") == \
        UpsertReport(n_unchanged=frame.height)
    store.add_quarantine(rejected)
    store.write_table("static", pl.DataFrame({"series_id": ["s0"], "site": ["x"]}),
                      ["series_id"])
    assert {name: store.version(name) for name in before} == before


def test_scheduled_appends_keep_the_catalogue_exact(store):
    """The incremental catalogue (new values past ``last`` on the grid) equals one computed
    from scratch over the whole series."""
    frame = make_frame(n_series=3, n_steps=60, gap_share=0.1, seed=4)
    times = frame["timestamp"].unique().sort()
    store.upsert(frame.filter(pl.col("timestamp") < times[40]), source="a")
    for step in range(40, 60):
        store.upsert(frame.filter(pl.col("timestamp") == times[step]), source="hourly")
    fresh = Store(store.root.parent / "fresh")
    fresh.upsert(frame, source="hourly")
    assert store.catalogue().equals(fresh.catalogue())


def test_an_upsert_mixing_new_series_and_appends_keeps_the_catalogue_exact(store):
    """A series the catalogue does not list yet, arriving in the same upsert as the next
    values of listed ones, is described from its rows; the listed ones incrementally."""
    frame = make_frame(n_series=4, n_steps=50, gap_share=0.1, seed=8)
    times = frame["timestamp"].unique().sort()
    newcomer = pl.col("series_id") == frame["series_id"].unique().sort()[-1]
    store.upsert(frame.filter(~newcomer, pl.col("timestamp") < times[30]), source="a")
    store.upsert(frame.filter(newcomer | (pl.col("timestamp") < times[31])), source="b")
    store.upsert(frame, source="b")
    fresh = Store(store.root.parent / "fresh")
    fresh.upsert(frame, source="b")
    assert store.catalogue().drop("source").equals(fresh.catalogue().drop("source"))
    listed = store.catalogue().filter(newcomer)
    assert listed.height and listed["n_rows"].sum() == frame.filter(newcomer).height


def _files_per_bucket(store: Store) -> dict[int, int]:
    import pyarrow as pa
    from deltalake import DeltaTable

    actions = pl.from_arrow(pa.table(DeltaTable(str(store.root / "series"))
                                     .get_add_actions(flatten=True)))
    return dict(actions.group_by("partition.bucket").len().iter_rows())


def test_scheduled_appends_compact_crowded_buckets_and_keep_every_version(store, monkeypatch):
    """One new value per series per run adds a file per bucket; past the limit the upsert
    compacts those buckets (same rows, catalogue re-stamped, old versions still readable),
    so the file count, and with it the cost of a run, stays bounded."""
    from recurra.data import store_delta

    monkeypatch.setattr(store_delta, "AUTO_COMPACT_FILES", 4)
    frame = make_frame(n_series=3, n_steps=30, gap_share=0.1, seed=6)
    times = frame["timestamp"].unique().sort()
    versions = [store.upsert(frame.filter(pl.col("timestamp") == t), source="hourly").version
                for t in times[:12]]
    history = [e["operation"] for e in store._series.open().history()]
    assert "OPTIMIZE" in history  # compaction ran...
    assert max(_files_per_bucket(store).values()) <= 5  # ...and bounded the files
    assert store.read().equals(validate_frame(frame.filter(pl.col("timestamp") <= times[11])))
    assert store.read(version=versions[5]).equals(
        validate_frame(frame.filter(pl.col("timestamp") <= times[5])))
    # the catalogue describes the latest version without a repair from the data
    _rows, stamp, _ = store._catalogue_state()
    assert stamp == store.version()
    fresh = Store(store.root.parent / "fresh")
    fresh.upsert(frame.filter(pl.col("timestamp") <= times[11]), source="hourly")
    assert store.catalogue().drop("partition").equals(fresh.catalogue().drop("partition"))


def test_result_tables_append_new_keys_and_compact_their_small_files(store, monkeypatch):
    """Hourly forecasts under a key: new keys are appended, re-sent ones merged (no
    duplicates), and the table's small files are compacted past the limit."""
    import datetime as dt

    from recurra.data import store_delta

    monkeypatch.setattr(store_delta, "AUTO_COMPACT_FILES", 3)
    key = ["series_id", "issued_at", "step"]
    start = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)

    def run(hour: int, y: float) -> pl.DataFrame:
        return pl.DataFrame({"series_id": ["a", "b"], "step": [1, 1], "y_hat": [y, y],
                             "issued_at": [start + dt.timedelta(hours=hour)] * 2})

    for hour in range(8):
        store.write_table("forecasts", run(hour, float(hour)), key=key)
    store.write_table("forecasts", run(7, -1.0), key=key)  # a re-sent run replaces its rows
    table = store._table("forecasts").open()
    assert "OPTIMIZE" in [e["operation"] for e in table.history()]
    assert len(table.file_uris()) <= 4
    stored = store.read_table("forecasts").sort("issued_at", "series_id")
    assert stored.height == 16
    assert stored["y_hat"].to_list() == [float(h) for h in range(7) for _ in (0, 1)] + [-1.0] * 2


def test_a_store_sees_commits_made_by_another_store_on_the_same_root(store):
    """The latest snapshot is cached per thread and brought up to date on each open."""
    frame = make_frame(n_series=2, n_steps=20, seed=7)
    store.upsert(frame.filter(pl.col("series_id") == "s0"), source="a")
    assert store.series_ids() == ["s0"]
    Store(store.root).upsert(frame.filter(pl.col("series_id") == "s1"), source="b")
    assert store.series_ids() == ["s0", "s1"]
    assert store.read().height == frame.height
    report = store.upsert(frame.with_columns(pl.col("value") + 1), source="c")
    assert (report.n_new, report.version) == (0, 2)  # it saw s1's rows: updates, not inserts
    assert report.n_updated == frame["value"].is_not_null().sum()


def test_a_compaction_the_catalogue_missed_is_repaired_from_the_data(store):
    """A writer killed between its compaction and the catalogue re-stamp leaves the
    catalogue behind; the next read re-describes the compacted buckets, rows unchanged."""
    frame = make_frame(n_series=3, n_steps=40, seed=8)
    for half in (frame.head(60), frame.tail(frame.height - 60)):
        store.upsert(half, source="a")
    expected = store.catalogue()
    store._series.open().optimize.compact()  # no re-stamp
    assert store.catalogue().equals(expected)
    _rows, stamp, _ = store._catalogue_state()
    assert stamp == store.version()


def test_a_catalogue_behind_the_data_is_repaired_from_it(store):
    """A writer killed between its series commit and its catalogue commit leaves the
    catalogue one version behind; the next read re-describes the changed buckets."""
    frame = make_frame(n_series=4, n_steps=50, seed=5)
    store.upsert(frame.filter(pl.col("series_id") != "s3"), source="a")
    extra = frame.filter(pl.col("series_id") == "s3").with_columns(
        pl.lit(3, pl.Int32).alias("bucket"))
    from recurra.data.store import bucket_of

    extra = extra.with_columns(pl.lit(bucket_of("s3"), pl.Int32).alias("bucket"))
    write_deltalake(str(store.root / "series"), extra.to_arrow(), mode="append")  # no catalogue
    catalogue = store.catalogue()
    assert set(catalogue["series_id"]) == {"s0", "s1", "s2", "s3"}
    assert catalogue["n_rows"].sum() == frame.height
    assert store.series_ids() == ["s0", "s1", "s2", "s3"]


def test_a_folder_that_is_not_a_delta_table_is_refused_by_name(tmp_path):
    root = tmp_path / "old"
    (root / "series" / "s0-abc").mkdir(parents=True)
    (root / "series" / "s0-abc" / "data.parquet").write_bytes(b"PAR1")
    store = Store(root)
    with pytest.raises(StoreError, match=r"series is not a Delta table.*migrate"):
        store.read()
    with pytest.raises(StoreError, match="not a Delta table"):
        store.upsert(make_frame(n_series=1, n_steps=5), source="x")
    assert (root / "series" / "s0-abc" / "data.parquet").read_bytes() == b"PAR1"  # untouched


def test_a_table_another_process_is_creating_reads_as_absent_not_foreign(tmp_path):
    """Between a first writer's data files and its first commit, the table folder holds
    ``bucket=N/part-*.parquet`` and no ``_delta_log``: another reader sees no table yet."""
    root = tmp_path / "store"
    part = root / "series" / "bucket=3"
    part.mkdir(parents=True)
    name = "part-00000-c3548625-1708-4270-92c2-8ffffa611cfd-c000.lz4raw.parquet"
    (part / name).write_bytes(b"PAR1")
    store = Store(root)
    assert store.read().is_empty()
    store.upsert(make_frame(n_series=2, n_steps=5), source="x")
    assert store.read().height == 10


WRITER = textwrap.dedent("""
    import datetime as dt, sys
    import polars as pl
    from recurra.data.store import Store
    root, who = sys.argv[1], sys.argv[2]
    store = Store(root)
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    for hour in range(12):
        ids = [f"shared{j}" for j in range(6)] + [f"{who}{j}" for j in range(3)]
        stamp = base + dt.timedelta(hours=hour)
        store.upsert(pl.DataFrame({"series_id": ids, "timestamp": [stamp] * len(ids),
                                   "value": [float(hour)] * len(ids)}), source=who)
        store.write_table("runs", pl.DataFrame({"run_id": [f"{who}{hour}", f"both{hour}"],
                                                "hour": [hour, hour]}), ["run_id"])
""")


def test_two_processes_writing_the_same_tables_both_succeed(tmp_path):
    root = tmp_path / "store"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    writers = [subprocess.Popen([sys.executable, "-c", WRITER, str(root), who], env=env,
                                stderr=subprocess.PIPE, text=True) for who in ("a", "b")]
    errors = [w.communicate(timeout=240)[1] for w in writers]
    assert [w.returncode for w in writers] == [0, 0], errors
    store = Store(root)
    frame = store.read()
    assert frame.height == 12 * (6 + 3 + 3)  # nothing lost, no duplicated key
    assert store.catalogue()["n_rows"].sum() == frame.height
    assert store.read_table("runs").height == 12 * 3
