"""The detect step of the flows: advance each group's champions over the rows that
arrived after the watermark, write forecasts, scores and events, and monitor live error and
input drift.

Plain functions (no Prefect); ``recurra.pipelines.flows`` wraps :func:`detect_group`.
The advanced state of each champion is cached in ``<RECURRA_HOME>/state/<model>/v<version>``
so a stateful forecaster or detector continues from where it stopped.

Size: over 400 lines because one run's commit order (outputs, then each state with what it
consumed and the live tests' state, then the watermarks) and the helpers that read those
commits back must stay side by side to be checked together.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recurra.data.schema import (
    CHANNEL,
    CONTRIBUTION_PREFIX,
    END,
    EVENT_SCHEMA,
    IS_ANOMALY,
    SCORE,
    SERIES_ID,
    START,
    TIMESTAMP,
    VALUE,
)
from recurra.nn.persistence import (
    META_FILE,
    TREE_FILE,
    load_estimator,
    save_estimator,
    saved_extra,
    saved_folder,
)
from recurra.pipelines import incremental, monitoring, runs
from recurra.pipelines.config import GroupConfig, PipelineConfig
from recurra.pipelines.runs import _metric_key, group_series

FORECAST_KEY = (SERIES_ID, CHANNEL, "issued_at", TIMESTAMP)
SCORE_KEY = (SERIES_ID, TIMESTAMP)
EVENT_KEY = (SERIES_ID, "start", "kind")
MAX_SERIES_METRICS = 50  # per-series live MAE logged to MLflow: the worst 50 (+ the mean)
REFERENCE_CHUNK = 1000  # series per read when a champion's drift reference is built
REFERENCE_FORMAT = "s3"   # the cached reference's layout: values, choice and test statistics



def detect_group(group: GroupConfig, config: PipelineConfig, store: Any,
                 run_id: str) -> dict[str, Any]:
    """Score the rows that arrived since the last run with the group's champions.

    Reads only the rows after each series' watermark and the forecasts they resolve
    (``recurra.pipelines.incremental``), advances the champions with fleets (one array call per
    time step for all series; per-series ``update`` only where a model cannot be batched,
    named in ``out["paths"]``), writes forecasts, scores, events, live metrics and
    watermarks, runs the drift test and returns ``{"group", "new_rows", "events",
    "retrain", "reasons", "watch", "live", "chunks", "steps", "paths"}`` (``watch``: the
    series whose live accuracy test fired, :class:`monitoring.RetrainDecision`).  A backlog
    (missed runs) is processed in time order in chunks of ``monitoring.catch_up_steps`` rows
    per series; ``steps`` counts the new timestamps (one per run when on time).

    Order, so that a run killed at any point is repaired by the next one: the outputs
    (upserts by key, so a rerun writes the same rows), then each model's state together with
    the last timestamp it consumed per series (one commit, ``save_estimator(extra=...)``),
    then the ``watermarks`` table.  A model whose saved state is past the watermarks (a
    crash before they were written) skips the rows it has already consumed.
    """
    tracker = runs.registry_backend()
    ids = group_series(config, store).get(group.name, [])
    out: dict[str, Any] = {"group": group.name, "new_rows": 0, "events": 0,
                           "retrain": False, "reasons": [], "watch": [], "live": {}, "chunks": 0,
                           "steps": 0, "paths": []}
    champions = {role: _champion_version(tracker, group.model_name(role))
                 for role in ("forecaster", "detector") if getattr(group, role)}
    champions = {role: found for role, found in champions.items() if found is not None}
    if not ids or not champions:
        out["reasons"] = [] if champions else ["no champion registered yet"]
        return out
    version = "-".join(f"{role}-v{found[1]}" for role, found in sorted(champions.items()))
    ends = _training_ends(store, [(group.model_name(role), str(found[1]))
                                  for role, found in champions.items()])  # read once a run
    marks = _watermarks(store, group, ids, version, ends)
    models = {role: _cached(role, group, found, tracker) for role, found in champions.items()}
    extras = {role: saved_extra(folder) for role, (_, folder) in models.items()}  # once
    consumed = {role: _consumed(extras[role], marks) for role in models}
    monitor = (_monitor_state(extras["forecaster"], models["forecaster"][1])
               if "forecaster" in models else None)
    reached: dict[str, Any] = {}
    while True:
        lower = {sid: min((c[sid] for c in consumed.values()), key=_order)
                 for sid in ids}
        new = incremental.new_rows(store, ids, lower, config.monitoring.catch_up_steps)
        if new.is_empty():
            break
        out["chunks"] += 1
        out["new_rows"] += new.height
        out["steps"] += new[TIMESTAMP].n_unique()
        rows = {role: _unseen(new, consumed[role], lower) for role in models}
        if "forecaster" in models and rows["forecaster"].height:
            live, path = _forecast_step(group, config, store, rows["forecaster"], run_id,
                                        champions["forecaster"], models["forecaster"][0],
                                        consumed["forecaster"], monitor)
            out["live"].update(live)
            out["paths"].append(f"forecaster {path}")
        if "detector" in models and rows["detector"].height:
            events, path = _detect_step(store, rows["detector"], run_id,
                                        models["detector"][0])
            out["events"] += events
            out["paths"].append(f"detector {path}")
        last = new.group_by(SERIES_ID).agg(pl.col(TIMESTAMP).max())
        last = dict(zip(last[SERIES_ID].to_list(), last[TIMESTAMP].to_list(), strict=True))
        reached.update(last)
        for marks_of in consumed.values():
            marks_of.update({sid: max(stamp, marks_of[sid], key=_order)
                             for sid, stamp in last.items()})
        if new.group_by(SERIES_ID).agg(pl.col(TIMESTAMP).n_unique())[TIMESTAMP].max() \
                < config.monitoring.catch_up_steps:
            break  # a short chunk: nothing more has arrived
    if not out["chunks"]:  # nothing arrived: the models are as saved
        for estimator, folder in models.values():
            _keep(folder, estimator)
        return out
    for role, (estimator, folder) in models.items():  # the state and what it consumed
        extra: dict[str, Any] = {"consumed": {sid: stamp.isoformat() for sid, stamp
                                              in consumed[role].items() if stamp is not None}}
        if role == "forecaster" and monitor is not None:
            extra["monitor"] = monitor
        save_estimator(estimator, folder, extra=extra)
        _keep(folder, estimator)
    _write_watermarks(store, group, reached, version)  # last: a record of the commits
    _log_paths(group, out["paths"])
    history = (_live_history(store, group, config.monitoring.consecutive_runs)
               if monitor is None else _monitor_frame(group, monitor))
    decision = monitoring.retrain_decision(
        group.name, history, _drift(group, config, store, ends, champions),
        config.monitoring)
    out["retrain"], out["reasons"] = decision.retrain, list(decision.reasons)
    out["watch"] = list(decision.watch)
    return out


def _log_paths(group: GroupConfig, paths: list[str]) -> None:
    """Say which series went through a fleet and which fell back to per-series updates."""
    import logging

    for path in dict.fromkeys(paths):
        logging.getLogger("recurra.detect").info("group %r: %s", group.name, path)


def _champion_version(tracker: Any, name: str) -> tuple[Any, str] | None:
    """``(None, version)`` of the champion (the model is loaded only when no cached state
    exists, see :func:`_cached`); ``(estimator, version)`` from a registry without
    ``champion_version``."""
    if hasattr(tracker, "champion_version"):
        version = tracker.champion_version(name)
        return None if version is None else (None, version)
    return tracker.champion(name)


def _cached(role: str, group: GroupConfig, champion: tuple[Any, str],
            tracker: Any = None) -> tuple[Any, Path]:
    """The champion with its state as the last run left it (cached per version), and the
    cache folder; a new champion version starts from its registered state.

    A process that runs detect more than once (the demo, a notebook, a test) keeps the
    estimator it saved last in memory (:func:`_keep`) and reuses it while the folder on disk
    is still the one it wrote.  A served flow run is a new process (Prefect's runner starts
    one per run), so it loads the folder.  The entry is taken out while a
    run uses it, so a run that fails half-way leaves nothing behind: the next run reloads
    the folder."""
    estimator, version = champion
    folder = runs.state_dir() / group.model_name(role) / f"v{version}"
    with _KEPT_LOCK:
        kept = _KEPT.pop(folder, None)
    stamp = _stamp(folder)
    if kept is not None and stamp is not None and kept[0] == stamp:
        return kept[1], folder
    if stamp is not None:
        estimator = load_estimator(folder)
    elif estimator is None:
        estimator = tracker.champion(group.model_name(role))[0]
    return estimator, folder


_KEPT: dict[Path, tuple[tuple[int, int, int], Any]] = {}  # folder -> (stamp, estimator)
_KEPT_LOCK = threading.Lock()


def _stamp(folder: Path) -> tuple[int, int, int] | None:
    """(inode, mtime ns, size) of the saved model's ``state.json`` (``meta.json`` for a
    folder of formats 1 and 2); None when absent.  Every save replaces that file (a new
    inode), so an older or foreign save never matches."""
    found = saved_folder(folder)
    if found is None:
        return None
    for name in (TREE_FILE, META_FILE):
        try:
            info = (found / name).stat()
        except OSError:
            continue
        return info.st_ino, info.st_mtime_ns, info.st_size
    return None


def _keep(folder: Path, estimator: Any) -> None:
    """Remember ``estimator`` as the state just saved to ``folder`` (see :func:`_cached`)."""
    stamp = _stamp(folder)
    if stamp is not None:
        with _KEPT_LOCK:
            _KEPT[folder] = (stamp, estimator)


def _forecast_step(group: GroupConfig, config: PipelineConfig, store: Any, new: pl.DataFrame,
                   run_id: str, champion: tuple[Any, str], forecaster: Any,
                   marks: dict[str, Any], monitor: dict[str, dict[str, Any]] | None = None
                   ) -> tuple[dict[str, float], str]:
    """Score the open forecasts the new rows resolve, advance the state, issue new
    forecasts; returns the live MAE per series and the path the state advanced by."""
    ids = new[SERIES_ID].unique().to_list()
    known = [marks.get(sid) for sid in ids]
    start = min(known) if known and all(m is not None for m in known) else None
    stored = incremental.open_forecasts(store, ids, start, new[TIMESTAMP].max())
    if stored.is_empty():  # first run of a champion: the forecast from its registered state
        stored = forecaster.predict()
    live = _score_live(group, config, store, stored, new, run_id, champion, monitor)
    forecasts, path = incremental.advance_forecaster(forecaster, new)
    now = dt.datetime.now(dt.UTC)
    forecasts = forecasts.with_columns(
        pl.lit(now).alias("issued_at"), pl.lit(run_id).alias("run_id"),
        pl.lit(f"{group.model_name('forecaster')}/v{champion[1]}").alias("model"))
    store.write_table("forecasts", forecasts, key=FORECAST_KEY)
    return live, path


def _detect_step(store: Any, new: pl.DataFrame, run_id: str, detector: Any
                 ) -> tuple[int, str]:
    """Stream the new rows through the detector; write scores and events; count events."""
    scores, path = incremental.advance_detector(detector, new)
    scores = scores.with_columns(pl.lit(run_id).alias("run_id"))
    store.write_table("scores", scores, key=SCORE_KEY)
    events = events_from_scores(scores)
    if events.height:
        store.write_table("events", events.with_columns(pl.lit(run_id).alias("run_id")),
                          key=EVENT_KEY)
    return events.height, path


def _score_live(group: GroupConfig, config: PipelineConfig, store: Any,
                forecasts: pl.DataFrame, new: pl.DataFrame, run_id: str,
                champion: tuple[Any, str], monitor: dict[str, dict[str, Any]] | None = None
                ) -> dict[str, float]:
    """Live MAE / coverage of ``forecasts`` on ``new`` rows, vs the reference MAE.

    ``monitor``: the live tests' state per series (``cusum``, ``above_runs``), carried with
    the forecaster's saved state and updated here; None for a state saved before it was
    (the latest ``live_metrics`` rows continue the CUSUM then)."""
    errors = monitoring.live_errors(forecasts, new)
    trainings = store.read_table("trainings")
    reference: dict[str, float] = {}
    if not trainings.is_empty():
        match = trainings.filter((pl.col("model_name") == group.model_name("forecaster"))
                                 & (pl.col("version") == str(champion[1])))
        if match.height:  # the one-step replay's MAE; the folds' for older trainings
            reference = json.loads(match["validation_mae"][0])
            if "reference_mae" in match.columns and match["reference_mae"][0]:
                reference.update(json.loads(match["reference_mae"][0]))
    if monitor is None:
        previous = _live_history(store, group, 1, before_run=run_id)
        cusum = (dict(zip(previous[SERIES_ID].to_list(), previous["cusum"].to_list(),
                          strict=True)) if "cusum" in previous.columns else {})
    else:
        cusum = monitor["cusum"]
    rows = monitoring.live_rows(errors, reference, run_id, group.name,
                                config.monitoring.error_margin, previous_cusum=cusum)
    if monitor is not None and rows.height:
        above = monitor["above_runs"]
        for sid, value, is_above in rows.select(SERIES_ID, "cusum", "above_margin").iter_rows():
            if value is not None and np.isfinite(value):  # state.json holds no NaN
                cusum[sid] = value
            above[sid] = above.get(sid, 0) + 1 if is_above else 0
    if rows.height:
        store.write_table("live_metrics", rows, key=monitoring.LIVE_METRICS_KEY)
        worst = rows.sort("mae", descending=True, nulls_last=True).head(MAX_SERIES_METRICS)
        runs.registry_backend().log_metrics(group.name, "monitor", {  # bounded for big fleets
            "live_mae": float(rows["mae"].mean()),
            **{_metric_key("live_mae", r[SERIES_ID]): r["mae"]
               for r in worst.iter_rows(named=True)}})
    return {r[SERIES_ID]: r["mae"] for r in rows.iter_rows(named=True)}


def _drift(group: GroupConfig, config: PipelineConfig, store: Any,
           ends: dict[str, dt.datetime], champions: dict[str, tuple[Any, str]]
           ) -> list[monitoring.DriftResult]:
    """Drift of the latest rows after each series' training end against its training
    window: the reference (the last ``drift_reference_rows`` of the training window) is read
    once per champion version and cached with its statistics (``monitoring.drift_inputs``;
    a cache of an older format is built again); each run reads only the recent window.
    ``ends``: each series' training end under the champions (:func:`_training_ends`)."""
    if not ends:
        return []
    role, (_, version) = sorted(champions.items())[0]
    cache = runs.state_dir() / group.model_name(role) / \
        f"v{version}-{REFERENCE_FORMAT}-drift-reference.parquet"
    if cache.is_file():   # scanned: the reference values are read only if a pair needs them
        reference = pl.scan_parquet(cache)
    else:  # by chunks of series: a 10,000-series training window at once is gigabytes
        ids = sorted(ends)
        reference = pl.concat([monitoring.drift_inputs(incremental.reference_rows(
            store, part, {sid: ends[sid] for sid in part},
            config.monitoring.drift_reference_rows), group.drift_on,
            config.monitoring.drift_window)
            for part in (ids[at:at + REFERENCE_CHUNK]
                         for at in range(0, len(ids), REFERENCE_CHUNK))])
        cache.parent.mkdir(parents=True, exist_ok=True)
        partial = cache.with_name(f"{cache.name}.{os.getpid()}.partial")
        reference.write_parquet(partial)
        os.replace(partial, cache)   # a run killed while writing leaves no truncated cache
    recent = incremental.recent_rows(store, list(ends), ends, config.monitoring.drift_window)
    return monitoring.drift_by_series(reference, recent, config.monitoring, on=group.drift_on)


