"""Target transforms: prices -> (log) returns for training, forecasts back to price units.

>>> returns = to_returns(prices, "log_return")           # first row of each channel: a gap
>>> levels = last_levels(prices)                          # {(series_id, channel): price}
>>> prices_again = from_returns(returns, first_levels(prices), "log_return")

A return at row t compares the value at t with the last *observed* value before t, so a
gap (holiday) makes the next return span it and nothing is lost: cumulating the returns from
the first observed value gives back every observed price (:func:`from_returns`).

Forecasts (:func:`forecast_to_levels`): step k's point is ``last * exp(sum of the predicted
log returns up to k)`` (``last + sum`` for differences). Each quantile column moves from the
step's point by the square root of the summed squared per-step offsets of that level (the
returns taken as independent, the usual model of daily returns), then goes through the same
monotone map, so quantile order is kept.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import polars as pl

from recurra.data.schema import (
    CHANNEL,
    OBSERVED,
    SERIES_ID,
    STEP,
    TIMESTAMP,
    VALUE,
    Y_HAT,
    ContractFrame,
    SchemaError,
)

__all__ = ["TARGET_TRANSFORMS", "first_levels", "forecast_to_levels", "from_returns",
           "last_levels", "to_returns"]

TARGET_TRANSFORMS = ("none", "log_return", "difference")
KEY = [SERIES_ID, CHANNEL]
Levels = Mapping[tuple[str, str], float]


def _check(kind: str) -> None:
    if kind not in TARGET_TRANSFORMS[1:]:
        raise SchemaError(f"target_transform ({kind!r}) must be one of "
                          f"{list(TARGET_TRANSFORMS[1:])} here")


def _levels_frame(levels: Levels) -> pl.DataFrame:
    return pl.DataFrame({SERIES_ID: [k[0] for k in levels], CHANNEL: [k[1] for k in levels],
                         "_anchor": [float(v) for v in levels.values()]},
                        schema={SERIES_ID: pl.Utf8, CHANNEL: pl.Utf8, "_anchor": pl.Float64})


def to_returns(frame: Any, kind: str, anchors: Levels | None = None) -> Any:
    """Contract frame of returns: ``log(x_t / x_prev)`` or ``x_t - x_prev``, ``x_prev`` the
    last observed value before t (or ``anchors[(series_id, channel)]`` for the first rows,
    e.g. the last training price when transforming new rows). Rows without a previous value
    become gaps. ``log_return`` needs positive values.

    A :class:`~recurra.data.schema.ContractFrame` gives one back (the same rows with new
    values, :meth:`~recurra.data.schema.ContractFrame.with_values`: not checked again); a
    plain frame gives a plain frame sorted by key."""
    _check(kind)
    if kind == "log_return":
        bad = frame.filter(pl.col(OBSERVED) & (pl.col(VALUE) <= 0))
        if bad.height:
            row = bad.row(0, named=True)
            raise SchemaError(f"target_transform 'log_return' needs positive values: series "
                              f"{row[SERIES_ID]!r} channel {row[CHANNEL]!r} has {row[VALUE]} "
                              f"at {row[TIMESTAMP]} ({bad.height} such row(s)); use "
                              "'difference' or clean the data")
    level = pl.col(VALUE).log() if kind == "log_return" else pl.col(VALUE)
    prev = level.forward_fill().shift(1).over(KEY)
    checked = frame if isinstance(frame, ContractFrame) else None
    rows = checked.frame if checked is not None else frame.sort([*KEY, TIMESTAMP])
    out = rows.with_columns(prev.alias("_prev"))
    if anchors:
        anchor = _levels_frame(anchors).with_columns(
            pl.col("_anchor").log() if kind == "log_return" else pl.col("_anchor"))
        out = out.join(anchor, on=KEY, how="left", maintain_order="left").with_columns(
            pl.coalesce("_prev", "_anchor").alias("_prev")).drop("_anchor")
    value = (level - pl.col("_prev")).alias(VALUE)
    if checked is not None:  # same rows, same order: only the new values need a check
        return checked.with_values(out.select(value).to_series())
    return out.with_columns(value).with_columns(
        pl.col(VALUE).is_not_null().alias(OBSERVED)).drop("_prev")


def last_levels(frame: pl.DataFrame, previous: Levels | None = None) -> dict:
    """{(series_id, channel): last observed value}, over ``previous`` (kept where the frame
    has no observed value of that channel)."""
    seen = frame.filter(pl.col(OBSERVED)).sort([*KEY, TIMESTAMP]).group_by(KEY).agg(
        pl.col(VALUE).last())
    levels = dict(previous or {})
    levels.update({(r[0], r[1]): float(r[2]) for r in seen.iter_rows()})
    return levels


def first_levels(frame: pl.DataFrame) -> dict:
    """{(series_id, channel): (timestamp, value)} of the first observed value (the anchors
    of :func:`from_returns`)."""
    seen = frame.filter(pl.col(OBSERVED)).sort([*KEY, TIMESTAMP]).group_by(KEY).agg(
        pl.col(TIMESTAMP).first(), pl.col(VALUE).first())
    return {(r[0], r[1]): (r[2], float(r[3])) for r in seen.iter_rows()}


def from_returns(returns: pl.DataFrame, anchors: Mapping, kind: str) -> pl.DataFrame:
    """Levels from returns: ``anchors[(series_id, channel)] = (timestamp, value)`` (see
    :func:`first_levels`) at its timestamp, then the cumulated observed returns; rows with
    a missing return stay gaps."""
    _check(kind)
    anchor = pl.DataFrame({SERIES_ID: [k[0] for k in anchors], CHANNEL: [k[1] for k in anchors],
                           "_at": [v[0] for v in anchors.values()],
                           "_anchor": [float(v[1]) for v in anchors.values()]})
    anchor = anchor.with_columns(pl.col("_at").cast(returns.schema[TIMESTAMP]))
    out = returns.sort([*KEY, TIMESTAMP]).join(anchor, on=KEY, how="left")
    total = pl.col(VALUE).fill_null(0.0).cum_sum().over(KEY)
    level = (pl.col("_anchor") * total.exp()) if kind == "log_return" else (
        pl.col("_anchor") + total)
    value = pl.when(pl.col(OBSERVED)).then(level).when(
        pl.col(TIMESTAMP) == pl.col("_at")).then(pl.col("_anchor"))
    return out.with_columns(value.alias(VALUE)).with_columns(
        pl.col(VALUE).is_not_null().alias(OBSERVED)).drop("_anchor", "_at")


def forecast_to_levels(forecast: pl.DataFrame, levels: Levels, kind: str,
                       quantile_columns: Sequence[str]) -> pl.DataFrame:
    """A forecast frame of returns (y_hat + quantile columns per step) in level units, from
    ``levels[(series_id, channel)]`` (the last observed value; see the module docstring)."""
    _check(kind)
    missing = {(s, c) for s, c in forecast.select(KEY).unique().iter_rows()} - set(levels)
    if missing:
        raise SchemaError(f"no last observed value for {sorted(missing)[:3]}: a series needs "
                          "one observed value per target channel to forecast in levels")
    out = forecast.sort([*KEY, STEP]).join(_levels_frame(levels), on=KEY, how="left")
    centre = pl.col(Y_HAT).cum_sum().over(KEY)
    columns = []
    for name in quantile_columns:
        offset = pl.col(name) - pl.col(Y_HAT)
        spread = (offset ** 2).cum_sum().over(KEY).sqrt() * offset.sign()
        columns.append((centre + spread).alias(name))
    out = out.with_columns(*columns, centre.alias(Y_HAT))
    moved = [Y_HAT, *quantile_columns]
    if kind == "log_return":
        out = out.with_columns((pl.col("_anchor") * pl.col(c).exp()).alias(c) for c in moved)
    else:
        out = out.with_columns((pl.col("_anchor") + pl.col(c)).alias(c) for c in moved)
    return out.drop("_anchor").select(forecast.columns).sort([*KEY, STEP])

