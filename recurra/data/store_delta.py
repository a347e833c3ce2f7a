"""Delta Lake plumbing of the store: where a table lives, opening it, clear errors, retries.

The store's tables are Delta Lake tables (``deltalake``, read and written through polars).
A table is a folder (or an object-store prefix) of immutable Parquet files plus a
transaction log ``_delta_log/``; a write becomes visible only when its commit file lands
(atomically: a put-if-absent of ``<version>.json``), so a writer killed at any point leaves
either the old version or the new one, never a half-written table.  Data files of a commit
that never landed are unreferenced and removed by ``vacuum``.

Locations: a local folder, or a URI (``s3://bucket/prefix``, ``gs://``, ``az://``...).  For
S3 the usual environment variables are read (:func:`storage_options`).
"""

from __future__ import annotations

import os
import random
import re
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import polars as pl
import pyarrow as pa
from deltalake import DeltaTable, WriterProperties
from deltalake.exceptions import CommitFailedError, DeltaError, TableNotFoundError

from recurra.data.schema import RecurraError
from recurra.data.store_catalogue import BUCKET

URI_SCHEMES = ("s3://", "s3a://", "gs://", "gcs://", "az://", "abfs://", "abfss://",
               "memory://")
COMMIT_RETRIES = 8
RETRY_BASE_S = 0.05
CRASH_ENV = "RECURRA_STORE_CRASH_AT"  # test hook: SIGKILL this process at a named point
WRITER = WriterProperties(compression="LZ4_RAW")  # ~3x faster than snappy to write
# Every upsert adds a file to each bucket it touches; once a bucket holds this many files
# smaller than AUTO_COMPACT_BYTES, the upsert compacts that bucket (bounded work per run:
# files that reached the size are never rewritten again), so scheduled runs do not slow
# down as small files pile up between maintenance runs.
AUTO_COMPACT_FILES = 32
AUTO_COMPACT_BYTES = 8 << 20
_AWS_OPTIONS = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                "AWS_REGION", "AWS_ENDPOINT_URL", "AWS_ALLOW_HTTP", "AWS_S3_LOCKING_PROVIDER",
                "DELTA_DYNAMO_TABLE_NAME", "AWS_S3_ALLOW_UNSAFE_RENAME", "AWS_PROFILE")
_CONFLICT_WORDS = ("concurrent", "conflict", "already exists", "version mismatch",
                   "transaction failed", "commit failed")

T = TypeVar("T")


class StoreError(RecurraError):
    """The store cannot do what was asked (bad table name, unreachable location, ...)."""


class StoreConflict(StoreError):
    """Another writer committed first; the operation may be retried (the store does)."""


def is_uri(root: str | Path) -> bool:
    """True for object-store locations (``s3://...``); local paths and ``file://`` are not."""
    return str(root).lower().startswith(URI_SCHEMES)


def join(root: str, *parts: str) -> str:
    """``root/part/...`` for a local folder or a URI."""
    return "/".join([root.rstrip("/"), *parts])


def storage_options(root: str) -> dict[str, str]:
    """Storage options of ``root`` from the environment (S3: ``AWS_*``; others: none).

    ``AWS_ENDPOINT_URL`` selects an S3-compatible server (http endpoints are allowed);
    ``AWS_DEFAULT_REGION`` stands for ``AWS_REGION``.  Without ``AWS_S3_LOCKING_PROVIDER``
    (e.g. ``dynamodb``) commits use ``AWS_S3_ALLOW_UNSAFE_RENAME=true``: safe for one writer
    at a time; concurrent writers on S3 need the locking provider.
    """
    if not str(root).lower().startswith(("s3://", "s3a://")):
        return {}
    options = {name: os.environ[name] for name in _AWS_OPTIONS if os.environ.get(name)}
    if "AWS_REGION" not in options:
        options["AWS_REGION"] = os.environ.get("AWS_DEFAULT_REGION", "us-east-1")
    endpoint = options.get("AWS_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL_S3")
    if endpoint:
        options["AWS_ENDPOINT_URL"] = endpoint
        if endpoint.startswith("http://"):
            options.setdefault("AWS_ALLOW_HTTP", "true")
    if "AWS_S3_LOCKING_PROVIDER" not in options:
        options.setdefault("AWS_S3_ALLOW_UNSAFE_RENAME", "true")
    return options


