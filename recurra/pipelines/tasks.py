"""Plain functions the Prefect flows wrap: ingest, train, detect, backtest, report.

Nothing here imports Prefect, so every step runs (and is tested) without an orchestrator;
``recurra.pipelines.flows`` adds retries, caching, concurrency and the task runner.

State kept in the store (``recurra.data.store.Store`` result tables):

- ``forecasts``, ``scores``, ``events``: what ``detect`` produced.
- ``runs``: one summary row per flow run (:data:`RUN_COLUMNS`).
- ``watermarks``: per series, the last timestamp ``detect`` has consumed and the champion
  version whose state was advanced to it (so the next run reads only newer rows).
- ``trainings``: per registered model version, the training end and the validation MAE per
  series (the reference of the live-error monitor).
- ``live_metrics``: live MAE / coverage per series per detect run.
- ``backtests``: the latest backtest summary per group, series and channel.

The advanced state of each champion is cached in ``<RECURRA_HOME>/state/<model>/v<version>``
so a stateful forecaster or detector continues from where it stopped, never re-reading history.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
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
    RecurraError,
)
from recurra.nn.persistence import load_estimator, save_estimator
from recurra.pipelines import gate_data, incremental, monitoring
from recurra.pipelines.config import GroupConfig, PipelineConfig
from recurra.pipelines.mlflow_registry import MlflowRegistry
from recurra.pipelines.series_guard import exclude_unstable_series

RUN_COLUMNS = ("run_id", "flow", "started_at", "finished_at", "status", "rows_ingested",
               "rows_quarantined", "series_trained", "events_found", "message")
FORECAST_KEY = (SERIES_ID, CHANNEL, "issued_at", TIMESTAMP)
SCORE_KEY = (SERIES_ID, TIMESTAMP)
EVENT_KEY = (SERIES_ID, "start", "kind")
MAX_SERIES_METRICS = 50  # per-series live MAE logged to MLflow: the worst 50 (+ the mean)


@dataclass
class RunSummary:
    """One row of the ``runs`` table; flows fill it as they go and record it at the end."""

    flow: str
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:12])
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    finished_at: dt.datetime | None = None
    status: str = "running"
    rows_ingested: int = 0
    rows_quarantined: int = 0
    series_trained: int = 0
    events_found: int = 0
    messages: list[str] = field(default_factory=list)

    def finish(self, failures: list[str] | None = None) -> RunSummary:
        """Set ``finished_at`` and the status (``"partial"`` when some groups failed)."""
        self.finished_at = dt.datetime.now(dt.UTC)
        if failures:
            self.messages.extend(failures)
        self.status = "partial" if failures else "completed"
        return self

    def row(self) -> dict[str, Any]:
        values = asdict(self)
        values["message"] = "; ".join(values.pop("messages"))
        return {name: values[name] for name in RUN_COLUMNS}


def record_run(store: Any, summary: RunSummary) -> None:
    """Upsert the run's summary into the ``runs`` table (keyed by run_id)."""
    store.write_table("runs", pl.DataFrame([summary.row()]), key=("run_id",))


@contextlib.contextmanager
def recorded(store: Any, summary: RunSummary) -> Iterator[RunSummary]:
    """Record a run whose body raises as ``failed`` (with the error), then re-raise."""
    try:
        yield summary
    except Exception as error:
        summary.finish([f"{type(error).__name__}: {error}"])
        summary.status = "failed"
        record_run(store, summary)
        raise


def open_store(root: str | Path | None = None) -> Any:
    from recurra.data.store import Store

    return Store(root)


# Ingest ------------------------------------------------------------------------------------
def source_specs(config: PipelineConfig) -> dict[str, list[Any]]:
    """The ``recurra.data.ingest.SourceSpec``s of each configured source (the sample is three)."""
    from recurra.data.ingest import SourceSpec, sample_sources

    return {source.name: (sample_sources() if source.kind == "sample"
                          else [SourceSpec(source.kind, source.path, dict(source.options))])
            for source in config.sources}


