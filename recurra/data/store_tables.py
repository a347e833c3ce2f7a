"""Result tables of the store: the keyed merge behind ``Store.write_table`` and the
quarantine's schema.

``write_into`` appends rows with new keys blindly and merges the rest, reading only the
stored rows whose key (and time range) the frame touches; rows identical to the stored
ones are not rewritten, so a repeated write commits nothing.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
from deltalake import CommitProperties, DeltaTable, write_deltalake

from recurra.data.schema import TIMESTAMP_DTYPE
from recurra.data.store_delta import StoreError, compact_small_files, sql_literal
from recurra.data.store_frames import _as_polars

QUARANTINE_TABLE = "quarantine"
QUARANTINE_SCHEMA: dict[str, pl.DataType] = {
    "source_file": pl.Utf8, "line": pl.Int64, "reason": pl.Utf8, "raw": pl.Utf8,
    "ingested_at": TIMESTAMP_DTYPE,
}
QUARANTINE_KEY = ["source_file", "line", "reason"]
EXCLUSIVE = CommitProperties(max_commit_retries=0)  # conflicts re-run the whole write


def quarantine_rows(rejected) -> pl.DataFrame:
    """Rejected rows (source_file, line, reason, raw [, ingested_at], polars or pandas) in
    the quarantine's schema, one row per key; ``ingested_at`` defaults to now."""
    rejected = _as_polars(rejected, "rejected")
    missing = [c for c in ("source_file", "line", "reason", "raw")
               if c not in rejected.columns]
    if missing:
        raise StoreError(f"add_quarantine: missing column(s) {missing}; need "
                         f"{list(QUARANTINE_SCHEMA)}")
    if not rejected.height:
        return rejected
    if "ingested_at" not in rejected.columns:
        now = dt.datetime.now(dt.UTC)
        rejected = rejected.with_columns(pl.lit(now).alias("ingested_at"))
    rejected = rejected.select(list(QUARANTINE_SCHEMA)).cast(QUARANTINE_SCHEMA)
    rejected = rejected.unique(subset=QUARANTINE_KEY, keep="last", maintain_order=True)
    return rejected


def write_into(table: DeltaTable, frame: pl.DataFrame, key: list[str], replace: bool,
               name: str) -> int | None:
    """Append or merge ``frame`` into an existing table; its new version, None if nothing
    had to be committed."""
    schema = pl.scan_delta(table).collect_schema()
    absent = [k for k in key if k not in schema]
    if absent:
        raise StoreError(f"write_table({name!r}): key column(s) {absent} are not in the "
                         f"stored table (columns: {list(schema)})")
    frame = frame.cast({c: schema[c] for c in frame.columns if c in schema}, strict=False)
    if not key:
        write_deltalake(table, frame.to_arrow(), mode="append", schema_mode="merge")
        return table.version()
    frame = frame.with_columns(pl.lit(None, dtype).alias(c) for c, dtype in schema.items()
                               if c not in frame.columns)
    time_key = next((k for k in key if isinstance(frame.schema[k], pl.Datetime | pl.Date)
                     and not frame[k].null_count()), None)
    lazy = pl.scan_delta(table)
    if time_key is not None:
        lazy = lazy.filter(pl.col(time_key).is_between(frame[time_key].min(),
                                                       frame[time_key].max()))
    stored = lazy.join(frame.lazy().select(key), on=key, how="semi", nulls_equal=True).collect()
    if stored.height:
        compare = key if not replace else [c for c in frame.columns if c in stored.columns]
        frame = frame.join(stored.select(compare), on=compare, how="anti", nulls_equal=True)
    if frame.is_empty():
        return None
    if not stored.height:  # only new keys: a blind append, no scan of the stored files
        write_deltalake(table, frame.to_arrow(), mode="append", schema_mode="merge",
                        commit_properties=EXCLUSIVE)
        compact_small_files(table)
        return table.version()
    conditions = [f"t.{k} = s.{k}" if not frame[k].null_count()
                  else f"t.{k} IS NOT DISTINCT FROM s.{k}" for k in key]
    if time_key is not None:
        conditions += [f"t.{time_key} >= {sql_literal(frame[time_key].min())}",
                       f"t.{time_key} <= {sql_literal(frame[time_key].max())}"]
    merger = table.merge(frame.to_arrow(), " AND ".join(conditions), source_alias="s",
                         target_alias="t", merge_schema=True, commit_properties=EXCLUSIVE)
    if replace:
        merger = merger.when_matched_update_all()
    merger.when_not_matched_insert_all().execute()
    compact_small_files(table)
    return table.version()