def crash_point(name: str) -> None:
    """Test hook: when ``$RECURRA_STORE_CRASH_AT`` is ``name``, die here as ``kill -9``."""
    if os.environ.get(CRASH_ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)


class Location:
    """One Delta table of the store: its URI, storage options and friendly errors."""

    def __init__(self, uri: str, options: dict[str, str]) -> None:
        self.uri = uri
        self.options = options
        # the latest snapshot, per thread: re-opening replays the log from the last
        # checkpoint (which lists every file), ``update_incremental`` reads only new commits
        self._latest = threading.local()

    def __repr__(self) -> str:
        return f"Location({self.uri!r})"

    def open(self, version: int | None = None) -> DeltaTable | None:
        """The table (at ``version``, default the latest); None when it does not exist.

        The latest version is this thread's cached snapshot brought up to date, so a caller
        that holds it sees it advance when this thread writes the table again."""
        if version is None:
            cached = getattr(self._latest, "table", None)
            if cached is not None:
                try:
                    cached.update_incremental()
                    return cached
                except (DeltaError, OSError):  # vacuumed, recreated or unreachable: reopen
                    self._latest.table = None
        try:
            table = DeltaTable(self.uri, version=version, storage_options=self.options or None)
            if version is None:
                self._latest.table = table
            return table
        except TableNotFoundError:
            if is_uri(self.uri):
                self._check_not_foreign_object()
            else:
                self._check_not_foreign()
            return None
        except (DeltaError, OSError) as error:
            latest = self.open() if version is not None else None
            if latest is not None:
                raise StoreError(f"{self.uri}: no version {version} (it has versions 0 to "
                                 f"{latest.version()}; vacuumed or never written)") from None
            raise self.error(error) from None

    def exists(self) -> bool:
        return self.open() is not None

    def _check_not_foreign(self) -> None:
        """A local folder with files but no ``_delta_log`` is not a Delta table: refuse to
        write into it (it may be a store in the old Parquet layout)."""
        path = Path(self.uri)
        if path.is_file() or (path.is_dir() and not (path / "_delta_log").is_dir()
                              and not all(map(_delta_like, os.listdir(path)))):
            raise StoreError(f"{self.uri} is not a Delta table (no _delta_log folder); a store "
                             "written by an older Recurra? convert it with "
                             "`recurra store migrate OLD_ROOT --store NEW_ROOT`")

    def _check_not_foreign_object(self) -> None:
        """The object-store twin of :meth:`_check_not_foreign` (S3 only; other schemes are
        not listed): objects under the prefix but no ``_delta_log`` means not a Delta table."""
        if not self.uri.lower().startswith(("s3://", "s3a://")):
            return
        listed = _s3_listing(self.uri, self.options)
        foreign = sorted(name for name in listed if not _delta_like(name))
        if foreign and "_delta_log" not in listed:
            raise StoreError(f"{self.uri} is not a Delta table (objects such as "
                             f"{foreign[0]!r} but no _delta_log); point RECURRA_STORE "
                             "at an empty prefix or a Recurra store")

    def error(self, error: BaseException) -> StoreError:
        """A StoreError naming this table for a deltalake / object-store failure."""
        text = _first_line(error)
        lower = str(error).lower()
        hint = ""
        if "nosuchbucket" in lower or "bucket" in lower and "not" in lower and "exist" in lower:
            hint = " (the bucket does not exist?)"
        elif any(w in lower for w in ("invalidaccesskeyid", "signaturedoesnotmatch",
                                      "accessdenied", "forbidden", "403")):
            hint = " (wrong or missing credentials: check AWS_ACCESS_KEY_ID / " \
                   "AWS_SECRET_ACCESS_KEY)"
        elif any(w in lower for w in ("connection refused", "dns error", "error sending")):
            hint = " (endpoint unreachable: check AWS_ENDPOINT_URL)"
        kind = StoreConflict if is_conflict(error) else StoreError
        return kind(f"store table {self.uri}: {text}{hint}")

    def retrying(self, action: Callable[[], T]) -> T:
        """``action()``, retried with jittered exponential backoff when another writer's
        commit conflicts with it (``action`` must re-read the table each time)."""
        for attempt in range(COMMIT_RETRIES):
            try:
                return action()
            except (CommitFailedError, DeltaError, StoreConflict) as error:
                if not is_conflict(error):
                    raise self.error(error) from None
                if attempt == COMMIT_RETRIES - 1:
                    raise StoreConflict(
                        f"store table {self.uri}: still conflicting with other writers after "
                        f"{COMMIT_RETRIES} tries ({_first_line(error)}); try again") from None
                time.sleep(RETRY_BASE_S * 2 ** attempt * (0.5 + random.random()))
        raise AssertionError("unreachable")

    def scan(self, table: DeltaTable) -> pl.LazyFrame:
        return pl.scan_delta(table)


