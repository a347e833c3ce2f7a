"""What one ``detect`` run reads and how it advances the models: bounded, batched.

``recurra.pipelines.tasks.detect_group`` calls these plain functions (no Prefect, no MLflow):

- :func:`new_rows`: the rows after each series' watermark, with the lower bound (the oldest
  watermark) and, for a catch-up, an upper bound pushed into the store's read, so a run
  costs what arrived, not how long the system has run.  ``max_steps`` caps a chunk of the
  backlog (the upper bound comes from the catalogue's frequency; an irregular series is
  capped after the read).
- :func:`open_forecasts`: the forecasts that the new rows can resolve (target timestamps
  in ``(start, end]``), a filtered lazy scan of the ``forecasts`` table, not its history.
- :func:`advance_detector` / :func:`advance_forecaster`: ``detector.update(new)`` /
  ``forecaster.update(new)``, the estimators' one batched streaming path (a detector steps
  all series with the same number of new rows through its fleet, one array call per row,
  :mod:`recurra.anomaly.fleet`; a stateful ``RNNForecaster`` with model/conformal
  intervals does the same with :mod:`recurra.forecasting.fleet`).  Each returns what the
  update produced (the scores / the next forecast) and the path it took
  (``last_update_path_``) so the run can log it.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import polars as pl

from recurra.data.schema import CHANNEL, SERIES_ID, TIMESTAMP


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


def reference_rows(store: Any, ids: list[str], ends: dict[str, Any], n_rows: int
                   ) -> pl.DataFrame:
    """The last ``n_rows`` rows per series and channel up to each series' training end
    (``ends``); the read starts ``n_rows`` spacings before the earliest end when the
    catalogue gives every series a fixed spacing (not at the start of the history)."""
    if not ends:
        return store.read(series_ids=[])
    start = _upper_bound(store, ids, min(ends.values()), -n_rows)
    frame = cut(store.read(series_ids=ids, start=start, end=max(ends.values())), ends,
                after=False)
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
    """Score ``new`` rows with ``detector``'s carried state: ``detector.update(new)``.

    Returns the score frame (``SCORE_SCHEMA`` + contributions) and the path it took
    (``detector.last_update_path_``: ``"fleet: N series x K steps"`` per group of series with
    the same number of new rows, ``"update: M series (why)"`` for the per-series path).
    """
    scores = detector.update(new)
    return scores, getattr(detector, "last_update_path_", None) or "update"


def advance_forecaster(forecaster: Any, new: pl.DataFrame) -> tuple[pl.DataFrame, str]:
    """Advance ``forecaster``'s state with ``new`` rows: ``forecaster.update(new)``.

    Returns the forecast from the end of the new rows (what ``predict()`` gives right after)
    and the path taken (an ``RNNForecaster``'s ``last_update_path_``: ``"fleet: N series x
    K steps"`` or ``"update (why)"``; ``"update"`` for the other forecasters).
    """
    forecast = forecaster.update(new)
    return forecast, getattr(forecaster, "last_update_path_", None) or "update"


def interval_method(config: Any) -> str:
    """How a forecaster config calibrates its bands: ``interval.method`` of a composed
    config, ``"model"`` for one without intervals."""
    interval = getattr(config, "interval", "model")
    return getattr(interval, "method", interval)