def _monitor_state(extra: dict[str, Any], folder: Path) -> dict[str, dict[str, Any]] | None:
    """The live tests' state the forecaster's last save committed (``{"cusum": {series:
    statistic}, "above_runs": {series: runs}}``); a fresh one for a champion's first run;
    None for a state saved before the monitor state was kept with it (``extra``: what the
    save in ``folder`` committed with the state)."""
    if "monitor" in extra:
        return {"cusum": dict(extra["monitor"].get("cusum", {})),
                "above_runs": dict(extra["monitor"].get("above_runs", {}))}
    return None if saved_folder(folder) is not None else {"cusum": {}, "above_runs": {}}


def _monitor_frame(group: GroupConfig, monitor: dict[str, dict[str, Any]]) -> pl.DataFrame:
    """One row per monitored series (what :func:`monitoring.retrain_decision` takes)."""
    ids = sorted(monitor["cusum"])
    return pl.DataFrame({SERIES_ID: ids, "group": [group.name] * len(ids),
                         "evaluated_at": [dt.datetime.now(dt.UTC)] * len(ids),
                         "cusum": [monitor["cusum"][sid] for sid in ids],
                         "above_runs": [monitor["above_runs"].get(sid, 0) for sid in ids]},
                        schema={SERIES_ID: pl.Utf8, "group": pl.Utf8,
                                "evaluated_at": pl.Datetime("us", "UTC"),
                                "cusum": pl.Float64, "above_runs": pl.Int64})


