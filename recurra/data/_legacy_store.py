"""The Parquet store: series data, a catalogue, a quarantine and result tables.

Layout under ``root`` (default :func:`recurra.data.paths.store_root`)::

    series/<partition>/data.parquet   one partition per series_id (all its channels)
    catalogue.parquet                 one row per (series_id, channel)
    tables/<name>.parquet             result tables (forecasts, scores, events, quarantine...)
    locks/                            lock files (one per partition / table)

One partition per series keeps the dashboard's reads fast (a series is one file). The
partition folder name is *derived*, never the raw id: a readable slug of the id (letters,
digits, ``-``, ``_`` only, at most 40 characters) plus 16 hex digits of its SHA-256, so ids
like ``../../etc``, ``a/b``, absolute paths, NUL bytes or 10,000-character ids can never
make the store write outside its root; the real id is kept in the data and the catalogue.

Every write goes to a temporary file in the same folder and is moved into place with
``os.replace`` (atomic on POSIX), under a lock file per partition or table.

Size: ~500 lines, kept as they were on purpose: this is the pre-Delta Parquet store, read
only by :func:`recurra.data.store_maintenance.migrate`, frozen so that migration reads old
stores exactly as they were written.  New code uses :mod:`recurra.data.store`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import os
import re
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from recurra.data.regular import MIN_POINTS, format_every, infer_frequency, key_order
from recurra.data.schema import (
    CHANNEL,
    COLUMNS,
    KEY,
    OBSERVED,
    SCHEMA,
    SERIES_ID,
    TIMESTAMP,
    TIMESTAMP_DTYPE,
    VALUE,
    RecurraError,
    SchemaError,
    empty_frame,
    validate_frame,
)

SOURCE = "source"
QUARANTINE_TABLE = "quarantine"
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.Utf8, "line": pl.Int64, "reason": pl.Utf8, "raw": pl.Utf8,
    "ingested_at": TIMESTAMP_DTYPE,
}
QUARANTINE_KEY = ["source_file", "line", "reason"]
CATALOGUE_SCHEMA: dict[str, pl.DataType] = {
    SERIES_ID: pl.Utf8, CHANNEL: pl.Utf8, SOURCE: pl.Utf8, "frequency": pl.Utf8,
    "first": TIMESTAMP_DTYPE, "last": TIMESTAMP_DTYPE, "n_rows": pl.Int64,
    "share_observed": pl.Float64, "partition": pl.Utf8,
}
_TABLE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,63}$")
_SLUG = re.compile(r"[^A-Za-z0-9_-]+")
LOCK_TIMEOUT_S = 60.0
STALE_LOCK_S = 300.0
WRITE_THREADS = min(4, os.cpu_count() or 1)  # partitions read/written in parallel


class StoreError(RecurraError):
    """The store cannot do what was asked (bad table name, lock timeout, ...)."""


@dataclass(frozen=True)
class UpsertReport:
    """What an upsert changed, counted in rows (one row = one (series, channel, time) key)."""

    n_new: int = 0
    n_updated: int = 0
    n_unchanged: int = 0

    def __add__(self, other: UpsertReport) -> UpsertReport:
        return UpsertReport(self.n_new + other.n_new, self.n_updated + other.n_updated,
                            self.n_unchanged + other.n_unchanged)

    @property
    def n_rows(self) -> int:
        return self.n_new + self.n_updated + self.n_unchanged


def partition_name(series_id: str) -> str:
    """The folder name of a series: ``slug-<16 hex of sha256>``; safe for any id.

    >>> partition_name("../../etc")
    'etc-74ccf3c5b4c19a81'
    """
    digest = hashlib.sha256(series_id.encode("utf-8", "surrogatepass")).hexdigest()[:16]
    slug = _SLUG.sub("_", series_id).strip("_-")[:40] or "series"
    return f"{slug}-{digest}"


def _to_utc(value, name: str) -> dt.datetime | None:
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value)
        except ValueError as error:
            raise SchemaError(f"`{name}` ({value!r}) must be an ISO date or datetime") from error
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):
        raise SchemaError(f"`{name}` ({value!r}) must be a datetime, date or ISO text")
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


class Store:
    """Partitioned Parquet store of contract frames and result tables.

    Parameters
    ----------
    root : folder of the store; ``None`` uses :func:`recurra.data.paths.store_root`.

    Examples
    --------
    >>> store = Store(tmp_path)                                  # doctest: +SKIP
    >>> store.upsert(frame, source="nab/speed_6005.csv")         # doctest: +SKIP
    UpsertReport(n_new=2500, n_updated=0, n_unchanged=0)
    >>> store.read(series_ids=["nab/realTraffic/speed_6005"])    # doctest: +SKIP
    """

    def __init__(self, root: str | Path | None = None) -> None:
        if root is None:
            from recurra.data.paths import store_root

            root = store_root()
        self.root = Path(root).expanduser().resolve()
        for folder in ("series", "tables", "locks"):
            (self.root / folder).mkdir(parents=True, exist_ok=True)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # -- paths and locks -----------------------------------------------------------------
    def _partition_file(self, series_id: str) -> Path:
        name = partition_name(series_id)  # [A-Za-z0-9_-]+ only: cannot leave series/
        assert name and name not in (".", "..") and "/" not in name, name
        return self.root / "series" / name / "data.parquet"

    def _table_file(self, name: str) -> Path:
        if not isinstance(name, str) or not _TABLE_NAME.match(name):
            raise StoreError(
                f"table name ({name!r}) must start with a letter and contain only letters, "
                "digits and underscores (at most 64 characters)"
            )
        return self.root / "tables" / f"{name}.parquet"

    @contextlib.contextmanager
    def _lock(self, name: str) -> Iterator[None]:
        path = self.root / "locks" / f"{name}.lock"
        deadline = time.monotonic() + LOCK_TIMEOUT_S
        while True:
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
                break
            except FileExistsError:
                with contextlib.suppress(FileNotFoundError):
                    if time.time() - path.stat().st_mtime > STALE_LOCK_S:
                        path.unlink()  # a writer died holding it
                        continue
                if time.monotonic() > deadline:
                    raise StoreError(f"lock {path} held for more than {LOCK_TIMEOUT_S:.0f}s; "
                                     "delete it if no other writer is running") from None
                time.sleep(0.02)
        try:
            os.write(fd, str(os.getpid()).encode())
            os.close(fd)
            yield
        finally:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    @staticmethod
    def _write_atomic(frame: pl.DataFrame, path: Path, new_folder: bool = False) -> None:
        """Write to a uniquely named temporary file next to ``path``, then rename it into
        place (atomic).  ``new_folder``: create the parent folder first (a new partition);
        a missing folder is created anyway."""
        if new_folder or not path.parent.is_dir():
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f".tmp-{uuid.uuid4().hex}.parquet"  # (no mkstemp: one open less)
        try:
            frame.write_parquet(tmp, compression="lz4", statistics=True)  # lz4: ~25 % faster
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
            raise

    # -- series data ---------------------------------------------------------------------
    def upsert(self, frame, *, source: str) -> UpsertReport:
        """Insert new rows and overwrite changed ones, keyed by (series_id, channel, timestamp).

        Re-upserting the same rows changes nothing (and writes nothing); a row whose value
        (or missingness) differs from the stored one is updated; stored rows absent from
        ``frame`` are kept.

        Parameters
        ----------
        frame : contract frame (validated here; extra columns are dropped).
        source : where the rows came from (file path or name), shown in the catalogue.

        Returns
        -------
        UpsertReport with n_new, n_updated, n_unchanged row counts.
        """
        frame = checked_frame(frame, "upsert")
        if frame.is_empty():
            return UpsertReport()
        if max(frame.n_chunks("all")) > 1:  # slices of one buffer write ~25 % faster
            frame = frame.rechunk()
        # sorted by key: each series is one run of rows, a zero-copy slice of ``frame``
        runs = frame.select(pl.col(SERIES_ID).rle()).unnest(SERIES_ID)
        starts = [0, *runs["len"].cum_sum().to_list()[:-1]]
        parts = [(str(s), frame.slice(o, n)) for s, o, n in
                 zip(runs["value"].to_list(), starts, runs["len"].to_list(), strict=True)]

        def work(item: tuple[str, pl.DataFrame]) -> tuple[UpsertReport, list[dict] | None]:
            part_report, merged = self._upsert_partition(*item)
            return part_report, None if merged is None else _describe(merged, source)

        workers = min(WRITE_THREADS, len(parts))
        if workers > 1:  # polars releases the GIL while reading / writing Parquet
            with ThreadPoolExecutor(max_workers=workers) as pool:
                results = list(pool.map(work, parts))
        else:
            results = [work(item) for item in parts]
        report = sum((r for r, _ in results), UpsertReport())
        rows = [row for _, described in results if described is not None for row in described]
        if rows:
            self._refresh_catalogue(pl.DataFrame(rows, schema=CATALOGUE_SCHEMA))
        return report

    def _upsert_partition(self, series_id: str,
                          part: pl.DataFrame) -> tuple[UpsertReport, pl.DataFrame | None]:
        """Merge ``part`` into the series' partition; the merged data when it changed."""
        path = self._partition_file(series_id)
        with self._lock(f"series-{path.parent.name}"):
            if not path.exists():
                self._write_atomic(part, path, new_folder=True)
                return UpsertReport(n_new=part.height), part
            stored = pl.read_parquet(path)
            if stored.height == part.height and stored.equals(part):  # a re-ingest
                return UpsertReport(n_unchanged=part.height), None
            marked = stored.select([*KEY, VALUE]).with_columns(pl.lit(True).alias("_exists"))
            joined = part.join(marked, on=list(KEY), how="left", suffix="_stored")
            exists = joined["_exists"].fill_null(False)
            same = joined[VALUE].eq_missing(joined[f"{VALUE}_stored"])
            n_new = int((~exists).sum())
            n_unchanged = int((exists & same).sum())
            n_updated = part.height - n_new - n_unchanged
            if not (n_new or n_updated):
                return UpsertReport(0, 0, n_unchanged), None
            kept = stored.join(part.select(list(KEY)), on=list(KEY), how="anti")
            merged = pl.concat([kept, part]).sort(list(KEY))
            self._write_atomic(merged, path)
            return UpsertReport(n_new, n_updated, n_unchanged), merged

    def series_ids(self) -> list[str]:
        """Every series_id in the store, sorted."""
        return sorted(self.catalogue()[SERIES_ID].unique().to_list())

    def read(self, series_ids: Sequence[str] | str | None = None,
             channels: Sequence[str] | str | None = None, start=None, end=None) -> pl.DataFrame:
        """Read a validated contract frame; every filter is optional.

        Parameters
        ----------
        series_ids, channels : one id/name or a list; ``None`` means all. Unknown ids give
            no rows (not an error).
        start, end : datetime, date or ISO text; naive is taken as UTC; both inclusive.
        """
        ids = [series_ids] if isinstance(series_ids, str) else series_ids
        chans = [channels] if isinstance(channels, str) else channels
        # partitions in series_id order: each is sorted, so the whole read is too
        wanted = self.series_ids() if ids is None else sorted(set(map(str, ids)))
        files = [f for f in (self._partition_file(s) for s in wanted) if f.exists()]
        if not files:
            return empty_frame()
        lazy = pl.scan_parquet(files)
        if ids is not None:
            lazy = lazy.filter(pl.col(SERIES_ID).is_in(list(ids)))
        if chans is not None:
            lazy = lazy.filter(pl.col(CHANNEL).is_in(list(chans)))
        if (low := _to_utc(start, "start")) is not None:
            lazy = lazy.filter(pl.col(TIMESTAMP) >= low)
        if (high := _to_utc(end, "end")) is not None:
            lazy = lazy.filter(pl.col(TIMESTAMP) <= high)
        return checked_frame(lazy.collect(), "store")

    def scan(self, series_ids: Sequence[str] | str | None = None) -> pl.LazyFrame | None:
        """A lazy scan of the series partitions (all, or of ``series_ids``); None when there
        are none.  Unvalidated: for readers that push filters and column choices into the
        Parquet scan (the dashboard); :meth:`read` is the validated path."""
        ids = [series_ids] if isinstance(series_ids, str) else series_ids
        wanted = self.series_ids() if ids is None else sorted(set(map(str, ids)))
        files = [f for f in (self._partition_file(s) for s in wanted) if f.exists()]
        return pl.scan_parquet(files) if files else None

    # -- change stamps: (inode, mtime ns, size) of a file, None when absent ------------------
    def series_stamp(self, series_id: str) -> tuple[int, int, int] | None:
        """Changes whenever the series' partition is rewritten (writes are atomic
        replacements, so a new file: new inode and mtime)."""
        return _stamp(self._partition_file(series_id))

    def table_stamp(self, name: str) -> tuple[int, int, int] | None:
        """Changes whenever the result table ``name`` is rewritten."""
        return _stamp(self._table_file(name))

    def catalogue_stamp(self) -> tuple[int, int, int] | None:
        """Changes whenever an upsert changed any series (the catalogue is rewritten)."""
        return _stamp(self.root / "catalogue.parquet")

    # -- catalogue -----------------------------------------------------------------------
    def _refresh_catalogue(self, fresh: pl.DataFrame) -> None:
        series_ids = fresh[SERIES_ID].unique().to_list()
        path = self.root / "catalogue.parquet"
        with self._lock("catalogue"):
            if path.exists():
                old = pl.read_parquet(path).filter(~pl.col(SERIES_ID).is_in(series_ids))
                fresh = pl.concat([old, fresh])
            self._write_atomic(fresh.sort([SERIES_ID, CHANNEL]), path)

    def catalogue(self) -> pl.DataFrame:
        """One row per (series_id, channel): series_id, channel, source (the last upsert
        that changed the series), frequency of the series (inferred on the timestamps of all
        its channels: "1h", "1d", "business-day", "irregular", "unknown" under 3 points),
        first, last, n_rows, share_observed, partition (the folder under ``series/``).
        Empty (with those columns) for a new store."""
        path = self.root / "catalogue.parquet"
        if not path.exists():
            return pl.DataFrame(schema=CATALOGUE_SCHEMA)
        return pl.read_parquet(path)

    # -- result tables -------------------------------------------------------------------
    def write_table(self, name: str, frame, key: Sequence[str] = ()) -> int:
        """Upsert ``frame`` into table ``name`` by ``key`` (append when ``key`` is empty).

        Rows of the stored table whose key appears in ``frame`` are replaced; columns new to
        either side are filled with nulls. Returns the number of rows written.
        """
        path = self._table_file(name)
        frame = _as_polars(frame, name)
        missing = [k for k in key if k not in frame.columns]
        if missing:
            raise StoreError(f"write_table({name!r}): key column(s) {missing} are not in the "
                             f"frame (columns: {frame.columns})")
        with self._lock(f"table-{name}"):
            if path.exists():
                stored = pl.read_parquet(path)
                if key:
                    absent = [k for k in key if k not in stored.columns]
                    if absent:
                        raise StoreError(f"write_table({name!r}): key column(s) {absent} are "
                                         f"not in the stored table (columns: {stored.columns})")
                    keys = frame.select(list(key)).cast(
                        {k: stored.schema[k] for k in key}, strict=False)
                    stored = stored.join(keys, on=list(key), how="anti", nulls_equal=True)
                frame = pl.concat([stored, frame], how="diagonal_relaxed")
            self._write_atomic(frame, path)
        return frame.height

    def read_table(self, name: str) -> pl.DataFrame:
        """The table ``name``; an empty frame when it was never written."""
        path = self._table_file(name)
        if not path.exists():
            if name == QUARANTINE_TABLE:
                return pl.DataFrame(schema=QUARANTINE_SCHEMA)
            return pl.DataFrame()
        return pl.read_parquet(path)

    def scan_table(self, name: str) -> pl.LazyFrame | None:
        """A lazy scan of the table ``name`` (filters and column choices are pushed into the
        Parquet read); None when it was never written."""
        path = self._table_file(name)
        return pl.scan_parquet(path) if path.exists() else None

    def tables(self) -> list[str]:
        """Names of the result tables written so far."""
        return sorted(p.stem for p in (self.root / "tables").glob("*.parquet"))

    # -- quarantine ----------------------------------------------------------------------
    def add_quarantine(self, rejected: pl.DataFrame) -> int:
        """Record rejected rows (source_file, line, reason, raw [, ingested_at]).

        Keyed by (source_file, line, reason): re-ingesting a file does not duplicate them.
        """
        rejected = _as_polars(rejected, "rejected")
        missing = [c for c in ("source_file", "line", "reason", "raw")
                   if c not in rejected.columns]
        if missing:
            raise StoreError(f"add_quarantine: missing column(s) {missing}; need "
                             f"{list(QUARANTINE_SCHEMA)}")
        if not rejected.height:
            return 0
        if "ingested_at" not in rejected.columns:
            now = dt.datetime.now(dt.UTC)
            rejected = rejected.with_columns(pl.lit(now).alias("ingested_at"))
        rejected = rejected.select(list(QUARANTINE_SCHEMA)).cast(QUARANTINE_SCHEMA)
        rejected = rejected.unique(subset=QUARANTINE_KEY, keep="last", maintain_order=True)
        return self.write_table(QUARANTINE_TABLE, rejected, QUARANTINE_KEY) and rejected.height

    def quarantine(self) -> pl.DataFrame:
        """Every rejected row: source_file, line (1-based), reason, raw, ingested_at."""
        return self.read_table(QUARANTINE_TABLE).sort(["source_file", "line"])


