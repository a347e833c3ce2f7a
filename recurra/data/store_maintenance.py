"""Maintenance of the Delta store: compact small files, vacuum old ones, migrate old stores.

Every upsert and result-table write adds small Parquet files; reads stay correct but slow
down as files pile up.  :func:`compact` rewrites each partition's small files into few large
ones (a Delta ``OPTIMIZE``: a new table version with the same rows).  The files a compaction
or a merge replaced stay on disk for time travel until :func:`vacuum` deletes those older
than ``retain_hours``; after a vacuum, versions older than that can no longer be read.
:func:`migrate` copies a store in the old Parquet layout (``recurra.data._legacy_store``) into a
Delta store.

Example
-------
>>> store = Store("~/.recurra/store")                                    # doctest: +SKIP
>>> [r.table for r in compact(store) if r.n_files_removed]               # doctest: +SKIP
['series', 'forecasts']
>>> vacuum(store, retain_hours=168)                                      # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import polars as pl
from deltalake import DeltaTable

from recurra.data.store import QUARANTINE_TABLE, SOURCE, Store, StoreError
from recurra.data.store_delta import Location, is_uri

DEFAULT_RETAIN_HOURS = 168  # Delta Lake's own default: one week of time travel
MIGRATE_BATCH_SERIES = 200  # series read from the old store per upsert
_SAME_ROWS = ("OPTIMIZE", "VACUUM START", "VACUUM END")  # commits that keep every row


@dataclass(frozen=True)
class MaintenanceReport:
    """What one maintenance step did to one table."""

    table: str
    n_files_removed: int = 0
    n_files_added: int = 0
    version: int | None = None  # table version after the step (None: unchanged / absent)


def _locations(store: Store, include_catalogue: bool) -> list[tuple[str, Location]]:
    found = [("series", store._series)]
    if include_catalogue:
        found.append(("catalogue", store._catalogue))
    return found + [(name, store._table(name)) for name in store.tables()]


def compact(store: Store, target_size: int | None = None) -> list[MaintenanceReport]:
    """Rewrite the small files of every table (series and result tables) into large ones.

    Idempotent: a table with nothing to compact gets no new version.  The rows do not
    change, so the catalogue is re-stamped with the new series version rather than
    recomputed.  ``target_size``: approximate file size in bytes (default Delta's 100 MB).
    """
    if target_size is not None and target_size <= 0:
        raise StoreError(f"`target_size` ({target_size}) must be a positive number of bytes")
    store.catalogue()  # the catalogue describes the current series version before we start
    reports = []
    for name, location in _locations(store, include_catalogue=False):
        table = location.open()
        if table is None:
            continue
        before = table.version()
        try:
            metrics = table.optimize.compact(target_size=target_size)
        except Exception as error:  # deltalake raises several types; all name the table
            raise location.error(error) from None
        after = table.version()
        reports.append(MaintenanceReport(name, int(metrics.get("numFilesRemoved", 0)),
                                         int(metrics.get("numFilesAdded", 0)),
                                         after if after != before else None))
        if name == "series" and after != before:
            _restamp_catalogue(store, before, after)
    return reports


def _restamp_catalogue(store: Store, before: int, after: int) -> None:
    """Mark the catalogue of series version ``before`` as describing ``after`` (compaction
    and vacuum commits keep the rows).  Skipped when the catalogue is not exactly at ``before``; the
    next read then repairs it from the data, as after any interleaved write."""
    rows, stamp, _ = store._catalogue_state()
    table = store._series.open()
    entries = [e for e in table.history(table.version() - before)
               if before < e.get("version", -1) <= after] if table is not None else []
    rows_kept = len(entries) == after - before and all(
        str(e.get("operation", "")).upper() in _SAME_ROWS for e in entries)
    if stamp == before and rows_kept:
        store._catalogue.retrying(lambda: store._commit_catalogue(rows, after))


def vacuum(store: Store, retain_hours: float = DEFAULT_RETAIN_HOURS,
           dry_run: bool = False) -> list[tuple[str, list[str]]]:
    """Delete files no table version newer than ``retain_hours`` ago refers to.

    That includes the data files of a commit that never landed (a writer killed before
    its commit): every file under the table that its log does not reference and that is
    older than the retention (a full vacuum).

    Returns ``(table, files)`` per table (the files deleted, or that would be with
    ``dry_run``).  Time travel (``Store.read(version=N)``) to versions older than the
    retention stops working for those versions.  A retention shorter than the longest
    running write or read can break that operation: keep it at hours, not minutes, on a
    busy store.
    """
    if not isinstance(retain_hours, int | float) or retain_hours < 0:
        raise StoreError(f"`retain_hours` ({retain_hours!r}) must be a number >= 0")
    done = []
    store.catalogue()  # in step with the series version, so it can be re-stamped below
    for name, location in _locations(store, include_catalogue=True):
        table = location.open()
        if table is None:
            continue
        before = table.version()
        try:
            files = _present(location, table.vacuum(retention_hours=int(retain_hours),
                                                    dry_run=True, full=True,
                                                    enforce_retention_duration=False))
            if files and not dry_run:  # a vacuum commits (twice): only when it deletes
                table.vacuum(retention_hours=int(retain_hours), dry_run=False, full=True,
                             enforce_retention_duration=False)
        except Exception as error:
            raise location.error(error) from None
        if name == "series" and table.version() != before:
            _restamp_catalogue(store, before, table.version())
        done.append((name, sorted(files)))
    return done


def _present(location: Location, files: list[str]) -> list[str]:
    """The files of a vacuum list that still exist (delta-rs lists a removed file again
    until its tombstone expires; only local folders are checked)."""
    if is_uri(location.uri):
        return list(files)
    root = Path(location.uri)
    return [f for f in files if (Path(f) if Path(f).is_absolute() else root / f).exists()]


def is_legacy_store(root: str | Path) -> bool:
    """True for a folder in the old Parquet layout (``series/<partition>/data.parquet``,
    ``catalogue.parquet``, ``tables/<name>.parquet``)."""
    if is_uri(root):
        return False
    path = Path(root).expanduser()
    if (path / "series" / "_delta_log").is_dir():
        return False
    return (path / "catalogue.parquet").is_file() or any(path.glob("series/*/data.parquet")) \
        or any(path.glob("tables/*.parquet"))


@dataclass(frozen=True)
class MigrationReport:
    """What :func:`migrate` copied: rows of series, and rows per result table."""

    n_series: int
    n_rows: int
    tables: dict[str, int]
    skipped: tuple[str, ...] = ()  # result tables the new store already had (kept as is)


def migrate(old_root: str | Path, store: Store) -> MigrationReport:
    """Copy a store in the old Parquet layout at ``old_root`` into ``store`` (Delta).

    Series keep their catalogue source; result tables are copied as they are; the
    quarantine is merged by its key.  The old store is only read, never changed.  Re-running
    is safe: series upserts are idempotent, the quarantine is keyed, and a result table that
    already exists in ``store`` is skipped (listed in ``skipped``).
    """
    old = Path(old_root).expanduser()
    if not old.is_dir():
        raise StoreError(f"OLD_ROOT ({str(old_root)!r}) must be an existing store folder")
    if not is_uri(store.uri) and old.resolve() == Path(store.uri).resolve():
        raise StoreError(f"migrate into a new store: OLD_ROOT and the target are both "
                         f"{str(old.resolve())!r} (pass --store NEW_ROOT, then point "
                         "RECURRA_STORE at it)")
    if not is_legacy_store(old):
        raise StoreError(f"OLD_ROOT ({str(old_root)!r}) is not a store in the old Parquet "
                         "layout (no catalogue.parquet, series/*/data.parquet or "
                         "tables/*.parquet)")
    from recurra.data._legacy_store import Store as LegacyStore

    legacy = LegacyStore(old)
    catalogue = legacy.catalogue()
    n_rows = 0
    sources = catalogue.group_by(SOURCE, maintain_order=True).agg(pl.col("series_id").unique())
    for source, ids in sources.iter_rows():
        ids = sorted(ids)
        for start in range(0, len(ids), MIGRATE_BATCH_SERIES):
            frame = legacy.read(series_ids=ids[start:start + MIGRATE_BATCH_SERIES])
            n_rows += store.upsert(frame, source=source or str(old)).n_rows
    copied, skipped = {}, []
    existing = set(store.tables())
    for name in legacy.tables():
        frame = legacy.read_table(name)
        if name == QUARANTINE_TABLE:
            store.add_quarantine(frame)
        elif name in existing:
            skipped.append(name)
            continue
        elif frame.width:
            store.write_table(name, frame)
        copied[name] = frame.height
    return MigrationReport(catalogue["series_id"].n_unique(), n_rows, copied, tuple(skipped))


def table_files(location: Location) -> int:
    """Number of data files of the current version of a table (0 when absent)."""
    table: DeltaTable | None = location.open()
    return 0 if table is None else len(table.file_uris())