def ingest_counts(report: Any) -> dict[str, dict[str, int]]:
    """Rows kept, new and quarantined per loaded source of a
    ``recurra.data.ingest.IngestReport``."""
    counts: dict[str, dict[str, int]] = {}
    for item in report.sources:
        name = f"{item.kind}: {Path(item.path).name}"
        counts[name] = {"rows": item.n_rows_kept, "new": item.n_new,
                        "quarantined": item.n_quarantined}
    return counts


def group_series(config: PipelineConfig, store: Any) -> dict[str, list[str]]:
    """Series ids of each group (a series belongs to the first group that matches it)."""
    members: dict[str, list[str]] = {name: [] for name in config.groups}
    for series_id in store.series_ids():
        group = config.group_of(series_id)
        if group is not None:
            members[group.name].append(series_id)
    return {name: ids for name, ids in members.items() if ids}


# Train -------------------------------------------------------------------------------------
def split_by_time(frame: pl.DataFrame, share: float) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Per series, the first ``1 - share`` of its timestamps for training, the rest after.

    >>> from tests.conftest import make_frame
    >>> train, rest = split_by_time(make_frame(n_series=1, n_steps=10), 0.2)
    >>> train.height, rest.height
    (8, 2)
    """
    rank = pl.col(TIMESTAMP).rank("dense").over(SERIES_ID)
    count = pl.col(TIMESTAMP).n_unique().over(SERIES_ID)
    cut = (count * (1.0 - share)).floor()
    marked = frame.with_columns((rank <= cut).alias("_train"))
    train = marked.filter(pl.col("_train")).drop("_train")
    return train, marked.filter(~pl.col("_train")).drop("_train")


def validate_forecaster(forecaster: Any, history: pl.DataFrame, rest: pl.DataFrame,
                        horizon: int, max_folds: int, context: int = 1024) -> dict[str, float]:
    """Rolling-origin validation on the rows after training; MAE per series.

    Fold ``k`` of a series is its ``k``-th block of ``horizon`` timestamps after training
    (at most ``max_folds``); its origin is the block's first timestamp.  The forecaster
    predicts from the last ``context`` rows before each series' origin (``predict(frame=...)``
    leaves its own state alone) and is scored on the block.  The same folds score a new
    model and the champion, so the gate compares like with like.
    """
    errors: dict[str, list[np.ndarray]] = {}
    ranked = rest.with_columns(
        (pl.col(TIMESTAMP).rank("dense").over(SERIES_ID) - 1).floordiv(horizon).alias("_fold"))
    frame = pl.concat([history, rest], how="vertical_relaxed")
    for fold in range(max_folds):
        chunk = ranked.filter(pl.col("_fold") == fold).drop("_fold")
        if chunk.is_empty():
            break
        origins = chunk.group_by(SERIES_ID).agg(pl.col(TIMESTAMP).min().alias("_origin"))
        past = (frame.join(origins, on=SERIES_ID).filter(pl.col(TIMESTAMP) < pl.col("_origin"))
                .drop("_origin").group_by([SERIES_ID, CHANNEL], maintain_order=True)
                .tail(context).sort([SERIES_ID, CHANNEL, TIMESTAMP]))
        forecast = forecaster.predict(frame=past, horizon=horizon)
        resolved = monitoring.live_errors(forecast.drop("issued_at", strict=False), chunk)
        for row in resolved.iter_rows(named=True):
            errors.setdefault(row[SERIES_ID], []).append(np.repeat(row["mae"], row["n_points"]))
    return {sid: float(np.concatenate(parts).mean()) for sid, parts in errors.items()}


def fit_forecaster(forecaster: Any, train: pl.DataFrame, rest: pl.DataFrame) -> Any:
    """Fit ``forecaster`` on ``train``; ``rest`` is also its validation frame when it uses one:
    a forecaster trained by the shared loop (``validation_monitors = True``, e.g.
    ``RNNForecaster``) early-stops on it and reports its per-epoch ``val_loss`` (tracked as a
    metric history); one whose intervals are calibrated on held-out data
    (``interval="conformal"`` or ``"adaptive"``) calibrates on it. The gate still scores it on
    ``rest``."""
    if getattr(getattr(forecaster, "config", None), "interval", "model") == "model":
        if getattr(forecaster, "validation_monitors", False) and not rest.is_empty():
            return forecaster.fit(train, validation=rest)
        return forecaster.fit(train)
    if rest.is_empty():
        raise RecurraError(f"{type(forecaster).__name__} with interval="
                           f"{forecaster.config.interval!r} needs validation rows; "
                           "training.validation_share leaves none")
    return forecaster.fit(train, validation=rest)


def _left_out(estimator: Any, role: str) -> list[str]:
    """Messages for the series the estimator itself left out of its fit (``excluded_``)."""
    return [f"{role}: {reason} (left out of training)"
            for reason in (getattr(estimator, "excluded_", None) or {}).values()]


def train_group(group: GroupConfig, config: PipelineConfig, store: Any,
                until: dt.datetime | None = None, reason: str = "",
                holdout_rows: int = 0) -> dict[str, Any]:
    """Fit, validate, log, register and gate the forecaster and detector of one group.

    Both are fitted on the first ``1 - validation_share`` of each series, scored on the rest
    (the champion too, on the same rows), then advanced through the rest with ``update`` so
    the registered state ends at ``trained_until``.  The forecaster is gated on validation
    MAE (lower is better), the detector on the composite F1 of seeded anomalies injected into a
    copy of the rest (``recurra.pipelines.gate_data``; higher is better).  Returns a dict: group,
    series,
    trained_until, validation_mae (per series), and per role the registered name, version,
    whether the gate promoted it and why.  ``holdout_rows`` leaves the last rows of each
    series out (the demo scores them as new arrivals).
    """
    ids = group_series(config, store).get(group.name, [])
    # one snapshot: the series table version is logged with the model (time travel)
    version = store.version() if hasattr(store, "version") else None
    frame = store.read(series_ids=ids, end=until, **({"version": version} if version is not None
                                                      else {})) if ids else pl.DataFrame()
    if holdout_rows and frame.height:
        frame = frame.filter(pl.col(TIMESTAMP).rank("dense", descending=True).over(SERIES_ID)
                             > holdout_rows)
    frame, excluded = exclude_unstable_series(frame)
    if excluded and frame.is_empty():
        raise RecurraError(f"group {group.name!r}: every series left out: "
                           + "; ".join(excluded))
    if frame.height < config.training.min_rows:
        raise RecurraError(f"group {group.name!r}: {frame.height} rows in the store, "
                           f"training.min_rows is {config.training.min_rows}")
    train, rest = split_by_time(frame, config.training.validation_share)
    ends = frame.group_by(SERIES_ID).agg(pl.col(TIMESTAMP).max())
    trained_ids = [i for i in ids if i in set(frame[SERIES_ID].unique().to_list())]
    result: dict[str, Any] = {"group": group.name, "series": trained_ids, "reason": reason,
                              "trained_until": frame[TIMESTAMP].max().isoformat(),
                              "series_until": {r[SERIES_ID]: r[TIMESTAMP].isoformat()
                                               for r in ends.iter_rows(named=True)},
                              "models": {}, "validation_mae": {}, "excluded": excluded}
    backend = registry_backend()
    context = {"group": group.name, "reason": reason, "train_rows": train.height,
               "validation_rows": rest.height, "series_version": version}
    if group.forecaster:
        result["models"]["forecaster"], result["validation_mae"] = _train_forecaster(
            group, config, backend, train, rest, context, result["excluded"])
    if group.detector:
        result["models"]["detector"] = _train_detector(group, config, backend, train, rest,
                                                       context, result["excluded"])
    _record_training(store, group, result)
    return result


def _train_forecaster(group: GroupConfig, config: PipelineConfig, backend: Any,
                      train: pl.DataFrame, rest: pl.DataFrame, context: dict[str, Any],
                      excluded: list[str]) -> tuple[dict[str, Any], dict[str, float]]:
    """Fit the group's forecaster, validate it and the champion on the same rolling folds
    (MAE per series), advance it through the validation rows and register it; the series it
    left out of its fit are appended to ``excluded`` and not validated."""
    model = config.models[group.forecaster]
    forecaster = fit_forecaster(model.build(), train, rest)
    excluded.extend(_left_out(forecaster, "forecaster"))
    left_out = list(getattr(forecaster, "excluded_", None) or {})
    if left_out:
        train, rest = (f.filter(~pl.col(SERIES_ID).is_in(left_out)) for f in (train, rest))
    horizon = int(getattr(forecaster.config, "horizon", 24))
    folds = config.training.backtest_folds
    validation = validate_forecaster(forecaster, train, rest, horizon, folds)
    champion = backend.champion(group.model_name("forecaster"))
    champion_value = (_mean(validate_forecaster(champion[0], train, rest, horizon,
                                                folds).values()) if champion else None)
    if rest.height:
        forecaster.update(rest)
    info = backend.register(
        group.model_name("forecaster"), forecaster, metric="val_mae",
        value=_mean(validation.values()), champion_value=champion_value,
        params={**context, "model": model.name, "config": full_config(forecaster, model)},
        frame=train)
    return info, validation


def _train_detector(group: GroupConfig, config: PipelineConfig, backend: Any,
                    train: pl.DataFrame, rest: pl.DataFrame, context: dict[str, Any],
                    excluded: list[str]) -> dict[str, Any]:
    """Fit the group's detector, gate it against the champion on the same validation copy
    with injected anomalies (``recurra.pipelines.gate_data``; composite F1, higher is better),
    advance
    it through the real validation rows and register it; the series it left out of its fit
    are appended to ``excluded`` and dropped from its validation rows."""
    model = config.models[group.detector]
    detector = model.build().fit(train)
    excluded.extend(_left_out(detector, "detector"))
    left_out = list(getattr(detector, "excluded_", None) or {})
    if left_out:
        rest = rest.filter(~pl.col(SERIES_ID).is_in(left_out))
    injected, labels = gate_data.inject_anomalies(rest)
    champion = backend.champion(group.model_name("detector"))
    champion_value = (gate_data.gate_score(champion[0], injected, labels, train).composite_f1
                      if champion and rest.height else None)
    score = gate_data.gate_score(detector, injected, labels, train)
    if rest.height:
        detector.update(rest)
    return backend.register(
        group.model_name("detector"), detector, metric=gate_data.GATE_METRIC,
        value=score.composite_f1, champion_value=champion_value, higher_is_better=True,
        extra_metrics=score.metrics(),
        params={**context, "model": model.name, "config": full_config(detector, model),
                "gate_injected_anomalies": labels.height}, frame=train)


def full_config(estimator: Any, model: Any) -> dict[str, Any]:
    """Every field of the estimator's config (defaults included, not only the TOML keys),
    for tracking; ``model.params`` when the estimator has no dataclass config."""
    config = getattr(estimator, "config", None)
    if config is not None and dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return dict(model.params)


def _record_training(store: Any, group: GroupConfig, result: dict[str, Any]) -> None:
    rows = [{"model_name": info["name"], "version": str(info["version"]), "group": group.name,
             "role": role, "trained_until": dt.datetime.fromisoformat(result["trained_until"]),
             "validation_mae": json.dumps(result.get("validation_mae", {})),
             "series_until": json.dumps(result["series_until"]),
             "promoted": bool(info.get("promoted")), "reason": result.get("reason", ""),
             "trained_at": dt.datetime.now(dt.UTC)}
            for role, info in result["models"].items()]
    if rows:
        store.write_table("trainings", pl.DataFrame(rows), key=("model_name", "version"))


def _metric_key(prefix: str, series_id: str) -> str:
    """An MLflow-safe metric name: ``live_mae.nab/realTraffic/speed_6005``."""
    import re

    return f"{prefix}.{re.sub(r'[^A-Za-z0-9_./ -]', '_', series_id)}"


def _mean(values: Any) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


# Detect ------------------------------------------------------------------------------------
def detect_group(group: GroupConfig, config: PipelineConfig, store: Any,
                 run_id: str) -> dict[str, Any]:
    """Score the rows that arrived since the last run with the group's champions.

    Reads only the rows after each series' watermark and the forecasts they resolve
    (``recurra.pipelines.incremental``), advances the champions with fleets (one array call per
    time step for all series; per-series ``update`` only where a model cannot be batched,
    named in ``out["paths"]``), writes forecasts, scores, events, live metrics and
    watermarks, runs the drift test and returns ``{"group", "new_rows", "events",
    "retrain", "reasons", "live", "chunks", "steps", "paths"}``.  A backlog (missed runs)
    is processed in time order in chunks of ``monitoring.catch_up_steps`` rows per series;
    ``steps`` counts the new timestamps (one per run when on time).
    """
    tracker = registry_backend()
    ids = group_series(config, store).get(group.name, [])
    out: dict[str, Any] = {"group": group.name, "new_rows": 0, "events": 0,
                           "retrain": False, "reasons": [], "live": {}, "chunks": 0,
                           "steps": 0, "paths": []}
    champions = {role: _champion_version(tracker, group.model_name(role))
                 for role in ("forecaster", "detector") if getattr(group, role)}
    champions = {role: found for role, found in champions.items() if found is not None}
    if not ids or not champions:
        out["reasons"] = [] if champions else ["no champion registered yet"]
        return out
    version = "-".join(f"{role}-v{found[1]}" for role, found in sorted(champions.items()))
    marks = _watermarks(store, group, ids, version, champions)
    models = {role: _cached(role, group, found, tracker) for role, found in champions.items()}
    while True:
        new = incremental.new_rows(store, ids, marks, config.monitoring.catch_up_steps)
        if new.is_empty():
            break
        out["chunks"] += 1
        out["new_rows"] += new.height
        out["steps"] += new[TIMESTAMP].n_unique()
        if "forecaster" in models:
            live, path = _forecast_step(group, config, store, new, run_id,
                                        champions["forecaster"], models["forecaster"][0],
                                        marks)
            out["live"].update(live)
            out["paths"].append(f"forecaster {path}")
        if "detector" in models:
            events, path = _detect_step(store, new, run_id, models["detector"][0])
            out["events"] += events
            out["paths"].append(f"detector {path}")
        _write_watermarks(store, group, new, version)
        reached = new.group_by(SERIES_ID).agg(pl.col(TIMESTAMP).max())
        marks.update(dict(zip(reached[SERIES_ID].to_list(), reached[TIMESTAMP].to_list(),
                              strict=True)))
        if new.group_by(SERIES_ID).agg(pl.col(TIMESTAMP).n_unique())[TIMESTAMP].max() \
                < config.monitoring.catch_up_steps:
            break  # a short chunk: nothing more has arrived
    if not out["chunks"]:
        return out
    for estimator, folder in models.values():
        save_estimator(estimator, folder)
    _log_paths(group, out["paths"])
    decision = monitoring.retrain_decision(
        group.name, _live_history(store, group, config.monitoring.consecutive_runs),
        _drift(group, config, store, ids, champions), config.monitoring)
    out["retrain"], out["reasons"] = decision.retrain, list(decision.reasons)
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
    cache folder; a new champion version starts from its registered state."""
    estimator, version = champion
    folder = state_dir() / group.model_name(role) / f"v{version}"
    if (folder / "meta.json").is_file():
        estimator = load_estimator(folder)
    elif estimator is None:
        estimator = tracker.champion(group.model_name(role))[0]
    return estimator, folder