_DELTA_NAME = re.compile(r"^(_delta_log|_change_data|[^=/]+=.*"
                         r"|part-\d{5}-[0-9a-f-]{36}-c\d{3}\..*)$")


def _delta_like(name: str) -> bool:
    """True for a name a Delta writer puts in a table folder or prefix before its first
    commit lands (``bucket=3`` partitions, ``part-00000-<uuid>-c000.*.parquet`` files,
    ``_delta_log``): a table another process is creating is not a foreign folder."""
    return _DELTA_NAME.match(name) is not None


def _s3_listing(uri: str, options: dict[str, str]) -> list[str]:
    """Names directly under an ``s3://bucket/prefix`` (empty when nothing is there or the
    listing fails: the Delta call that follows reports the real problem)."""
    from pyarrow import fs

    endpoint = options.get("AWS_ENDPOINT_URL", "")
    scheme, _, host = endpoint.partition("://") if endpoint else ("https", "", "")
    try:
        s3 = fs.S3FileSystem(access_key=options.get("AWS_ACCESS_KEY_ID"),
                             secret_key=options.get("AWS_SECRET_ACCESS_KEY"),
                             session_token=options.get("AWS_SESSION_TOKEN"),
                             region=options.get("AWS_REGION"), scheme=scheme or "https",
                             endpoint_override=host or None)
        path = uri.split("://", 1)[1].rstrip("/")
        infos = s3.get_file_info(fs.FileSelector(path, allow_not_found=True))
    except (OSError, ValueError):
        return []
    return [info.base_name for info in infos]


def is_conflict(error: BaseException) -> bool:
    """True for a commit that lost a race with another writer (retryable)."""
    if isinstance(error, StoreConflict | CommitFailedError):
        return True
    text = str(error).lower()
    return any(word in text for word in _CONFLICT_WORDS)


def _first_line(error: BaseException) -> str:
    text = str(error).strip() or type(error).__name__
    return text.splitlines()[0][:400]


def delta_compatible(frame: pl.DataFrame) -> pl.DataFrame:
    """Cast the column types Delta Lake cannot store: unsigned ints -> Int64, Null /
    Categorical / Enum -> Utf8, datetimes -> microseconds, durations -> Int64 microseconds."""
    casts: dict[str, pl.DataType] = {}
    for name, dtype in frame.schema.items():
        if dtype in (pl.UInt8, pl.UInt16, pl.UInt32, pl.UInt64):
            casts[name] = pl.Int64
        elif dtype == pl.Null or isinstance(dtype, pl.Categorical | pl.Enum):
            casts[name] = pl.Utf8
        elif isinstance(dtype, pl.Datetime) and dtype.time_unit != "us":
            casts[name] = pl.Datetime("us", dtype.time_zone)
        elif isinstance(dtype, pl.Duration):
            casts[name] = pl.Int64
    if not casts:
        return frame
    durations = [n for n, d in frame.schema.items() if isinstance(d, pl.Duration)]
    frame = frame.with_columns(pl.col(n).dt.total_microseconds() for n in durations)
    return frame.cast({k: v for k, v in casts.items() if k not in durations})


