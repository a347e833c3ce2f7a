"""Plain functions the Prefect flows wrap: ingest, train, detect, backtest, report.

Nothing here imports Prefect, so every step runs (and is tested) without an orchestrator;
``pipelines.flows`` adds retries, caching, concurrency and the task runner.

State kept in the store (``data.store.Store`` result tables):

- ``forecasts``, ``scores``, ``events``: what ``detect`` produced.
- ``runs``: one summary row per flow run (:data:`RUN_COLUMNS`).
- ``watermarks``: per series, the last timestamp ``detect`` has consumed and the champion
  version whose state was advanced to it (so the next run reads only newer rows).
- ``trainings``: per registered model version, the training end and the validation MAE per
  series (the reference of the live-error monitor).
- ``live_metrics``: live MAE / coverage per series per detect run.

The advanced state of each champion is cached in ``<RECURRA_HOME>/state/<model>/v<version>``
so a stateful forecaster or detector continues from where it stopped, never re-reading history.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from data.persistence import load_estimator, save_estimator
from data.schema import (
    CHANNEL,
    END,
    EVENT_SCHEMA,
    IS_ANOMALY,
    SCORE,
    SERIES_ID,
    TIMESTAMP,
    VALUE,
    RecurraError,
)
from pipelines import monitoring
from pipelines.config import GroupConfig, PipelineConfig

RUN_COLUMNS = ("run_id", "flow", "started_at", "finished_at", "status", "rows_ingested",
               "rows_quarantined", "series_trained", "events_found", "message")
FORECAST_KEY = (SERIES_ID, CHANNEL, "issued_at", TIMESTAMP)
SCORE_KEY = (SERIES_ID, TIMESTAMP)
EVENT_KEY = (SERIES_ID, "start", "kind")


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


def open_store(root: str | Path | None = None) -> Any:
    from data.store import Store

    return Store(root)


# Ingest ------------------------------------------------------------------------------------
def ingest_sources(config: PipelineConfig, store: Any) -> dict[str, dict[str, int]]:
    """Load every configured source into the store; rows and quarantined rows per source."""
    from data import ingest as ingest_module

    counts: dict[str, dict[str, int]] = {}
    for source in config.sources:
        if source.kind == "sample":
            result = ingest_module.ingest_sample(store)
        else:
            result = ingest_module.ingest([source.path], store)
        counts[source.name] = _ingest_counts(result)
    return counts


def _ingest_counts(result: Any) -> dict[str, int]:
    """Normalise what ``data.ingest`` returns (a report object, a dict or a list of them)."""
    if isinstance(result, list | tuple):
        parts = [_ingest_counts(r) for r in result]
        return {k: sum(p.get(k, 0) for p in parts) for k in ("rows", "quarantined")}
    if isinstance(result, dict):
        if result and all(isinstance(v, dict | list) or hasattr(v, "__dict__")
                          for v in result.values()):
            return _ingest_counts(list(result.values()))
        get = result.get
    else:
        get = lambda name, default=0: getattr(result, name, default)  # noqa: E731
    rows = next((get(n) for n in ("n_rows", "rows_ingested", "rows", "n_new") if get(n, None)
                 is not None), 0)
    quarantined = next((get(n) for n in ("n_quarantined", "rows_quarantined", "quarantined")
                        if get(n, None) is not None), 0)
    if hasattr(rows, "n_rows"):
        rows = rows.n_rows
    return {"rows": int(rows or 0), "quarantined": int(quarantined or 0)}


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


def validate_forecaster(forecaster: Any, rest: pl.DataFrame, horizon: int,
                        max_folds: int) -> dict[str, float]:
    """Rolling-origin validation on the rows after training; MAE per series.

    Forecast ``horizon`` steps, score them against the rows that follow, ``update`` the
    state with those rows, repeat (at most ``max_folds`` origins).  The forecaster ends with
    its state advanced through every row of ``rest``.
    """
    errors: dict[str, list[np.ndarray]] = {}
    timestamps = rest[TIMESTAMP].unique().sort()
    for fold, start in enumerate(range(0, timestamps.len(), horizon)):
        chunk_times = timestamps.slice(start, horizon)
        chunk = rest.filter(pl.col(TIMESTAMP).is_in(chunk_times.implode()))
        if fold < max_folds:
            resolved = monitoring.live_errors(forecaster.predict(horizon=horizon)
                                              .with_columns(pl.lit(None).alias("issued_at")),
                                              chunk)
            for row in resolved.iter_rows(named=True):
                errors.setdefault(row[SERIES_ID], []).append(
                    np.repeat(row["mae"], row["n_points"]))
        forecaster.update(chunk)
    return {sid: float(np.concatenate(parts).mean()) for sid, parts in errors.items()}


def train_group(group: GroupConfig, config: PipelineConfig, store: Any,
                until: dt.datetime | None = None, reason: str = "") -> dict[str, Any]:
    """Fit, validate, log, register and gate the forecaster and detector of one group.

    Returns a dict: group, series, trained_until, validation_mae (per series), and per role
    the registered name, version and whether the gate promoted it.
    """
    ids = group_series(config, store).get(group.name, [])
    frame = store.read(series_ids=ids, end=until) if ids else pl.DataFrame()
    if frame.height < config.training.min_rows:
        raise RecurraError(f"group {group.name!r}: {frame.height} rows in the store, "
                           f"training.min_rows is {config.training.min_rows}")
    train, rest = split_by_time(frame, config.training.validation_share)
    trained_until = frame[TIMESTAMP].max()
    result: dict[str, Any] = {"group": group.name, "series": ids, "reason": reason,
                              "trained_until": trained_until.isoformat(), "models": {}}
    tracker = registry_backend()
    validation: dict[str, float] = {}
    if group.forecaster:
        forecaster = config.models[group.forecaster].build().fit(train)
        horizon = int(getattr(forecaster.config, "horizon", 24))
        validation = validate_forecaster(forecaster, rest, horizon,
                                         config.training.backtest_folds)
        metrics = {"val_mae": _mean(validation.values())}
        result["models"]["forecaster"] = tracker.register(
            group.model_name("forecaster"), forecaster, metrics,
            params={"group": group.name, "model": group.forecaster, "reason": reason})
    if group.detector:
        detector = config.models[group.detector].build().fit(train)
        if rest.height:
            detector.update(rest)
        result["models"]["detector"] = tracker.register(
            group.model_name("detector"), detector, {},
            params={"group": group.name, "model": group.detector, "reason": reason})
    result["validation_mae"] = validation
    _record_training(store, group, result)
    return result


def _record_training(store: Any, group: GroupConfig, result: dict[str, Any]) -> None:
    rows = [{"model_name": info["name"], "version": str(info["version"]), "group": group.name,
             "role": role, "trained_until": dt.datetime.fromisoformat(result["trained_until"]),
             "validation_mae": json.dumps(result.get("validation_mae", {})),
             "promoted": bool(info.get("promoted")), "reason": result.get("reason", ""),
             "trained_at": dt.datetime.now(dt.UTC)}
            for role, info in result["models"].items()]
    if rows:
        store.write_table("trainings", pl.DataFrame(rows), key=("model_name", "version"))


def _mean(values: Any) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")


# Detect ------------------------------------------------------------------------------------
def detect_group(group: GroupConfig, config: PipelineConfig, store: Any,
                 run_id: str) -> dict[str, Any]:
    """Score the rows that arrived since the last run with the group's champions.

    Advances each champion's state with the new rows (cached per version), writes forecasts,
    scores, events, live metrics and watermarks, runs the drift test and returns
    ``{"group", "new_rows", "events", "retrain", "reasons", "live": {...}}``.
    """
    tracker = registry_backend()
    ids = group_series(config, store).get(group.name, [])
    out: dict[str, Any] = {"group": group.name, "new_rows": 0, "events": 0,
                           "retrain": False, "reasons": [], "live": {}}
    champions = {role: tracker.champion(group.model_name(role))
                 for role in ("forecaster", "detector") if getattr(group, role)}
    champions = {role: found for role, found in champions.items() if found is not None}
    if not ids or not champions:
        out["reasons"] = [] if champions else ["no champion registered yet"]
        return out
    version = "-".join(f"{role}-v{found[1]}" for role, found in sorted(champions.items()))
    marks = _watermarks(store, group, ids, version, champions)
    new = _rows_after(store, ids, marks)
    out["new_rows"] = new.height
    if new.is_empty():
        return out
    now = dt.datetime.now(dt.UTC)
    if "forecaster" in champions:
        out["live"] = _score_live(group, config, store, new, run_id, champions["forecaster"])
        forecaster = _advance("forecaster", group, champions["forecaster"], new)
        forecasts = forecaster.predict().with_columns(pl.lit(now).alias("issued_at"))
        store.write_table("forecasts", forecasts, key=FORECAST_KEY)
    if "detector" in champions:
        detector = _advance("detector", group, champions["detector"], new, keep_scores=True)
        scores = detector.scores_
        store.write_table("scores", scores, key=SCORE_KEY)
        events = events_from_scores(scores)
        if events.height:
            store.write_table("events", events, key=EVENT_KEY)
        out["events"] = events.height
    _write_watermarks(store, group, new, version)
    decision = monitoring.retrain_decision(
        group.name, store.read_table("live_metrics"),
        _drift(group, config, store, ids, new), config.monitoring)
    out["retrain"], out["reasons"] = decision.retrain, list(decision.reasons)
    return out


def _advance(role: str, group: GroupConfig, champion: tuple[Any, str], new: pl.DataFrame,
             keep_scores: bool = False) -> Any:
    """Load the cached state of this champion version (or the champion), feed it ``new``."""
    estimator, version = champion
    folder = state_dir() / group.model_name(role) / f"v{version}"
    if (folder / "meta.json").is_file():
        estimator = load_estimator(folder)
    result = estimator.update(new)
    if keep_scores:
        estimator.scores_ = result
    save_estimator(estimator, folder)
    return estimator


def _score_live(group: GroupConfig, config: PipelineConfig, store: Any, new: pl.DataFrame,
                run_id: str, champion: tuple[Any, str]) -> dict[str, float]:
    forecasts = store.read_table("forecasts")
    if forecasts.is_empty():
        return {}
    errors = monitoring.live_errors(forecasts, new)
    trainings = store.read_table("trainings")
    reference: dict[str, float] = {}
    if not trainings.is_empty():
        match = trainings.filter((pl.col("model_name") == group.model_name("forecaster"))
                                 & (pl.col("version") == str(champion[1])))
        if match.height:
            reference = json.loads(match["validation_mae"][0])
    rows = monitoring.live_rows(errors, reference, run_id, group.name,
                                config.monitoring.error_margin)
    if rows.height:
        store.write_table("live_metrics", rows, key=monitoring.LIVE_METRICS_KEY)
        registry_backend().log_metrics(f"live-{group.name}", {
            f"live_mae.{r[SERIES_ID]}": r["mae"] for r in rows.iter_rows(named=True)})
    return {r[SERIES_ID]: r["mae"] for r in rows.iter_rows(named=True)}


def _drift(group: GroupConfig, config: PipelineConfig, store: Any, ids: list[str],
           new: pl.DataFrame) -> list[monitoring.DriftResult]:
    trainings = store.read_table("trainings")
    if trainings.is_empty():
        return []
    mine = trainings.filter(pl.col("group") == group.name).sort("trained_at")
    if mine.is_empty():
        return []
    until = mine["trained_until"][-1]
    window = config.monitoring.drift_window
    reference = store.read(series_ids=ids, end=until)
    reference = reference.group_by([SERIES_ID, CHANNEL]).tail(window * 4)
    recent = store.read(series_ids=ids).filter(pl.col(TIMESTAMP) > until)
    return monitoring.drift_by_series(reference, recent, config.monitoring)


def _watermarks(store: Any, group: GroupConfig, ids: list[str], version: str,
                champions: dict[str, tuple[Any, str]]) -> dict[str, dt.datetime | None]:
    """Last consumed timestamp per series for this set of champion versions; for a new set,
    the earliest training end of those versions (their state stops there)."""
    table = store.read_table("watermarks")
    marks: dict[str, dt.datetime] = {}
    if not table.is_empty():
        mine = table.filter((pl.col("group") == group.name) & (pl.col("version") == version))
        marks = dict(zip(mine[SERIES_ID].to_list(), mine["watermark"].to_list(), strict=True))
    trainings = store.read_table("trainings")
    default = None
    if not trainings.is_empty():
        wanted = [(group.model_name(role), str(found[1])) for role, found in champions.items()]
        match = trainings.filter(pl.struct("model_name", "version").is_in(
            [{"model_name": n, "version": v} for n, v in wanted]))
        if match.height:
            default = match["trained_until"].min()
    return {sid: marks.get(sid, default) for sid in ids}


def _rows_after(store: Any, ids: list[str], marks: dict[str, Any]) -> pl.DataFrame:
    frame = store.read(series_ids=ids)
    cut = pl.DataFrame({SERIES_ID: list(marks), "_mark": list(marks.values())},
                       schema={SERIES_ID: pl.Utf8, "_mark": frame.schema[TIMESTAMP]})
    joined = frame.join(cut, on=SERIES_ID, how="left")
    keep = pl.col("_mark").is_null() | (pl.col(TIMESTAMP) > pl.col("_mark"))
    return joined.filter(keep).drop("_mark")


def _write_watermarks(store: Any, group: GroupConfig, new: pl.DataFrame, version: str) -> None:
    marks = new.group_by(SERIES_ID).agg(pl.col(TIMESTAMP).max().alias("watermark"))
    marks = marks.with_columns(pl.lit(group.name).alias("group"), pl.lit(version).alias("version"),
                               pl.lit(dt.datetime.now(dt.UTC)).alias("updated_at"))
    store.write_table("watermarks", marks, key=(SERIES_ID, "group", "version"))


def events_from_scores(scores: pl.DataFrame) -> pl.DataFrame:
    """Runs of consecutive ``is_anomaly`` rows per series become ``anomaly`` events."""
    if scores.is_empty() or IS_ANOMALY not in scores.columns:
        return pl.DataFrame(schema=EVENT_SCHEMA)
    ordered = scores.sort([SERIES_ID, TIMESTAMP]).with_columns(
        (pl.col(IS_ANOMALY) != pl.col(IS_ANOMALY).shift(1).over(SERIES_ID))
        .fill_null(True).cum_sum().over(SERIES_ID).alias("_run"))
    events = (ordered.filter(pl.col(IS_ANOMALY))
              .group_by([SERIES_ID, "_run"], maintain_order=True)
              .agg(pl.col(TIMESTAMP).min().alias("start"), pl.col(TIMESTAMP).max().alias(END),
                   pl.col(SCORE).max().alias("peak_score"))
              .with_columns(pl.col("peak_score").alias("severity"),
                            pl.lit([VALUE], pl.List(pl.Utf8)).alias("channels"),
                            pl.lit("anomaly").alias("kind")))
    return events.select(list(EVENT_SCHEMA)).cast(EVENT_SCHEMA)


# Backtest, report --------------------------------------------------------------------------
def backtest_group(group: GroupConfig, config: PipelineConfig, store: Any) -> dict[str, Any]:
    """Rolling-origin evaluation of a fresh forecaster of the group; MAE per series, logged."""
    ids = group_series(config, store).get(group.name, [])
    if not group.forecaster or not ids:
        return {"group": group.name, "mae": {}}
    frame = store.read(series_ids=ids)
    train, rest = split_by_time(frame, config.training.validation_share)
    forecaster = config.models[group.forecaster].build().fit(train)
    horizon = int(getattr(forecaster.config, "horizon", 24))
    mae = validate_forecaster(forecaster, rest, horizon, config.training.backtest_folds)
    registry_backend().log_metrics(f"backtest-{group.name}",
                                   {"backtest_mae": _mean(mae.values()),
                                    **{f"mae.{k}": v for k, v in mae.items()}})
    return {"group": group.name, "mae": mae, "horizon": horizon}


def write_report(store: Any, output: str | Path | None = None) -> Path:
    """The HTML report of the dashboard package (``dashboards.report.write_report``)."""
    from data.paths import reports_dir

    path = Path(output) if output else reports_dir() / "recurra-report.html"
    try:
        from dashboards.report import write_report as dashboard_report
    except ModuleNotFoundError as error:
        if error.name not in ("dashboards.report",):
            raise
        return _minimal_report(store, path)
    result = _call_report(dashboard_report, store, path)
    return Path(result) if result else path


def _call_report(function: Any, store: Any, path: Path) -> Any:
    import inspect

    names = list(inspect.signature(function).parameters)
    kwargs: dict[str, Any] = {}
    for name in names:
        if name in ("store",):
            kwargs[name] = store
        elif name in ("path", "output", "out", "output_path", "destination"):
            kwargs[name] = path
    return function(**kwargs)


def _minimal_report(store: Any, path: Path) -> Path:
    """Fallback while the dashboard package has no report writer: the run and event tables."""
    path.parent.mkdir(parents=True, exist_ok=True)
    parts = ["<html><head><meta charset='utf-8'><title>Recurra report</title></head><body>",
             "<h1>Recurra report</h1>"]
    for name in ("runs", "events", "live_metrics"):
        table = store.read_table(name)
        parts.append(f"<h2>{name}</h2><pre>{table.tail(50)}</pre>")
    path.write_text("\n".join(parts + ["</body></html>"]))
    return path


# Paths and the model registry --------------------------------------------------------------
def state_dir() -> Path:
    from data.paths import recurra_home

    return recurra_home() / "state"


def registry_backend() -> Any:
    """The model registry: MLflow through ``pipelines.registry`` when it is installed,
    else a folder registry under ``<RECURRA_HOME>/registry`` (same three methods)."""
    import importlib.util

    if importlib.util.find_spec("pipelines.registry") is None:
        return FolderRegistry()
    return MlflowRegistry()


class FolderRegistry:
    """Fallback registry: ``<home>/registry/<name>/v<N>`` folders + ``aliases.json``.

    The gate promotes a new version when no champion exists or its ``val_mae`` is no worse
    than the champion's.
    """

    def __init__(self) -> None:
        from data.paths import recurra_home

        self.root = recurra_home() / "registry"

    def register(self, name: str, estimator: Any, metrics: dict[str, float],
                 params: dict[str, Any]) -> dict[str, Any]:
        folder = self.root / name
        versions = [int(p.name[1:]) for p in folder.glob("v*") if p.name[1:].isdigit()]
        version = max(versions, default=0) + 1
        save_estimator(estimator, folder / f"v{version}")
        (folder / f"v{version}" / "metrics.json").write_text(
            json.dumps({"metrics": metrics, "params": params}, default=str))
        aliases = self._aliases(name)
        champion = aliases.get("champion")
        new, old = metrics.get("val_mae"), None
        if champion is not None:
            old = json.loads((folder / f"v{champion}" / "metrics.json").read_text())[
                "metrics"].get("val_mae")
        promoted = champion is None or new is None or old is None or not new > old
        aliases["challenger"] = version
        if promoted:
            aliases["champion"] = version
        (folder / "aliases.json").write_text(json.dumps(aliases))
        return {"name": name, "version": version, "promoted": promoted,
                "uri": f"models:/{name}@champion"}

    def champion(self, name: str) -> tuple[Any, str] | None:
        version = self._aliases(name).get("champion")
        if version is None:
            return None
        return load_estimator(self.root / name / f"v{version}"), str(version)

    def log_metrics(self, run_name: str, metrics: dict[str, float]) -> None:
        path = self.root / "metrics.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            handle.write(json.dumps({"run": run_name, **metrics}) + "\n")

    def aliases(self) -> dict[str, dict[str, int]]:
        return {p.name: self._aliases(p.name) for p in sorted(self.root.glob("*")) if p.is_dir()}

    def _aliases(self, name: str) -> dict[str, int]:
        path = self.root / name / "aliases.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def location(self) -> str:
        return str(self.root)


class MlflowRegistry(FolderRegistry):
    """Adapter over ``pipelines.registry`` / ``pipelines.tracking`` (filled in when they land)."""