def _stamp(path: Path) -> tuple[int, int, int] | None:
    try:
        status = path.stat()
    except FileNotFoundError:
        return None
    return status.st_ino, status.st_mtime_ns, status.st_size


def _frequency(stamps: pl.Series) -> str:
    """:func:`recurra.data.regular.infer_frequency` of a partition's timestamps, with a numpy
    shortcut for the common case of one channel on a perfectly regular grid (strictly
    increasing, one spacing: that spacing, as ``infer_frequency`` would name it)."""
    if stamps.dtype != TIMESTAMP_DTYPE or stamps.null_count():
        return infer_frequency(stamps)
    micros = stamps.to_numpy().view(np.int64)  # datetime64[us] without a copy
    if micros.size >= MIN_POINTS:
        steps = np.diff(micros)
        if steps[0] > 0 and bool(np.all(steps == steps[0])):
            return format_every(int(steps[0]))
    return infer_frequency(stamps)


def _describe(data: pl.DataFrame, source: str) -> list[dict]:
    """Catalogue rows of one whole (merged, sorted) series: one dict per channel.

    Plain slices of the channel runs instead of a group-by: a thousand small group-bys cost
    more than the Parquet writes of an ingest.
    """
    series_id = data[SERIES_ID][0]
    frequency = _frequency(data[TIMESTAMP])
    partition = partition_name(series_id)
    runs = data.select(pl.col(CHANNEL).rle()).unnest(CHANNEL)
    stamps, observed = data[TIMESTAMP], data[OBSERVED]
    rows, offset = [], 0
    for channel, n_rows in zip(runs["value"].to_list(), runs["len"].to_list(), strict=True):
        rows.append({SERIES_ID: series_id, CHANNEL: channel, SOURCE: source,
                     "frequency": frequency, "first": stamps[offset],
                     "last": stamps[offset + n_rows - 1], "n_rows": n_rows,
                     "share_observed": observed.slice(offset, n_rows).sum() / n_rows,
                     "partition": partition})
        offset += n_rows
    return rows


