"""Read-only access to what the dashboard and the reports show: the store and the registry.

:class:`DashboardData` wraps a store (``recurra.data.store.Store`` or anything with the same read
methods: ``read``, ``catalogue``, ``quarantine``, ``read_table``) and, optionally, the model
registry (``recurra.pipelines.registry``). It never writes and never trains. Every accessor returns
a polars frame and tolerates what is not there yet: a store with no ``events`` table, no
registry, an MLflow that cannot be imported; the view then shows an empty table with a note
instead of a traceback.

Size: ~450 lines: every read the views make (series, forecasts, scores, events, runs,
data quality) with one cache keyed by the store's file stamps, so a view never reads a
file twice; the registry's table is in :mod:`recurra.dashboards.registry_view`.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import polars as pl

from recurra.dashboards.registry_view import MODEL_COLUMNS, RegistryView, to_frame
from recurra.data.schema import (
    CHANNEL,
    END,
    EVENT_SCHEMA,
    FORECAST_SCHEMA,
    ISSUED_AT,
    OBSERVED,
    SCORE_SCHEMA,
    SERIES_ID,
    START,
    TIMESTAMP,
    RecurraError,
    empty_frame,
    empty_like,
)

LOGGER = logging.getLogger(__name__)
QUANTILE_PATTERN = re.compile(r"^q(\d+(?:\.\d+)?)$")
RUN_COLUMNS = ("run_id", "flow", "started_at", "finished_at", "status", "rows_ingested",
               "rows_quarantined", "series_trained", "events_found", "message")
SERIES_CACHE_SIZE = 4
TABLE_CACHE_SIZE = 32
QUARANTINE = "quarantine"  # recurra.data.store.QUARANTINE_TABLE
MAX_QUALITY_SERIES = 60
NO_STAMPS = ("no-stamps",)  # the store cannot tell when a file changed: age-limited cache


def open_store(store_root: str | Path | None = None) -> Any:
    """``recurra.data.store.Store(store_root)`` of an existing folder (None: the default store).

    A folder that does not exist is an error rather than a new empty store: the dashboard
    only reads, and a typo in ``--store`` should say so.
    """
    if store_root is not None and "://" not in str(store_root) \
            and not Path(store_root).expanduser().is_dir():
        raise RecurraError(f"store ({str(store_root)!r}) must be an existing store folder "
                           "(written by `recurra ingest`); it does not exist")
    try:
        from recurra.data.store import Store
    except ImportError as error:  # pragma: no cover - recurra.data.store is part of the project
        raise RecurraError("recurra.data.store is not available: the dashboard needs the Parquet "
                           f"store to read from ({error})") from error
    return Store(store_root)


def quantile_levels(columns: list[str]) -> list[tuple[float, str]]:
    """The ``(level, column)`` pairs of the quantile columns, sorted by level.

    >>> quantile_levels(["y_hat", "q90", "q10", "q2.5"])
    [(2.5, 'q2.5'), (10.0, 'q10'), (90.0, 'q90')]
    """
    found = []
    for column in columns:
        match = QUANTILE_PATTERN.match(column)
        if match:
            found.append((float(match.group(1)), column))
    return sorted(found)


class DashboardData:
    """Read-only accessors over a store and (optionally) the model registry.

    Parameters
    ----------
    store : a ``recurra.data.store.Store`` or an object with its read methods.
    registry : an object with ``list_models()`` and ``list_versions(name)`` returning
        frames (``recurra.pipelines.registry`` by default, imported lazily; ``None`` to use it,
        ``False`` for no registry).
    tracking_uri : the MLflow tracking URI handed to the registry.
    mlflow_ui_url : base URL of the MLflow UI for run links.
    cache_seconds : 0 turns caching off.  Otherwise reads are cached: with a
        ``recurra.data.store.Store`` (which reports a stamp (inode, mtime, size) per file) an entry
        is kept while its file is unchanged and re-read as soon as it changes; with a store
        that cannot stamp its files, for ``cache_seconds``.

    Reads go through ``Store.scan`` / ``Store.scan_table`` (lazy Parquet scans) when the
    store has them, so a view reads only its series' rows and the columns it uses.

    Examples
    --------
    >>> data = DashboardData(open_store(root))                       # doctest: +SKIP
    >>> data.series_ids(source="nab")                                # doctest: +SKIP
    """

    def __init__(self, store: Any, registry: Any = None, *, tracking_uri: str | None = None,
                 mlflow_ui_url: str | None = None, cache_seconds: float = 30.0) -> None:
        self.store = store
        self._registry_view = RegistryView(registry, tracking_uri=tracking_uri,
                                           mlflow_ui_url=mlflow_ui_url)
        self.cache_seconds = cache_seconds
        self._series_cache = _StampCache(SERIES_CACHE_SIZE)
        self._table_cache = _StampCache(TABLE_CACHE_SIZE)

    # ---- series ------------------------------------------------------------------------
    def catalogue(self) -> pl.DataFrame:
        """One row per (series_id, channel): source, frequency, first, last, n_rows, ..."""
        frame = self._cached(self._table_cache, ("catalogue",), self._stamp("catalogue_stamp"),
                             lambda: self._call("catalogue"))
        return frame if frame is not None else pl.DataFrame(
            schema={SERIES_ID: pl.Utf8, CHANNEL: pl.Utf8, "source": pl.Utf8})

    def sources(self) -> list[str]:
        """Distinct sources of the catalogued series, sorted."""
        catalogue = self.catalogue()
        if "source" not in catalogue.columns:
            return []
        return sorted(str(s) for s in catalogue["source"].drop_nulls().unique().to_list())

    def series_ids(self, source: str | None = None, search: str | None = None) -> list[str]:
        """Series ids, optionally of one ``source`` and containing ``search`` (any case)."""
        catalogue = self.catalogue()
        if source and "source" in catalogue.columns:
            catalogue = catalogue.filter(pl.col("source") == source)
        ids = sorted({str(s) for s in catalogue[SERIES_ID].to_list()})
        if search:
            ids = [s for s in ids if search.lower() in s.lower()]
        return ids

    def series(self, series_id: str, *, start: Any = None, end: Any = None) -> pl.DataFrame:
        """The contract frame of one series (every channel): one partition read.

        ``start`` / ``end`` (datetime or ISO text, naive = UTC, inclusive) limit the rows;
        the time filter is pushed into the Parquet scan.  The last few reads stay cached
        while the partition is unchanged (zooming a million-point series would re-read it
        at every redraw otherwise).
        """
        start, end = _utc(start, "start"), _utc(end, "end")
        window = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
        frame = self._cached(self._series_cache, (series_id, start, end),
                             self._stamp("series_stamp", series_id),
                             lambda: self._call("read", series_ids=[series_id], **window))
        return frame if frame is not None else empty_frame()

    def latest_forecast(self, series_id: str, since: Any = None) -> pl.DataFrame:
        """The rows of the most recent ``issued_at`` forecast of ``series_id``, per channel;
        ``since`` (datetime, naive = UTC) bounds the scan to forecasts issued from then on,
        so a report reads the recent forecasts rather than the whole history."""
        forecasts = self._table_rows("forecasts", FORECAST_SCHEMA, series_id,
                                     lower=(ISSUED_AT, _utc(since, "since")))
        if forecasts.is_empty():
            return forecasts
        latest = pl.col(ISSUED_AT) == pl.col(ISSUED_AT).max().over(CHANNEL)
        return forecasts.filter(latest).sort([CHANNEL, TIMESTAMP])

    def scores(self, series_id: str, *, start: Any = None, end: Any = None) -> pl.DataFrame:
        """Anomaly scores (SCORE_SCHEMA + contributions) of one series, by time; ``start`` /
        ``end`` (inclusive, naive = UTC) are pushed into the scan."""
        scores = self._table_rows("scores", SCORE_SCHEMA, series_id,
                                  (_utc(start, "start"), _utc(end, "end")))
        if SERIES_ID not in scores.columns or TIMESTAMP not in scores.columns:
            return empty_like(SCORE_SCHEMA)
        return scores.filter(pl.col(TIMESTAMP).is_not_null()).sort(TIMESTAMP)

    def events(self, series_id: str | None = None, since: Any = None) -> pl.DataFrame:
        """Events (EVENT_SCHEMA), all or of one series, latest first; ``since`` keeps the
        events still open at or after that time (their ``end``), pushed into the scan."""
        return self._table_rows("events", EVENT_SCHEMA, series_id,
                                lower=(END, _utc(since, "since"))
                                ).sort(START, descending=True)

    def series_with_results(self, run_id: str | None = None) -> list[str]:
        """Series with a row in the forecasts, events or scores table (of ``run_id`` when
        given), sorted; only the series_id (and run_id) columns are read."""
        found: set[str] = set()
        for name in ("forecasts", "events", "scores"):
            scan = self._scan_table(name)
            if scan is None:
                frame = self._call("read_table", name)
                if frame is None:
                    continue
                scan = frame.lazy()
            names = scan.collect_schema().names()
            if SERIES_ID not in names or (run_id is not None and "run_id" not in names):
                continue
            if run_id is not None:
                scan = scan.filter(pl.col("run_id").cast(pl.Utf8) == str(run_id))
            ids = scan.select(pl.col(SERIES_ID).cast(pl.Utf8)).unique().collect()
            found.update(ids[SERIES_ID].drop_nulls().to_list())
        return sorted(found)

    def history_start(self, series_id: str, steps: int | None) -> dt.datetime | None:
        """The start of the last ``steps`` steps of a series (from the catalogue's first,
        last and n_rows, so it holds for irregular series too); None: its whole history."""
        catalogue = self.catalogue()
        needed = {SERIES_ID, "first", "last", "n_rows"}
        if steps is None or not needed <= set(catalogue.columns):
            return None
        rows = catalogue.filter(pl.col(SERIES_ID) == series_id)
        if rows.is_empty() or rows["first"].min() is None or rows["last"].max() is None:
            return None
        first, last, n_rows = rows["first"].min(), rows["last"].max(), int(rows["n_rows"].max())
        if n_rows <= steps:
            return None
        return last - (last - first) * (steps / n_rows)

    def run(self, run_id: str) -> pl.DataFrame:
        """The row(s) of one run in the runs table (the filter pushed into the scan)."""
        scan = self._scan_table("runs")
        if scan is None or "run_id" not in scan.collect_schema().names():
            runs = self.table("runs", {name: pl.Utf8 for name in RUN_COLUMNS})
            return runs.filter(pl.col("run_id").cast(pl.Utf8) == str(run_id)) \
                if "run_id" in runs.columns else runs
        return scan.filter(pl.col("run_id").cast(pl.Utf8) == str(run_id)).collect()

    # ---- runs and data quality ------------------------------------------------------
    def runs(self, limit: int = 100) -> pl.DataFrame:
        """The most recent flow runs (RUN_COLUMNS present in the store), newest first."""
        runs = self.table("runs", {name: pl.Utf8 for name in RUN_COLUMNS})
        if "started_at" in runs.columns:
            runs = runs.sort("started_at", descending=True, nulls_last=True)
        return runs.head(limit)

    def quarantine_by_reason(self) -> pl.DataFrame:
        """Quarantined rows counted per ``reason`` (columns reason, n_rows), most first."""
        empty = pl.DataFrame(schema={"reason": pl.Utf8, "n_rows": pl.UInt32})

        def load() -> pl.DataFrame | None:
            scan = self._scan_table(QUARANTINE)
            if scan is None:  # a store without lazy scans: read the table
                quarantine = self._call("quarantine")
                if quarantine is None or "reason" not in quarantine.columns:
                    return None
                scan = quarantine.lazy()
            elif "reason" not in scan.collect_schema().names():
                return None
            return scan.group_by("reason").agg(pl.len().alias("n_rows")).collect()

        counts = self._cached(self._table_cache, ("quarantine_by_reason",),
                              self._stamp("table_stamp", QUARANTINE), load)
        if counts is None or counts.is_empty():
            return empty
        return counts.sort(["n_rows", "reason"], descending=[True, False])

    def share_observed_by_day(self, series_ids: list[str] | None = None,
                              every: str | None = None, max_series: int = MAX_QUALITY_SERIES,
                              since: Any = None) -> pl.DataFrame:
        """Share of observed cells per series and period.

        Columns series_id, day (start of the period), share_observed, period. ``every``
        is a polars duration ("1d", "1w", "1mo"); by default one day, or one week / one
        month when the store spans more than 400 / 2,800 days (a readable heatmap). Without
        ``series_ids``, the ``max_series`` series with the lowest share observed in the
        catalogue (the ones worth a look).  Only the series_id, timestamp and observed
        columns are read, and the aggregation runs inside the lazy scan; ``since`` (naive =
        UTC) reads only the rows from then on.
        """
        since = _utc(since, "since")
        if series_ids is None:
            catalogue = self.catalogue()
            if "share_observed" in catalogue.columns and \
                    catalogue[SERIES_ID].n_unique() > max_series:
                worst = (catalogue.group_by(SERIES_ID).agg(pl.col("share_observed").mean())
                         .sort(["share_observed", SERIES_ID]).head(max_series))
                series_ids = worst[SERIES_ID].to_list()
        key = ("share_observed", None if series_ids is None else tuple(series_ids), every,
               since)
        share = self._cached(self._table_cache, key, self._stamp("catalogue_stamp"),
                             lambda: self._share_observed(series_ids, every, since))
        if share is None or share.is_empty():
            return pl.DataFrame(schema={SERIES_ID: pl.Utf8, "day": pl.Datetime("us", "UTC"),
                                        "share_observed": pl.Float64, "period": pl.Utf8})
        return share

    def _share_observed(self, series_ids: list[str] | None, every: str | None,
                        since: dt.datetime | None = None) -> pl.DataFrame | None:
        scan = getattr(self.store, "scan", None)
        lazy = self._try("scan", scan, series_ids=series_ids) if scan is not None else None
        if lazy is None:
            frame = self._call("read", series_ids=series_ids)
            if frame is None or frame.is_empty():
                return None
            lazy = frame.lazy()
        if since is not None:
            lazy = lazy.filter(pl.col(TIMESTAMP) >= since)
        lazy = lazy.select(SERIES_ID, TIMESTAMP, OBSERVED)
        if every is None:
            bounds = lazy.select(pl.col(TIMESTAMP).min().alias("low"),
                                 pl.col(TIMESTAMP).max().alias("high")).collect()
            if bounds["low"][0] is None:
                return None
            span_days = (bounds["high"][0] - bounds["low"][0]).days
            every = "1d" if span_days <= 400 else ("1w" if span_days <= 2800 else "1mo")
        return (lazy.with_columns(pl.col(TIMESTAMP).dt.truncate(every).alias("day"))
                .group_by([SERIES_ID, "day"])
                .agg(pl.col(OBSERVED).cast(pl.Float64).mean().alias("share_observed"))
                .with_columns(pl.lit(every).alias("period"))
                .sort([SERIES_ID, "day"]).collect())

    # ---- models -----------------------------------------------------------------------
    def models(self) -> tuple[pl.DataFrame, str]:
        """Registered model versions (MODEL_COLUMNS) and a note; see
        :meth:`recurra.dashboards.registry_view.RegistryView.models`."""
        return self._registry_view.models()

    def run_url(self, run_id: str | None, experiment_id: str | None) -> str:
        """Link to a run in the MLflow UI (``<ui>/#/experiments/<exp>/runs/<run>``)."""
        return self._registry_view.run_url(run_id, experiment_id)

    # ---- helpers ----------------------------------------------------------------------
    def table(self, name: str, schema: dict[str, pl.DataType]) -> pl.DataFrame:
        """A result table of the store, or an empty frame of ``schema`` when absent."""
        return self._table_rows(name, schema, None)

    def _table_rows(self, name: str, schema: dict[str, pl.DataType], series_id: str | None,
                    window: tuple[Any, Any] = (None, None),
                    lower: tuple[str, Any] = ("", None)) -> pl.DataFrame:
        """The rows of table ``name`` (of one series when ``series_id`` is given, in the
        ``window`` (start, end) of timestamps, with column ``lower[0]`` >= ``lower[1]`` when
        that is not None), cached while the table file is unchanged; the filters are pushed
        into the scan."""

        def restrict(frame: Any, columns: list[str]) -> Any:
            if series_id is not None and SERIES_ID in columns:
                frame = frame.filter(pl.col(SERIES_ID) == series_id)
            if lower[1] is not None and lower[0] in columns:
                frame = frame.filter(pl.col(lower[0]) >= lower[1])
            if TIMESTAMP in columns and window[0] is not None:
                frame = frame.filter(pl.col(TIMESTAMP) >= window[0])
            if TIMESTAMP in columns and window[1] is not None:
                frame = frame.filter(pl.col(TIMESTAMP) <= window[1])
            return frame

        def load() -> pl.DataFrame | None:
            scan = self._scan_table(name)
            if scan is not None:
                return restrict(scan, scan.collect_schema().names()).collect()
            frame = self._call("read_table", name)
            return None if frame is None else restrict(frame, frame.columns)

        frame = self._cached(self._table_cache, ("table", name, series_id, window, lower),
                             self._stamp("table_stamp", name), load)
        return frame if frame is not None and frame.width else empty_like(schema)

    def _scan_table(self, name: str) -> pl.LazyFrame | None:
        scan = getattr(self.store, "scan_table", None)
        return None if scan is None else self._try("scan_table", scan, name)

    def _stamp(self, method: str, *args: Any) -> Any:
        """The store's change stamp of a file (None: absent), or NO_STAMPS."""
        function = getattr(self.store, method, None)
        if function is None:
            return NO_STAMPS
        try:
            return function(*args)
        except Exception as error:  # e.g. a bad table name: read (and report) as usual
            LOGGER.info("store.%s%s: %s", method, args, error)
            return NO_STAMPS

    def _cached(self, cache: _StampCache, key: tuple, stamp: Any,
                load: Callable[[], pl.DataFrame | None]) -> pl.DataFrame | None:
        """``load()``, or the frame cached under ``key`` while ``stamp`` is unchanged (age
        below ``cache_seconds`` for NO_STAMPS).  An absent file (stamp None) is not cached."""
        if self.cache_seconds <= 0 or stamp is None:
            return load()
        hit = cache.get(key, stamp, self.cache_seconds if stamp == NO_STAMPS else None)
        if hit is not None:
            return hit
        frame = load()
        if frame is not None:
            cache.put(key, stamp, frame)
        return frame

    def _try(self, method: str, function: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as error:  # a missing table reads as empty, with a log line
            LOGGER.warning("store.%s%s gave nothing: %s", method, args, error)
            return None

    def _call(self, method: str, *args: Any, **kwargs: Any) -> pl.DataFrame | None:
        function = getattr(self.store, method, None)
        if function is None:
            return None
        result = self._try(method, function, *args, **kwargs)
        return None if result is None else to_frame(result)


class _StampCache:
    """A small thread-safe LRU of frames, each valid while its file stamp is unchanged."""

    def __init__(self, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[tuple, tuple[Any, float, pl.DataFrame]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple, stamp: Any, max_age: float | None) -> pl.DataFrame | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != stamp or (
                    max_age is not None and time.monotonic() - entry[1] >= max_age):
                return None
            self._entries.move_to_end(key)
            return entry[2]

    def put(self, key: tuple, stamp: Any, frame: pl.DataFrame) -> None:
        with self._lock:
            self._entries[key] = (stamp, time.monotonic(), frame)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


def _utc(value: Any, name: str) -> dt.datetime | None:
    """A datetime, date or ISO text as an aware UTC datetime (naive = UTC); None stays."""
    if value is None:
        return None
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as error:
            raise RecurraError(f"`{name}` ({value!r}) must be an ISO date or datetime"
                               ) from error
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime.combine(value, dt.time())
    if not isinstance(value, dt.datetime):
        raise RecurraError(f"`{name}` ({value!r}) must be a datetime, date or ISO text")
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


__all__ = ["DashboardData", "open_store", "quantile_levels", "MODEL_COLUMNS", "RUN_COLUMNS"]
