"""The store on Delta Lake: series data, a catalogue, a quarantine and result tables.

Layout under ``root`` (default :func:`recurra.data.paths.store_root`; a local folder or an
object-store URI such as ``s3://bucket/prefix``), every table a Delta Lake table::

    series/          contract rows, partitioned by ``bucket`` (hash of series_id, 16)
    catalogue/       one row per (series_id, channel), committed with the series version
                     it describes (see recurra.data.store_catalogue)
    tables/<name>/   result tables (forecasts, scores, events, quarantine, runs...)

Writes are Delta transactions: an upsert reads only the stored rows it may touch (its
buckets, its series, its time range: partition and file-statistics pruning) and commits
only the rows that are new or changed, as a merge, so history is never rewritten and a
re-ingest of unchanged data commits nothing.  Commits are atomic; a commit that loses a
race with another writer is retried.  There are no lock files.  Every write reports the
table version it produced; ``read(..., version=N)`` reads the series as of version N.

Size: ~570 lines, because ``Store`` is the store's whole public API in one class (series
upserts and reads, catalogue, result tables, quarantine).  What is not API lives beside it:
the Delta plumbing in ``store_delta``, the catalogue rows in ``store_catalogue``, frame checks
in ``store_frames``, the result-table merge and quarantine schema in ``store_tables``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl
from deltalake import CommitProperties, DeltaTable, Transaction, write_deltalake

from recurra.data import store_catalogue as cat
from recurra.data.regular import key_order
from recurra.data.schema import (
    CHANNEL,
    COLUMNS,
    KEY,
    OBSERVED,
    SERIES_ID,
    TIMESTAMP,
    VALUE,
    empty_frame,
)
from recurra.data.store_catalogue import (  # noqa: F401 - _frequency: tests import it here
    BUCKET,
    CATALOGUE_SCHEMA,
    SOURCE,
    _frequency,
    bucket_of,
    of_series,
)
from recurra.data.store_delta import (
    WRITER,
    Location,
    StoreConflict,
    StoreError,
    changed_buckets,
    compact_buckets,
    crash_point,
    delta_compatible,
    is_uri,
    join,
    latest_source,
    sql_literal,
)
from recurra.data.store_delta import storage_options as options_from_env
from recurra.data.store_frames import _as_polars, _to_utc, checked_frame
from recurra.data.store_tables import (
    EXCLUSIVE,
    QUARANTINE_KEY,
    QUARANTINE_SCHEMA,
    QUARANTINE_TABLE,
    quarantine_rows,
    write_into,
)

__all__ = ["CATALOGUE_SCHEMA", "QUARANTINE_SCHEMA", "QUARANTINE_TABLE", "SOURCE", "Store",
           "StoreConflict", "StoreError", "UpsertReport", "bucket_of", "checked_frame",
           "partition_name"]

KNOWN_TABLES = ("forecasts", "scores", "events", "runs", "live_metrics", "watermarks",
                "trainings", "backtests", "static", QUARANTINE_TABLE)
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_STORED = [*KEY, VALUE, OBSERVED]
_NO_UPDATES = pl.DataFrame(schema={SERIES_ID: pl.Utf8, CHANNEL: pl.Utf8, OBSERVED: pl.Boolean,
                                   "observed_stored": pl.Boolean})


@dataclass(frozen=True)
class UpsertReport:
    """What an upsert changed, counted in rows (one row = one (series, channel, time) key),
    and the series table version after it (None: the store has no series yet)."""

    n_new: int = 0
    n_updated: int = 0
    n_unchanged: int = 0
    version: int | None = field(default=None, compare=False)

    def __add__(self, other: UpsertReport) -> UpsertReport:
        versions = [v for v in (self.version, other.version) if v is not None]
        return UpsertReport(self.n_new + other.n_new, self.n_updated + other.n_updated,
                            self.n_unchanged + other.n_unchanged,
                            max(versions) if versions else None)

    @property
    def n_rows(self) -> int:
        return self.n_new + self.n_updated + self.n_unchanged


def partition_name(series_id: str) -> str:
    """The partition (Delta folder ``bucket=N``) holding a series; safe for any id."""
    return f"{BUCKET}={bucket_of(series_id)}"


class Store:
    """Delta Lake store of contract frames and result tables.

    Parameters
    ----------
    root : folder or URI (``s3://bucket/prefix``) of the store; ``None`` uses
        :func:`recurra.data.paths.store_root` (``RECURRA_STORE``).
    storage_options : object-store options (default: from the ``AWS_*`` environment).

    Examples
    --------
    >>> store = Store(tmp_path)                                  # doctest: +SKIP
    >>> store.upsert(frame, source="nab/speed_6005.csv")         # doctest: +SKIP
    UpsertReport(n_new=2500, n_updated=0, n_unchanged=0)
    >>> store.read(series_ids=["nab/realTraffic/speed_6005"], version=3)  # doctest: +SKIP
    """

    def __init__(self, root: str | Path | None = None,
                 storage_options: dict[str, str] | None = None) -> None:
        if root is None:
            from recurra.data.paths import store_root

            root = store_root()
        if is_uri(root):
            self.root: Path | str = str(root).rstrip("/")
        else:
            text = str(root)
            path = Path(text[7:] if text.startswith("file://") else text).expanduser()
            path.mkdir(parents=True, exist_ok=True)
            self.root = path.resolve()
        uri = str(self.root)
        self.storage_options = dict(options_from_env(uri) if storage_options is None
                                    else storage_options)
        self._series = Location(join(uri, "series"), self.storage_options)
        self._catalogue = Location(join(uri, "catalogue"), self.storage_options)
        self._catalogue_cache: tuple[tuple, pl.DataFrame] | None = None
        self.versions: dict[str, int] = {}  # table -> version of this Store's last write

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    @property
    def uri(self) -> str:
        return str(self.root)

    def _table(self, name: str) -> Location:
        if not isinstance(name, str) or not _TABLE_NAME.match(name):
            raise StoreError(
                f"table name ({name!r}) must start with a letter and contain only letters, "
                "digits and underscores (at most 64 characters)"
            )
        return Location(join(self.uri, "tables", name), self.storage_options)

    def version(self, table: str = "series") -> int | None:
        """Current Delta version of ``table`` ("series", "catalogue" or a result table);
        None when it was never written."""
        location = {"series": self._series, "catalogue": self._catalogue}.get(table)
        opened = (location or self._table(table)).open()
        return None if opened is None else opened.version()

    # -- series data ---------------------------------------------------------------------
    def upsert(self, frame, *, source: str) -> UpsertReport:
        """Insert new rows and overwrite changed ones, keyed by (series_id, channel, timestamp).

        Re-upserting the same rows changes nothing (and commits nothing); a row whose value
        (or missingness) differs from the stored one is updated; stored rows absent from
        ``frame`` are kept.  One Delta commit for the rows, then one for the catalogue.

        Parameters
        ----------
        frame : contract frame (validated here; extra columns are dropped).
        source : where the rows came from (file path or name), shown in the catalogue.

        Returns
        -------
        UpsertReport with n_new, n_updated, n_unchanged row counts and the series version.
        """
        frame = checked_frame(frame, "upsert")
        if frame.is_empty():
            return UpsertReport(version=self.version())
        if max(frame.n_chunks("all")) > 1:
            frame = frame.rechunk()
        frame = cat.with_buckets(frame)
        report, new, updated, base = self._series.retrying(
            lambda: self._upsert_once(frame, source))
        crash_point("after_series_commit")
        if report.n_new or report.n_updated:
            self._catalogue_after(report.version, base, frame, new, updated, source)
            self._compact_if_crowded(report.version, frame[BUCKET].unique().to_list())
        else:
            self._sync_catalogue()  # repairs a catalogue a crashed writer left behind
        self.versions["series"] = report.version
        return report

    def _compact_if_crowded(self, version: int, buckets: list[int]) -> None:
        """Compact the buckets this upsert wrote once they hold many small files; the
        catalogue (same rows) is re-stamped with the compaction's version."""
        table = self._series.open()
        if table is None or table.version() != version:
            return  # another writer committed since: its own upsert does this
        if not compact_buckets(table, buckets):
            return
        crash_point("after_auto_compaction")
        compacted = table.version()

        def restamp() -> None:
            rows, stamp, seen = self._catalogue_state()
            if stamp == version:  # else the next read repairs it from the data
                self._commit_catalogue(rows, compacted, expected=seen)

        self._catalogue.retrying(restamp)

    def _upsert_once(self, frame: pl.DataFrame, source: str):
        table = self._series.open()
        # no silent rebase onto another writer's commit: a conflict re-runs the whole upsert
        properties = CommitProperties(custom_metadata={"recurra.source": source},
                                      max_commit_retries=0)
        crash_point("before_series_commit")
        if table is None:  # version 0: creating it fails if another writer got there first
            write_deltalake(self._series.uri, frame.select(*_STORED, BUCKET).to_arrow(),
                            partition_by=[BUCKET], mode="error", writer_properties=WRITER,
                            commit_properties=properties,
                            storage_options=self.storage_options or None)
            new = frame.select(*KEY, OBSERVED)
            return UpsertReport(n_new=frame.height, version=0), new, _NO_UPDATES, -1
        base = table.version()
        stored = self._stored_rows(table, frame)
        if stored.is_empty():
            changes, new = frame, frame.select(*KEY, OBSERVED)
            updated = _NO_UPDATES
            n_unchanged = 0
        else:
            joined = frame.join(stored, on=list(KEY), how="left", suffix="_stored")
            exists = pl.col("_exists").fill_null(False)
            same = pl.col(VALUE).eq_missing(pl.col(f"{VALUE}_stored"))
            joined = joined.with_columns(exists.alias("_exists"), same.alias("_same"))
            is_new, is_changed = ~pl.col("_exists"), pl.col("_exists") & ~pl.col("_same")
            changes = joined.filter(is_new | is_changed).select(*_STORED, BUCKET)
            new = joined.filter(is_new).select(*KEY, OBSERVED)
            updated = joined.filter(is_changed).select(SERIES_ID, CHANNEL, OBSERVED,
                                                       "observed_stored")
            n_unchanged = frame.height - changes.height
        if changes.is_empty():
            return UpsertReport(n_unchanged=n_unchanged, version=base), new, updated, base
        if stored.is_empty():  # only new keys: a blind append (no scan of stored files);
            # max_commit_retries=0 still refuses it if another writer committed since ``base``
            write_deltalake(table, changes.select(*_STORED, BUCKET).to_arrow(), mode="append",
                            partition_by=[BUCKET], writer_properties=WRITER,
                            commit_properties=properties)
        else:
            self._merge_series(table, changes, properties)
        version = table.version()
        return (UpsertReport(new.height, updated.height, n_unchanged, version), new, updated,
                base)

    def _stored_rows(self, table: DeltaTable, frame: pl.DataFrame) -> pl.DataFrame:
        """The stored rows with the keys of ``frame`` (pruned by bucket, id and time)."""
        low, high = frame[TIMESTAMP].min(), frame[TIMESTAMP].max()
        lazy = of_series(pl.scan_delta(table).filter(pl.col(TIMESTAMP).is_between(low, high)),
                         frame[SERIES_ID].unique().to_list())
        return (lazy.select(*KEY, VALUE, OBSERVED).rename({OBSERVED: "observed_stored"})
                .with_columns(pl.lit(True).alias("_exists")).collect())

    def _merge_series(self, table: DeltaTable, changes: pl.DataFrame,
                      properties: CommitProperties) -> None:
        low, high = changes[TIMESTAMP].min(), changes[TIMESTAMP].max()
        buckets = ", ".join(str(b) for b in sorted(changes[BUCKET].unique().to_list()))
        predicate = (f"t.{BUCKET} = s.{BUCKET} AND t.series_id = s.series_id AND "
                     f"t.channel = s.channel AND t.timestamp = s.timestamp AND "
                     f"t.{BUCKET} IN ({buckets}) AND t.timestamp >= {sql_literal(low)} AND "
                     f"t.timestamp <= {sql_literal(high)}")
        (table.merge(changes.to_arrow(), predicate, source_alias="s", target_alias="t",
                     writer_properties=WRITER, commit_properties=properties)
         .when_matched_update_all().when_not_matched_insert_all().execute())

    def series_ids(self) -> list[str]:
        """Every series_id in the store, sorted."""
        return sorted(self.catalogue()[SERIES_ID].unique().to_list())

    def _series_scan(self, ids: list[str] | None, version: int | None = None
                     ) -> pl.LazyFrame | None:
        table = self._series.open(version)
        if table is None:
            if version is not None:
                raise StoreError(f"{self._series.uri}: no version {version} (no series yet)")
            return None
        lazy = pl.scan_delta(table)
        if ids is not None:
            lazy = of_series(lazy, ids)
        return lazy.drop(BUCKET)

    def read(self, series_ids: Sequence[str] | str | None = None,
             channels: Sequence[str] | str | None = None, start=None, end=None,
             version: int | None = None) -> pl.DataFrame:
        """Read a validated contract frame; every filter is optional.

        Parameters
        ----------
        series_ids, channels : one id/name or a list; ``None`` means all. Unknown ids give
            no rows (not an error).
        start, end : datetime, date or ISO text; naive is taken as UTC; both inclusive.
        version : series table version to read (time travel; see ``UpsertReport.version``).
        """
        ids = [series_ids] if isinstance(series_ids, str) else series_ids
        chans = [channels] if isinstance(channels, str) else channels
        low, high = _to_utc(start, "start"), _to_utc(end, "end")
        lazy = self._series_scan(None if ids is None else [str(s) for s in ids], version)
        if lazy is None:
            return empty_frame()
        if chans is not None:
            lazy = lazy.filter(pl.col(CHANNEL).is_in(list(chans)))
        if low is not None:
            lazy = lazy.filter(pl.col(TIMESTAMP) >= low)
        if high is not None:
            lazy = lazy.filter(pl.col(TIMESTAMP) <= high)
        try:
            frame = lazy.select(COLUMNS).collect()
        except OSError as error:
            raise self._series.error(error) from None
        if frame.height and key_order(frame, KEY) != (True, False):
            frame = frame.sort(list(KEY))
        return checked_frame(frame, "store")

    def scan(self, series_ids: Sequence[str] | str | None = None) -> pl.LazyFrame | None:
        """A lazy scan of the series table (all, or of ``series_ids``: bucket partitions
        pruned); None when the store has no series.  Unvalidated and unsorted: for readers
        that push filters and column choices into the scan (the dashboard); :meth:`read`
        is the validated path."""
        ids = [series_ids] if isinstance(series_ids, str) else series_ids
        return self._series_scan(None if ids is None else [str(s) for s in ids])

    # -- change stamps (equal while the data is unchanged; None when absent) --------------
    def series_stamp(self, series_id: str) -> tuple[int, int] | None:
        """Changes whenever the series' rows change: (series version of its last change,
        its row count), from the catalogue."""
        rows = self._internal_catalogue().filter(pl.col(SERIES_ID) == series_id)
        if rows.is_empty():
            return None
        return int(rows["changed_version"].max()), int(rows["n_rows"].sum())

    def table_stamp(self, name: str) -> int | None:
        """The version of result table ``name`` (changes with every commit to it)."""
        return self.version(name)

    def catalogue_stamp(self) -> tuple[int, int] | None:
        """Changes whenever an upsert changed any series: (series, catalogue) versions."""
        series = self.version("series")
        return None if series is None else (series, self.version("catalogue") or 0)

    # -- catalogue -----------------------------------------------------------------------
    def catalogue(self) -> pl.DataFrame:
        """One row per (series_id, channel): series_id, channel, source (the last upsert
        that changed the series), frequency of the series (inferred on the timestamps of all
        its channels: "1h", "1d", "business-day", "irregular", "unknown" under 3 points),
        first, last, n_rows, share_observed, partition (its Delta partition, ``bucket=N``).
        Always describes the current series version.  Empty (with those columns) for a new
        store."""
        return self._internal_catalogue().select(list(CATALOGUE_SCHEMA))

    def _internal_catalogue(self) -> pl.DataFrame:
        frame, _stamp, version = self._catalogue_state()
        series = self._series.open()
        if series is None:
            return cat.as_frame([])
        if _stamp != series.version():
            return self._sync_catalogue()
        return frame

    def _catalogue_state(self) -> tuple[pl.DataFrame, int | None, int | None]:
        """(rows, series version they describe, catalogue version), read through a cache."""
        table = self._catalogue.open()
        if table is None:
            return cat.as_frame([]), None, None
        key = (table.version(),)
        if self._catalogue_cache is not None and self._catalogue_cache[0][0] == key[0]:
            frame, stamp = self._catalogue_cache[1], self._catalogue_cache[0][1]
            return frame, stamp, key[0]
        frame = pl.read_delta(table).cast(cat.INTERNAL_SCHEMA).select(list(cat.INTERNAL_SCHEMA))
        stamp = table.transaction_version(cat.APP_ID)
        self._catalogue_cache = ((key[0], stamp), frame)
        return frame, stamp, key[0]

    def _catalogue_after(self, version: int, base: int, frame: pl.DataFrame,
                         new: pl.DataFrame, updated: pl.DataFrame, source: str) -> None:
        """Commit the catalogue rows of an upsert that produced series ``version``."""

        def attempt() -> None:
            old, stamp, _ = self._catalogue_state()
            if stamp is not None and stamp >= version:
                return  # someone already described this version (or a later one)
            if stamp != version - 1 and not (stamp is None and base == -1):
                self._repair(old, stamp, version)
                return
            rows, slow = cat.incremental(old, new, updated, source, version)
            # the catalogue is exact at version - 1: a series it does not list had no rows
            # then, so all its rows are in ``frame``; the others are read back
            listed = set(old[SERIES_ID].to_list())
            fresh = [s for s in slow if s not in listed]
            parts = [rows]
            if fresh:
                data = frame if len(fresh) == frame[SERIES_ID].n_unique() else \
                    frame.filter(pl.col(SERIES_ID).is_in(fresh))
                parts.append(cat.as_frame(cat.describe(data, source, version)))
            if len(fresh) < len(slow):
                data = self._series_data(version, [s for s in slow if s in listed])
                parts.append(cat.as_frame(cat.describe(data, source, version)))
            self._commit_catalogue(cat.merge_rows(old, pl.concat(parts)), version)

        self._catalogue.retrying(attempt)
        crash_point("after_catalogue_commit")

    def _series_data(self, version: int, ids: list[str] | None = None,
                     buckets: list[int] | None = None) -> pl.DataFrame:
        lazy = pl.scan_delta(self._series.open(version))
        if buckets is not None:
            lazy = lazy.filter(pl.col(BUCKET).is_in(buckets))
        if ids is not None:
            lazy = of_series(lazy, ids)
        return lazy.select(*KEY, OBSERVED).sort(list(KEY)).collect()

    def _sync_catalogue(self) -> pl.DataFrame:
        """The catalogue of the current series version, repaired (and committed) if it
        describes an older one."""
        def attempt() -> pl.DataFrame:
            old, stamp, _ = self._catalogue_state()
            series = self._series.open()
            if series is None or stamp == series.version():
                return old
            return self._repair(old, stamp, series.version())

        return self._catalogue.retrying(attempt)

    def _repair(self, old: pl.DataFrame, stamp: int | None, version: int) -> pl.DataFrame:
        """Re-describe the series whose files changed between ``stamp`` and ``version``."""
        buckets = changed_buckets(self._series, stamp, version)
        data = self._series_data(version, buckets=buckets)
        source = latest_source(self._series, stamp, version)
        rows = cat.recomputed(old, data, buckets, source, version,
                              self._changed_series(stamp, version, buckets))
        self._commit_catalogue(rows, version)
        return rows

    def _changed_series(self, stamp: int | None, version: int,
                        buckets: list[int] | None) -> list[str] | None:
        """Series of ``buckets`` whose rows differ between versions ``stamp`` and
        ``version`` (None when ``stamp`` is unknown)."""
        if stamp is None or buckets is None or not buckets:
            return None
        try:
            before, after = self._series.open(stamp), self._series.open(version)
        except StoreError:
            return None
        columns = [*KEY, VALUE, OBSERVED]
        scans = [pl.scan_delta(t).filter(pl.col(BUCKET).is_in(buckets)).select(columns)
                 for t in (before, after)]
        diff = pl.concat([scans[0].join(scans[1], on=columns, how="anti", nulls_equal=True),
                          scans[1].join(scans[0], on=columns, how="anti", nulls_equal=True)])
        return diff.select(pl.col(SERIES_ID).unique()).collect()[SERIES_ID].to_list()

    def _commit_catalogue(self, rows: pl.DataFrame, version: int,
                          expected: int | None = None) -> None:
        """Overwrite the catalogue with ``rows``, stamped as describing series ``version``;
        with ``expected``, only if the catalogue is still at that version (else a
        retryable StoreConflict)."""
        properties = CommitProperties(app_transactions=[Transaction(cat.APP_ID, version)],
                                      max_commit_retries=0)
        table = self._catalogue.open()
        if expected is not None and (table is None or table.version() != expected):
            raise StoreConflict(f"store table {self._catalogue.uri}: changed by another "
                                "writer; re-reading it")
        write_deltalake(self._catalogue.uri if table is None else table, rows.to_arrow(),
                        mode="overwrite",
                        schema_mode="overwrite", commit_properties=properties,
                        storage_options=self.storage_options or None)

    # -- result tables -------------------------------------------------------------------
    def write_table(self, name: str, frame, key: Sequence[str] = ()) -> int:
        """Upsert ``frame`` into table ``name`` by ``key`` (append when ``key`` is empty).

        Rows of the stored table whose key appears in ``frame`` are replaced (the last of
        duplicated keys in ``frame`` wins); columns new to either side are filled with
        nulls; rows identical to the stored ones are not rewritten (no commit when nothing
        changed).  Returns the number of rows in ``frame``; ``self.versions[name]`` is
        the table version after the write.
        """
        return self._write(name, frame, key, replace=True)

    def _write(self, name: str, frame, key: Sequence[str], replace: bool) -> int:
        location = self._table(name)
        frame = delta_compatible(_as_polars(frame, name))
        key = list(key)
        missing = [k for k in key if k not in frame.columns]
        if missing:
            raise StoreError(f"write_table({name!r}): key column(s) {missing} are not in the "
                             f"frame (columns: {frame.columns})")
        if not frame.width:
            return 0
        if key:
            frame = frame.unique(subset=key, keep="last", maintain_order=True)

        def attempt() -> int | None:
            table = location.open()
            if table is None:
                write_deltalake(location.uri, frame.to_arrow(), mode="error",
                                commit_properties=EXCLUSIVE,
                                storage_options=self.storage_options or None)
                return 0
            return write_into(table, frame, key, replace, name)

        version = location.retrying(attempt)
        if version is not None:
            self.versions[name] = version
        return frame.height

    def read_table(self, name: str, version: int | None = None) -> pl.DataFrame:
        """The table ``name`` (at ``version``); an empty frame when it was never written."""
        scan = self.scan_table(name, version)
        if scan is None:
            return pl.DataFrame(schema=QUARANTINE_SCHEMA) if name == QUARANTINE_TABLE \
                else pl.DataFrame()
        return scan.collect()

    def scan_table(self, name: str, version: int | None = None) -> pl.LazyFrame | None:
        """A lazy scan of the table ``name`` (filters and column choices are pushed into the
        Delta scan: file statistics prune files); None when it was never written."""
        table = self._table(name).open(version)
        return None if table is None else pl.scan_delta(table)

    def tables(self) -> list[str]:
        """Names of the result tables written so far."""
        if not is_uri(self.uri):
            folder = Path(self.uri) / "tables"
            return sorted(p.parent.name for p in folder.glob("*/_delta_log"))
        return sorted(n for n in {*KNOWN_TABLES, *self.versions} - {"series"}
                      if self._table(n).exists())

    # -- quarantine ----------------------------------------------------------------------
    def add_quarantine(self, rejected: pl.DataFrame) -> int:
        """Record rejected rows (source_file, line, reason, raw [, ingested_at]).

        Keyed by (source_file, line, reason): re-ingesting a file neither duplicates them
        nor commits anything (the first ``ingested_at`` is kept).
        """
        rejected = quarantine_rows(rejected)
        if not rejected.height:
            return 0
        return self._write(QUARANTINE_TABLE, rejected, QUARANTINE_KEY, replace=False) \
            and rejected.height

    def quarantine(self) -> pl.DataFrame:
        """Every rejected row: source_file, line (1-based), reason, raw, ingested_at."""
        return self.read_table(QUARANTINE_TABLE).sort(["source_file", "line", "reason"])
