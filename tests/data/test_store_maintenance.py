"""compact / vacuum / migrate of the Delta store, and their CLI commands."""

from __future__ import annotations

import polars as pl
import pytest
from typer.testing import CliRunner

from recurra.data._legacy_store import Store as LegacyStore
from recurra.data.store import Store, StoreError
from recurra.data.store_maintenance import compact, is_legacy_store, migrate, table_files, vacuum
from recurra.pipelines.cli import app
from tests.conftest import make_frame


def many_small_writes(store: Store, n: int = 6) -> pl.DataFrame:
    frame = make_frame(n_series=2, n_steps=6 * n, gap_share=0.0)
    for i in range(n):
        part = frame.group_by("series_id").agg(pl.all().slice(6 * i, 6)).explode(
            ["channel", "timestamp", "value", "observed"]).sort(["series_id", "timestamp"])
        store.upsert(part, source=f"part{i}.csv")
        store.write_table("runs", pl.DataFrame({"run_id": [f"r{i}"], "n": [i]}), key=["run_id"])
    return frame


def test_compact_reduces_files_keeps_rows_and_is_idempotent(tmp_path):
    store = Store(tmp_path / "s")
    frame = many_small_writes(store)
    catalogue = store.catalogue()
    before = table_files(store._series)
    reports = {r.table: r for r in compact(store)}
    assert reports["series"].n_files_removed > reports["series"].n_files_added
    assert table_files(store._series) < before
    assert table_files(store._table("runs")) == 1
    assert store.read().equals(Store(tmp_path / "s").read())
    assert store.read().height == frame.height
    # the catalogue was re-stamped, not recomputed: same rows, describing the new version
    assert store.catalogue().equals(catalogue)
    assert store._catalogue_state()[1] == store.version("series")
    again = compact(store)
    assert all(r.version is None for r in again)  # nothing left to compact: no new version


def test_vacuum_deletes_replaced_files_and_ends_old_time_travel(tmp_path):
    store = Store(tmp_path / "s")
    many_small_writes(store, n=3)
    compact(store)
    first = store.read(version=0)
    assert first.height
    dry = dict(vacuum(store, retain_hours=0, dry_run=True))
    assert dry["series"]  # the pre-compaction files
    assert store.read(version=0).equals(first)  # a dry run deletes nothing
    done = dict(vacuum(store, retain_hours=0))
    assert sorted(done["series"]) == sorted(dry["series"])
    assert not any((tmp_path / "s" / "series" / f).exists() for f in done["series"])
    assert store._catalogue_state()[1] == store.version("series")  # re-stamped, in step
    assert store.read().height == 2 * 18
    with pytest.raises(Exception):  # noqa: B017 - files of version 0 are gone
        store.read(version=0)
    assert dict(vacuum(store, retain_hours=0))["series"] == []
    with pytest.raises(StoreError, match=r"`retain_hours` \(-1\) must be a number >= 0"):
        vacuum(store, retain_hours=-1)


def legacy_store(root) -> LegacyStore:
    old = LegacyStore(root)
    old.upsert(make_frame(n_series=3, n_steps=20), source="sensors.csv")
    old.write_table("forecasts", pl.DataFrame({"series_id": ["s0"], "y_hat": [1.5]}))
    old.add_quarantine(pl.DataFrame({"source_file": ["sensors.csv"], "line": [7],
                                     "reason": ["text in numeric column"], "raw": ["x"]}))
    return old


def test_migrate_copies_series_tables_and_quarantine_and_is_rerunnable(tmp_path):
    old = legacy_store(tmp_path / "old")
    assert is_legacy_store(tmp_path / "old")
    new = Store(tmp_path / "new")
    report = migrate(tmp_path / "old", new)
    assert (report.n_series, report.n_rows) == (3, 60)
    assert new.read().equals(old.read())
    assert new.catalogue()["source"].unique().to_list() == ["sensors.csv"]
    assert new.read_table("forecasts")["y_hat"].to_list() == [1.5]
    assert new.quarantine()["line"].to_list() == [7]
    version = new.version("series")
    again = migrate(tmp_path / "old", new)
    assert again.skipped == ("forecasts",)
    assert new.version("series") == version  # nothing re-committed
    assert new.quarantine().height == 1 and new.read_table("forecasts").height == 1


def test_migrate_refuses_bad_input_by_name(tmp_path):
    legacy_store(tmp_path / "old")
    with pytest.raises(StoreError, match="OLD_ROOT.*nowhere.*existing store folder"):
        migrate(tmp_path / "nowhere", Store(tmp_path / "new"))
    with pytest.raises(StoreError, match="migrate into a new store"):
        migrate(tmp_path / "old", Store(tmp_path / "old"))
    delta = Store(tmp_path / "delta")
    delta.upsert(make_frame(n_series=1, n_steps=5), source="x")
    with pytest.raises(StoreError, match="not a store in the old Parquet layout"):
        migrate(tmp_path / "delta", Store(tmp_path / "other"))


def test_cli_compact_vacuum_migrate(tmp_path, recurra_home):
    legacy_store(tmp_path / "old")
    runner = CliRunner()
    target = str(tmp_path / "new")
    result = runner.invoke(app, ["store", "migrate", str(tmp_path / "old"), "--store", target])
    assert result.exit_code == 0, result.output
    assert "migrated 3 series (60 rows)" in result.output
    many_small_writes(Store(target), n=3)
    result = runner.invoke(app, ["store", "compact", "--store", target])
    assert result.exit_code == 0, result.output
    assert "runs: 3 file(s) -> 1" in result.output and "compacted" in result.output
    result = runner.invoke(app, ["store", "vacuum", "--store", target, "--retain-hours", "0",
                                 "--dry-run"])
    assert result.exit_code == 0 and "would delete" in result.output
    result = runner.invoke(app, ["store", "vacuum", "--store", target, "--retain-hours", "0"])
    assert result.exit_code == 0 and "deleted" in result.output
    result = runner.invoke(app, ["store", "migrate", str(tmp_path / "missing"), "--store",
                                 target])
    assert result.exit_code == 1
    assert "missing" in result.output and "must be an existing store folder" in result.output


def test_old_store_refusal_points_at_migrate(tmp_path):
    legacy_store(tmp_path / "old")
    with pytest.raises(StoreError, match="recurra store migrate"):
        Store(tmp_path / "old").read()


def test_maintain_flow_is_schedulable(tmp_path, recurra_home):
    from recurra.pipelines.config import SCHEDULE_NAMES
    from recurra.pipelines.flows import FLOWS

    assert "maintain" in SCHEDULE_NAMES
    store = Store(tmp_path / "s")
    many_small_writes(store, n=3)
    result = FLOWS["maintain"](store_root=str(tmp_path / "s"), retain_hours=0)
    assert "series" in result["compacted"] and result["vacuumed"] > 0
    runs = store.read_table("runs").filter(pl.col("flow") == "maintain")
    assert runs["status"].to_list() == ["completed"]
