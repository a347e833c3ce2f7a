"""Frame checks of the store: the validated fast path, time bounds, conversion to polars."""

from __future__ import annotations

import datetime as dt

import polars as pl

from recurra.data.regular import key_order
from recurra.data.schema import COLUMNS, KEY, OBSERVED, SCHEMA, VALUE, SchemaError, validate_frame
from recurra.data.store_delta import StoreError


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