def _forecast_step(group: GroupConfig, config: PipelineConfig, store: Any, new: pl.DataFrame,
                   run_id: str, champion: tuple[Any, str], forecaster: Any,
                   marks: dict[str, Any]) -> tuple[dict[str, float], str]:
    """Score the open forecasts the new rows resolve, advance the state, issue new
    forecasts; returns the live MAE per series and the path the state advanced by."""
    ids = new[SERIES_ID].unique().to_list()
    known = [marks.get(sid) for sid in ids]
    start = min(known) if known and all(m is not None for m in known) else None
    stored = incremental.open_forecasts(store, ids, start, new[TIMESTAMP].max())
    if stored.is_empty():  # first run of a champion: the forecast from its registered state
        stored = forecaster.predict()
    live = _score_live(group, config, store, stored, new, run_id, champion)
    path = incremental.advance_forecaster(forecaster, new)
    now = dt.datetime.now(dt.UTC)
    forecasts = forecaster.predict().with_columns(
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
                champion: tuple[Any, str]) -> dict[str, float]:
    """Live MAE / coverage of ``forecasts`` on ``new`` rows, vs the validation MAE."""
    errors = monitoring.live_errors(forecasts, new)
    trainings = store.read_table("trainings")
    reference: dict[str, float] = {}
    if not trainings.is_empty():
        match = trainings.filter((pl.col("model_name") == group.model_name("forecaster"))
                                 & (pl.col("version") == str(champion[1])))
        if match.height:
            reference = json.loads(match["validation_mae"][0])
    previous = _live_history(store, group, 1)
    rows = monitoring.live_rows(
        errors, reference, run_id, group.name, config.monitoring.error_margin,
        previous_cusum=(dict(zip(previous[SERIES_ID].to_list(), previous["cusum"].to_list(),
                                 strict=True)) if "cusum" in previous.columns else {}))
    if rows.height:
        store.write_table("live_metrics", rows, key=monitoring.LIVE_METRICS_KEY)
        worst = rows.sort("mae", descending=True, nulls_last=True).head(MAX_SERIES_METRICS)
        registry_backend().log_metrics(group.name, "monitor", {  # bounded for big fleets
            "live_mae": float(rows["mae"].mean()),
            **{_metric_key("live_mae", r[SERIES_ID]): r["mae"]
               for r in worst.iter_rows(named=True)}})
    return {r[SERIES_ID]: r["mae"] for r in rows.iter_rows(named=True)}