def checked_frame(frame, name: str) -> pl.DataFrame:
    """:func:`validate_frame`, with an O(n) shortcut for frames already in canonical form
    (exact dtypes, keys strictly increasing, observed mask right, values finite): the same
    rules, without re-sorting millions of rows that loaders and partitions keep sorted."""
    if isinstance(frame, pl.DataFrame) and frame.columns[:len(COLUMNS)] == list(COLUMNS) \
            and all(frame.schema[c] == d for c, d in SCHEMA.items()) \
            and not any(frame[c].null_count() for c in (*KEY, OBSERVED)):
        order = key_order(frame, KEY)
        increasing = pl.lit(order == (True, False)) if order is not None \
            else _strictly_increasing().all()
        ok = frame.select(
            increasing,
            (pl.col(OBSERVED) == pl.col(VALUE).is_not_null()).all(),
            (~(pl.col(VALUE).is_nan() | pl.col(VALUE).is_infinite())).fill_null(True).all(),
        ).row(0)
        if all(ok):
            return frame.select(COLUMNS)
    return validate_frame(frame, name=name).select(COLUMNS)


def _strictly_increasing() -> pl.Expr:
    """Row i's (series_id, channel, timestamp) is greater than row i-1's (True for row 0)."""
    greater = pl.lit(False)
    equal = pl.lit(True)
    for column in KEY:
        current, previous = pl.col(column), pl.col(column).shift(1)
        greater = greater | (equal & (current > previous))
        equal = equal & (current == previous)
    return greater.fill_null(True)


def _as_polars(frame, name: str) -> pl.DataFrame:
    from recurra.data.schema import to_polars

    try:
        return to_polars(frame)
    except SchemaError as error:
        raise StoreError(f"{name}: {error}") from error