def sql_literal(value) -> str:
    """A value as a literal of a Delta merge predicate (timestamps in ISO with ``Z``)."""
    import datetime as dt

    if isinstance(value, dt.datetime):
        if value.tzinfo is not None:
            value = value.astimezone(dt.UTC).replace(tzinfo=None)
            return f"'{value.isoformat(timespec='microseconds')}Z'"
        return f"'{value.isoformat(timespec='microseconds')}'"
    if isinstance(value, dt.date):
        return f"'{value.isoformat()}'"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def changed_buckets(series: Location, stamp: int | None, version: int) -> list[int] | None:
    """Buckets whose files differ between series versions ``stamp`` and ``version``; None
    (all) when ``stamp`` is unknown or its log is gone."""
    if stamp is None or stamp > version:
        return None
    try:
        before, after = series.open(stamp), series.open(version)
    except StoreError:
        return None
    if before is None or after is None:
        return None

    def files(table: DeltaTable) -> pl.DataFrame:
        actions = pl.DataFrame(table.get_add_actions(flatten=True))
        column = next(c for c in actions.columns if c.endswith(BUCKET))
        return actions.select("path", pl.col(column).cast(pl.Int64).alias(BUCKET))

    old, new = files(before), files(after)
    diff = pl.concat([old.join(new, on="path", how="anti"),
                      new.join(old, on="path", how="anti")])
    return sorted(diff[BUCKET].unique().to_list())


def latest_source(series: Location, stamp: int | None, version: int) -> str | None:
    """The ``recurra.source`` of the latest series commit after ``stamp``."""
    table = series.open()
    if table is None:
        return None
    for entry in table.history(max(1, version - (stamp if stamp is not None else -1))):
        if entry.get("version", -1) <= version and "recurra.source" in entry:
            return str(entry["recurra.source"])
    return None


def compact_small_files(table: DeltaTable, max_small_files: int | None = None,
                        small_bytes: int | None = None) -> bool:
    """Compact an unpartitioned table (a result table) once it holds more than
    ``max_small_files`` files under ``small_bytes``; as :func:`compact_buckets`."""
    max_small_files = AUTO_COMPACT_FILES if max_small_files is None else max_small_files
    small_bytes = AUTO_COMPACT_BYTES if small_bytes is None else small_bytes
    sizes = pa.table(table.get_add_actions(flatten=False)).column("size_bytes")
    if sum(1 for size in sizes.to_pylist() if size < small_bytes) <= max_small_files:
        return False
    return _optimize(table, None, small_bytes)


def _optimize(table: DeltaTable, partition_filters: list | None, small_bytes: int) -> bool:
    before = table.version()
    try:
        table.optimize.compact(partition_filters=partition_filters, target_size=small_bytes,
                               writer_properties=WRITER)
    except (CommitFailedError, DeltaError) as error:
        if is_conflict(error):
            return False
        raise
    return table.version() != before


def compact_buckets(table: DeltaTable, buckets: list[int],
                    max_small_files: int | None = None, small_bytes: int | None = None) -> bool:
    """Compact the buckets of ``buckets`` that hold more than ``max_small_files`` files
    under ``small_bytes`` (defaults: AUTO_COMPACT_FILES, AUTO_COMPACT_BYTES; a Delta
    OPTIMIZE on those partitions only: same rows, new version).  Returns whether it
    committed.  Opportunistic: a concurrent writer's conflicting commit makes it skip (the
    next upsert tries again)."""
    max_small_files = AUTO_COMPACT_FILES if max_small_files is None else max_small_files
    small_bytes = AUTO_COMPACT_BYTES if small_bytes is None else small_bytes
    column = f"partition.{BUCKET}"
    actions = pa.table(table.get_add_actions(flatten=True))
    if not actions.num_rows or column not in actions.column_names:
        return False
    actions = pl.from_arrow(actions.select(["size_bytes", column]))
    crowded = (actions.filter(pl.col("size_bytes") < small_bytes,
                              pl.col(column).cast(pl.Int64).is_in(buckets))
               .group_by(column).len().filter(pl.col("len") > max_small_files)[column]
               .to_list())
    if not crowded:
        return False
    return _optimize(table, [(BUCKET, "in", [str(b) for b in crowded])], small_bytes)