def _drift(group: GroupConfig, config: PipelineConfig, store: Any, ids: list[str],
           champions: dict[str, tuple[Any, str]]) -> list[monitoring.DriftResult]:
    """Drift of the latest rows after each series' training end against its training
    window: the reference (the last ``drift_reference_rows`` of the training window) is read
    once per champion version and cached; each run reads only the recent window."""
    ends = _training_ends(store, [(group.model_name(role), str(found[1]))
                                  for role, found in champions.items()])
    if not ends:
        return []
    role, (_, version) = sorted(champions.items())[0]
    cache = state_dir() / group.model_name(role) / f"v{version}-drift-reference.parquet"
    if cache.is_file():
        reference = pl.read_parquet(cache)
    else:
        frame = store.read(series_ids=list(ends), end=max(ends.values()))
        reference = monitoring.drift_inputs(
            _cut(frame, ends, after=False).group_by([SERIES_ID, CHANNEL]).tail(
                config.monitoring.drift_reference_rows), group.drift_on)
        cache.parent.mkdir(parents=True, exist_ok=True)
        reference.write_parquet(cache)
    recent = incremental.recent_rows(store, list(ends), ends, config.monitoring.drift_window)
    return monitoring.drift_by_series(reference, recent, config.monitoring, on=group.drift_on)