def _live_history(store: Any, group: GroupConfig, n_runs: int,
                  before_run: str | None = None) -> pl.DataFrame:
    """The latest ``n_runs`` ``live_metrics`` rows per series of ``group`` (a bounded scan
    pushed into the store, not the whole table); ``before_run``: without that run's own
    rows (a retried run continues the CUSUM from the run before, not from its first try)."""
    lazy = store.scan_table("live_metrics")
    if lazy is None:
        return pl.DataFrame()
    if before_run is not None:
        lazy = lazy.filter(pl.col("run_id") != before_run)
    return (lazy.filter(pl.col("group") == group.name).sort("evaluated_at")
            .group_by(SERIES_ID, maintain_order=True).tail(n_runs).collect())


def _watermarks(store: Any, group: GroupConfig, ids: list[str], version: str,
                ends: dict[str, dt.datetime]) -> dict[str, dt.datetime | None]:
    """Last consumed timestamp per series for this set of champion versions; for a new set,
    each series' training end under those versions (their state stops there)."""
    lazy = store.scan_table("watermarks")
    marks: dict[str, dt.datetime] = {}
    if lazy is not None:
        mine = lazy.filter((pl.col("group") == group.name)
                           & (pl.col("version") == version)).collect()
        marks = dict(zip(mine[SERIES_ID].to_list(), mine["watermark"].to_list(), strict=True))
    return {sid: marks.get(sid, ends.get(sid)) for sid in ids}


