"""What one ``detect`` run reads and how it advances the models: bounded, batched.

``recurra.pipelines.tasks.detect_group`` calls these plain functions (no Prefect, no MLflow):

- :func:`new_rows`: the rows after each series' watermark, with the lower bound (the oldest
  watermark) and, for a catch-up, an upper bound pushed into the store's read, so a run
  costs what arrived, not how long the system has run.  ``max_steps`` caps a chunk of the
  backlog (the upper bound comes from the catalogue's frequency; an irregular series is
  capped after the read).
- :func:`open_forecasts`: the forecasts that the new rows can resolve (target timestamps
  in ``(start, end]``), a filtered lazy scan of the ``forecasts`` table, not its history.
- :func:`advance_detector`: the new rows through a :func:`recurra.anomaly.fleet.make_fleet` fleet,
  one array call per time step for all series with the same number of new rows; series
  with a different count (irregular arrivals) and detectors a fleet cannot take (an
  ``aggregate="overlap"`` reconstruction) go through ``detector.update`` instead.
- :func:`advance_forecaster`: a stateful ``RNNForecaster`` with ``interval`` ``"model"`` or
  ``"conformal"`` through :class:`recurra.forecasting.fleet.ForecasterFleet`; every other
  forecaster (non-stateful RNNs re-encode their lookback window, adaptive intervals observe
  each series, baselines) through ``forecaster.update``, which is itself one batched
  network call for RNNs.

Each function returns the path it took so the run can log it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import polars as pl

from recurra.data.schema import (
    CHANNEL,
    CONTRIBUTION_PREFIX,
    IS_ANOMALY,
    SCORE,
    SERIES_ID,
    TIMESTAMP,
    VALUE,
)


def cut(frame: pl.DataFrame, marks: dict[str, Any], after: bool) -> pl.DataFrame:
    """Rows after (or up to) each series' mark; a series without a mark: all (none)."""
    marks_frame = pl.DataFrame({SERIES_ID: list(marks), "_mark": list(marks.values())},
                               schema={SERIES_ID: pl.Utf8, "_mark": frame.schema[TIMESTAMP]})
    joined = frame.join(marks_frame, on=SERIES_ID, how="left")
    if after:
        keep = pl.col("_mark").is_null() | (pl.col(TIMESTAMP) > pl.col("_mark"))
    else:
        keep = pl.col("_mark").is_not_null() & (pl.col(TIMESTAMP) <= pl.col("_mark"))
    return joined.filter(keep).drop("_mark")


def new_rows(store: Any, ids: list[str], marks: dict[str, Any],
             max_steps: int | None = None) -> pl.DataFrame:
    """Rows after each series' watermark (``marks``; None = all of that series), at most the
    first ``max_steps`` timestamps of each series; the bounds are pushed into the read."""
    if not ids:
        return store.read(series_ids=[])
    known = [m for m in marks.values() if m is not None]
    lower = min(known) if known and len(known) == len(marks) else None
    upper = _upper_bound(store, ids, lower, max_steps) if max_steps and lower else None
    frame = cut(store.read(series_ids=ids, start=lower, end=upper), marks, after=True)
    if max_steps:
        frame = frame.filter(pl.col(TIMESTAMP).rank("dense").over(SERIES_ID) <= max_steps)
    return frame


def _upper_bound(store: Any, ids: list[str], lower: dt.datetime, max_steps: int
                 ) -> dt.datetime | None:
    """``lower + max_steps x spacing`` when every series of ``ids`` has a fixed spacing in
    the catalogue, else None (no bound)."""
    from recurra.data.regular import parse_every

    catalogue = store.catalogue()
    frequencies = catalogue.filter(pl.col(SERIES_ID).is_in(ids))["frequency"].unique()
    try:
        spacing = max(parse_every(str(f)) for f in frequencies.to_list())
    except (ValueError, TypeError, Exception):  # noqa: BLE001 - "irregular", "business-day"
        return None
    return lower + dt.timedelta(microseconds=spacing * max_steps)


def recent_rows(store: Any, ids: list[str], ends: dict[str, Any], n_rows: int
                ) -> pl.DataFrame:
    """The last ``n_rows`` rows per series and channel after each series' training end
    (``ends``); the read starts ``n_rows`` spacings before the newest row when the catalogue
    gives every series a fixed spacing."""
    lower = min(ends.values()) if ends else None
    catalogue = store.catalogue().filter(pl.col(SERIES_ID).is_in(ids))
    if lower is not None and catalogue.height:
        newest = catalogue["last"].max()
        back = _upper_bound(store, ids, newest, -n_rows)
        if back is not None and back > lower:
            lower = back
    frame = cut(store.read(series_ids=ids, start=lower), ends, after=True)
    return frame.group_by([SERIES_ID, CHANNEL], maintain_order=True).tail(n_rows)