def _live_history(store: Any, group: GroupConfig, n_runs: int) -> pl.DataFrame:
    """The latest ``n_runs`` ``live_metrics`` rows per series of ``group`` (a bounded scan
    pushed into the store, not the whole table)."""
    lazy = store.scan_table("live_metrics")
    if lazy is None:
        return pl.DataFrame()
    return (lazy.filter(pl.col("group") == group.name).sort("evaluated_at")
            .group_by(SERIES_ID, maintain_order=True).tail(n_runs).collect())


def _watermarks(store: Any, group: GroupConfig, ids: list[str], version: str,
                champions: dict[str, tuple[Any, str]]) -> dict[str, dt.datetime | None]:
    """Last consumed timestamp per series for this set of champion versions; for a new set,
    each series' training end under those versions (their state stops there)."""
    lazy = store.scan_table("watermarks")
    marks: dict[str, dt.datetime] = {}
    if lazy is not None:
        mine = lazy.filter((pl.col("group") == group.name)
                           & (pl.col("version") == version)).collect()
        marks = dict(zip(mine[SERIES_ID].to_list(), mine["watermark"].to_list(), strict=True))
    ends = _training_ends(store, [(group.model_name(role), str(found[1]))
                                  for role, found in champions.items()])
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


def _cut(frame: pl.DataFrame, marks: dict[str, Any], after: bool) -> pl.DataFrame:
    return incremental.cut(frame, marks, after)