def _training_ends(store: Any, versions: list[tuple[str, str]]) -> dict[str, dt.datetime]:
    """Per series, the earliest training end among the given (model name, version)s."""
    trainings = store.read_table("trainings")
    ends: dict[str, dt.datetime] = {}
    if trainings.is_empty():
        return ends
    match = trainings.filter(pl.struct("model_name", "version").is_in(
        [{"model_name": n, "version": v} for n, v in versions]))
    for text in match["series_until"].to_list():
        for sid, stamp in json.loads(text).items():
            value = dt.datetime.fromisoformat(stamp)
            ends[sid] = min(ends.get(sid, value), value)
    return ends


def _write_watermarks(store: Any, group: GroupConfig, reached: dict[str, Any],
                      version: str) -> None:
    marks = pl.DataFrame({SERIES_ID: list(reached), "watermark": list(reached.values())},
                         schema={SERIES_ID: pl.Utf8, "watermark": pl.Datetime("us", "UTC")})
    marks = marks.with_columns(pl.lit(group.name).alias("group"), pl.lit(version).alias("version"),
                               pl.lit(dt.datetime.now(dt.UTC)).alias("updated_at"))
    store.write_table("watermarks", marks, key=(SERIES_ID, "group", "version"))


def _consumed(extra: dict[str, Any], marks: dict[str, Any]) -> dict[str, Any]:
    """Per series, the last timestamp a saved model has consumed: what its last save
    committed with the state (``extra``), or the watermark when that is later or absent."""
    saved = extra.get("consumed", {})
    out = dict(marks)
    for sid, text in saved.items():
        if sid in out:
            out[sid] = max(out[sid], dt.datetime.fromisoformat(text), key=_order)
    return out


