"""Crash consistency: ``kill -9`` a real ``recurra ingest`` process at each point of its
write phase (first ingest, and an ingest that updates existing partitions), then check that
the store opens, every row the catalogue lists is readable, a re-run converges to exactly
the clean-ingest result (series rows, catalogue, quarantine) and that nothing blocks or
lingers (no lock or temp files; the data files of a commit that never landed go with a
vacuum)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest

from recurra.data.store import Store
from recurra.data.store_delta import CRASH_ENV
from recurra.data.store_maintenance import vacuum

ROOT = Path(__file__).resolve().parents[2]
CRASH_POINTS = ("before_series_commit", "after_series_commit", "after_catalogue_commit")
N_SERIES, N_STEPS = 40, 60


def write_csv(path: Path, offset: float) -> Path:
    """A long-layout CSV: N_SERIES x N_STEPS hourly values and two bad rows."""
    lines = ["series_id,timestamp,value"]
    for s in range(N_SERIES):
        for h in range(N_STEPS):
            value = "" if (s + h) % 17 == 0 else f"{s + h * 0.5 + offset:.2f}"
            lines.append(f"meter-{s:03d},2024-01-{1 + h // 24:02d}T{h % 24:02d}:00:00Z,{value}")
    lines += ["meter-000,2024-02-01T00:00:00Z,not-a-number", "meter-001,yesterday,1.0"]
    path.write_text("\n".join(lines) + "\n")
    return path


def run_ingest(csv: Path, root: Path, crash_at: str | None = None,
               **popen) -> subprocess.Popen | subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "RECURRA_HOME": str(root.parent / "home")}
    env.pop(CRASH_ENV, None)
    if crash_at:
        env[CRASH_ENV] = crash_at
    command = [sys.executable, "-m", "recurra.pipelines.cli", "ingest", str(csv),
               "-o", "layout=long",
               "--allow-rejects", "--store", str(root)]
    if popen:
        return subprocess.Popen(command, env=env, cwd=ROOT, **popen)
    return subprocess.run(command, env=env, cwd=ROOT, capture_output=True, text=True,
                          timeout=120)


def state(root: Path) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    store = Store(root)
    return (store.read(), store.catalogue().sort(["series_id", "channel"]),
            store.quarantine().drop("ingested_at"))


def assert_consistent(root: Path) -> None:
    """The store opens and every row the catalogue lists is readable."""
    store = Store(root)
    data, catalogue = store.read(), store.catalogue()
    counts = data.group_by("series_id", "channel").len()
    listed = catalogue.join(counts, on=["series_id", "channel"], how="left")
    assert (listed["len"].fill_null(0) == listed["n_rows"]).all(), listed
    assert catalogue.height == counts.height


def assert_nothing_lingers(root: Path) -> None:
    names = [p.name for p in root.rglob("*") if p.is_file()]
    assert not [n for n in names if n.endswith(".lock") or n.startswith((".tmp", "tmp"))
                or ".tmp" in n], names
    vacuum(Store(root), retain_hours=0)
    store = Store(root)
    for location in (store._series, store._catalogue, *map(store._table, store.tables())):
        table = location.open()
        referenced = {Path(u).resolve() for u in table.file_uris()}
        on_disk = {p.resolve() for p in Path(location.uri).rglob("*.parquet")
                   if "_delta_log" not in p.parts}
        assert on_disk == referenced, location  # a killed commit's files are gone


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("crash")
    first = write_csv(folder / "meters.csv", 0.0)
    second = write_csv(folder / "meters-v2.csv", 0.25)
    clean = folder / "clean"
    for csv in (first, second):
        assert run_ingest(csv, clean).returncode == 0
    clean_first = folder / "clean-first"
    assert run_ingest(first, clean_first).returncode == 0
    return first, second, state(clean_first), state(clean)


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_kill_during_first_ingest_then_rerun_converges(files, tmp_path, crash_at):
    first, _second, clean_first, _clean = files
    root = tmp_path / "store"
    killed = run_ingest(first, root, crash_at)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    if Store(root).version() is not None:
        assert_consistent(root)
    rerun = run_ingest(first, root)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    for got, want in zip(state(root), clean_first, strict=True):
        assert got.equals(want)
    assert_nothing_lingers(root)


@pytest.mark.parametrize("crash_at", CRASH_POINTS)
def test_kill_during_partition_update_then_rerun_converges(files, tmp_path, crash_at):
    first, second, _clean_first, clean = files
    root = tmp_path / "store"
    assert run_ingest(first, root).returncode == 0
    killed = run_ingest(second, root, crash_at)
    assert killed.returncode == -signal.SIGKILL
    assert_consistent(root)  # old values or new ones, never stale catalogue rows
    assert run_ingest(second, root).returncode == 0
    for got, want in zip(state(root), clean, strict=True):
        assert got.equals(want)
    assert_nothing_lingers(root)


def test_kill_while_data_files_are_being_written(files, tmp_path):
    """A kill at the moment the first data file of the commit appears (mid write)."""
    first, second, _clean_first, clean = files
    root = tmp_path / "store"
    assert run_ingest(first, root).returncode == 0
    before = {p for p in (root / "series").rglob("*.parquet")}
    process = run_ingest(second, root, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while process.poll() is None and time.monotonic() < deadline:
        if set((root / "series").rglob("*.parquet")) - before:
            process.send_signal(signal.SIGKILL)
            break
        time.sleep(0.002)
    process.wait(timeout=60)
    assert_consistent(root)
    assert run_ingest(second, root).returncode == 0
    for got, want in zip(state(root), clean, strict=True):
        assert got.equals(want)
    assert_nothing_lingers(root)