def _write_watermarks(store: Any, group: GroupConfig, new: pl.DataFrame, version: str) -> None:
    marks = new.group_by(SERIES_ID).agg(pl.col(TIMESTAMP).max().alias("watermark"))
    marks = marks.with_columns(pl.lit(group.name).alias("group"), pl.lit(version).alias("version"),
                               pl.lit(dt.datetime.now(dt.UTC)).alias("updated_at"))
    store.write_table("watermarks", marks, key=(SERIES_ID, "group", "version"))


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


# Backtest, report --------------------------------------------------------------------------
def backtest_group(group: GroupConfig, config: PipelineConfig, store: Any) -> dict[str, Any]:
    """Rolling-origin backtest (``recurra.forecasting.backtest``) of a fresh forecaster of the
    group.

    ``training.backtest_folds`` origins, ``horizon`` apart, at the end of the group's time
    grid; fitted once, then advanced with ``update``.  The per-series / channel summary goes
    to the store's ``backtests`` table and the mean MAE per series to MLflow.
    """
    from recurra.forecasting.backtest import backtest

    ids = group_series(config, store).get(group.name, [])
    if not group.forecaster or not ids:
        return {"group": group.name, "mae": {}}
    model = config.models[group.forecaster]
    horizon = int(getattr(model.build().config, "horizon", 24))
    result = backtest(model.build, store.read(series_ids=ids),
                      n_origins=config.training.backtest_folds, horizon=horizon, stride=horizon)
    summary = result.summary().with_columns(
        pl.lit(group.name).alias("group"), pl.lit(model.name).alias("model"),
        pl.lit(dt.datetime.now(dt.UTC)).alias("evaluated_at"))
    store.write_table("backtests", summary, key=("group", SERIES_ID, CHANNEL))
    per_series = summary.group_by(SERIES_ID).agg(pl.col("mae").mean()).sort(SERIES_ID)
    mae = dict(zip(per_series[SERIES_ID].to_list(), per_series["mae"].to_list(), strict=True))
    registry_backend().log_metrics(group.name, "backtest",
                                   {"backtest_mae": _mean(mae.values()),
                                    **{_metric_key("mae", k): v for k, v in mae.items()}})
    return {"group": group.name, "mae": mae, "horizon": horizon}


def write_report(store: Any, output: str | Path | None = None,
                 run_id: str | None = None) -> Path:
    """The dashboard package's self-contained HTML report (``recurra.dashboards.report``)."""
    from recurra.dashboards.report import write_report as dashboard_report
    from recurra.data.paths import reports_dir

    path = Path(output) if output else reports_dir() / "recurra-report.html"
    return Path(dashboard_report(store, path, run_id=run_id, title="Recurra report"))


# Paths and the model registry --------------------------------------------------------------
def state_dir() -> Path:
    from recurra.data.paths import recurra_home

    return recurra_home() / "state"


def registry_backend() -> MlflowRegistry:
    """The model registry adapter the tasks use (MLflow, through ``recurra.pipelines.registry``)."""
    return MlflowRegistry()