def _order(stamp: Any) -> tuple[bool, Any]:
    """Sort key putting None (nothing consumed) before every timestamp."""
    return (stamp is not None, stamp)


def _unseen(new: pl.DataFrame, consumed: dict[str, Any], lower: dict[str, Any]
            ) -> pl.DataFrame:
    """The rows of ``new`` after what a model has consumed (all of them when the model is
    where the read started, the usual case)."""
    if all(consumed[sid] == lower[sid] for sid in lower):
        return new
    return incremental.cut(new, consumed, after=True)


def events_from_scores(scores: pl.DataFrame, min_share: float = 0.2) -> pl.DataFrame:
    """Runs of consecutive ``is_anomaly`` rows per series become ``anomaly`` events; an
    event names the channels whose mean ``contribution_<channel>`` is at least ``min_share``
    (``["value"]`` when the scores carry no contributions)."""
    if scores.is_empty() or IS_ANOMALY not in scores.columns:
        return pl.DataFrame(schema=EVENT_SCHEMA)
    shares = [c for c in scores.columns if c.startswith(CONTRIBUTION_PREFIX)]
    ordered = scores.sort([SERIES_ID, TIMESTAMP]).with_columns(
        (pl.col(IS_ANOMALY) != pl.col(IS_ANOMALY).shift(1).over(SERIES_ID))
        .fill_null(True).cum_sum().over(SERIES_ID).alias("_run"))
    events = (ordered.filter(pl.col(IS_ANOMALY))
              .group_by([SERIES_ID, "_run"], maintain_order=True)
              .agg(pl.col(TIMESTAMP).min().alias(START), pl.col(TIMESTAMP).max().alias(END),
                   pl.col(SCORE).max().alias("peak_score"),
                   *[pl.col(c).mean() for c in shares]))
    channels = [[c[len(CONTRIBUTION_PREFIX):] for c in shares if (row[c] or 0.0) >= min_share]
                or [VALUE] for row in events.iter_rows(named=True)]
    events = events.with_columns(pl.col("peak_score").alias("severity"),
                                 pl.Series("channels", channels, pl.List(pl.Utf8)),
                                 pl.lit("anomaly").alias("kind"))
    return events.select(list(EVENT_SCHEMA)).cast(EVENT_SCHEMA)