def open_forecasts(store: Any, ids: list[str], start: Any, end: Any) -> pl.DataFrame:
    """Stored forecasts of ``ids`` whose target timestamp lies in ``(start, end]`` (all of
    them up to ``end`` when ``start`` is None): what the new rows can resolve."""
    lazy = store.scan_table("forecasts")
    if lazy is None:
        return pl.DataFrame()
    lazy = lazy.filter(pl.col(SERIES_ID).is_in(ids) & (pl.col(TIMESTAMP) <= end))
    if start is not None:
        lazy = lazy.filter(pl.col(TIMESTAMP) > start)
    return lazy.collect()


def advance_detector(detector: Any, new: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """Score ``new`` rows with ``detector``'s carried state (the scores of ``update``).

    Returns the score frame (``SCORE_SCHEMA`` + contributions) and the path taken:
    ``"fleet: N series x K steps"`` plus ``"; update: M series"`` for the rest.
    """
    from recurra.anomaly.fleet import fleet_arrays, make_fleet

    counts = new.group_by(SERIES_ID).agg(pl.col(TIMESTAMP).n_unique().alias("n"))
    if counts.is_empty():
        return detector.update(new), "update: no rows"
    modal = counts["n"].mode().sort()[-1]
    batched = sorted(counts.filter(pl.col("n") == modal)[SERIES_ID].to_list())
    try:
        fleet = make_fleet(detector, batched)
    except Exception as error:  # noqa: BLE001 - a detector a fleet cannot take
        return detector.update(new), f"update: {counts.height} series ({error})"
    rest = new.filter(~pl.col(SERIES_ID).is_in(batched))
    ranked = new.filter(pl.col(SERIES_ID).is_in(batched)).with_columns(
        pl.col(TIMESTAMP).rank("dense").over(SERIES_ID).alias("_step"))
    parts = []
    columns = [CONTRIBUTION_PREFIX + c for c in fleet.channels_]
    for (_,), rows in ranked.sort("_step").group_by("_step", maintain_order=True):
        stamps, values = fleet_arrays(rows.drop("_step"), batched, fleet.channels_)
        scores, flags = fleet.update(stamps, values)
        shares = fleet.contributions_
        parts.append(pl.DataFrame({
            SERIES_ID: batched,
            TIMESTAMP: pl.Series(stamps).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"),
            SCORE: pl.Series(scores, nan_to_null=True), IS_ANOMALY: flags,
            **{c: shares[:, j] for j, c in enumerate(columns)}}))
    fleet.write_back()
    path = f"fleet: {len(batched)} series x {modal} steps"
    if rest.height:
        parts.append(detector.update(rest))
        path += f"; update: {rest[SERIES_ID].n_unique()} series (other row counts)"
    return pl.concat(parts, how="diagonal_relaxed").sort([SERIES_ID, TIMESTAMP]), path


def advance_forecaster(forecaster: Any, new: pl.DataFrame) -> str:
    """Advance ``forecaster``'s state with ``new`` rows; returns the path taken."""
    from recurra.forecasting.fleet import ForecasterFleet

    config = getattr(forecaster, "config", None)
    if not (getattr(config, "stateful", False)
            and interval_method(config) in ("model", "conformal")
            and getattr(config, "target_transform", "none") == "none"):
        forecaster.update(new)
        return "update (not a stateful RNN with model/conformal intervals on levels)"
    counts = new.group_by(SERIES_ID).agg(pl.col(TIMESTAMP).n_unique().alias("n"))
    if counts["n"].n_unique() != 1:
        forecaster.update(new)
        return "update (series with different numbers of new rows)"
    ids = sorted(counts[SERIES_ID].to_list())
    fleet = ForecasterFleet(forecaster, ids)
    ranked = new.with_columns(pl.col(TIMESTAMP).rank("dense").over(SERIES_ID).alias("_step"))
    for (_,), rows in ranked.sort("_step").group_by("_step", maintain_order=True):
        fleet.update(*_row_arrays(rows, ids, fleet.channels_))
    fleet.write_back()
    return f"fleet: {len(ids)} series x {counts['n'][0]} steps"


def _row_arrays(rows: pl.DataFrame, ids: list[str], channels: list[str]
                ) -> tuple[np.ndarray, np.ndarray]:
    """(S,) timestamps and (S, F) values of one row per series (NaN = unobserved)."""
    order = pl.DataFrame({SERIES_ID: ids})
    stamps = order.join(rows.group_by(SERIES_ID).agg(pl.col(TIMESTAMP).first()),
                        on=SERIES_ID, how="left")
    wide = order.join(rows.pivot(on=CHANNEL, index=SERIES_ID, values=VALUE),
                      on=SERIES_ID, how="left")
    values = np.column_stack([wide[c].cast(pl.Float64).fill_null(np.nan).to_numpy()
                              if c in wide.columns else np.full(len(ids), np.nan)
                              for c in channels])
    return (stamps[TIMESTAMP].dt.replace_time_zone(None).to_numpy().astype("datetime64[us]"),
            values)


def interval_method(config: Any) -> str:
    """How a forecaster config calibrates its bands: ``interval.method`` of a composed
    config, ``"model"`` for one without intervals."""
    interval = getattr(config, "interval", "model")
    return getattr(interval, "method", interval)
