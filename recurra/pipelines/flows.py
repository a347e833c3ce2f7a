"""Prefect 3 flows over the plain functions of :mod:`recurra.pipelines.tasks`.

============ ===============================================================================
flow         what it does
============ ===============================================================================
``ingest``   load the configured sources (``recurra.pipelines.ingest``: retried, content-cached)
``train``    per series group: fit forecaster + detector, log, register, gate promotion
``detect``   per group: champions score only rows newer than the watermark, live error +
             drift monitoring; a group whose monitor fires is retrained (the gate decides)
``backtest`` per group: rolling-origin evaluation of a fresh forecaster, logged
``report``   the HTML report of the dashboard package
``daily``    ingest -> train -> detect -> report
``maintain`` compact the store's small files, then vacuum files older than the retention
============ ===============================================================================

Groups run as concurrent tasks on the task runner chosen in the config (threads with
``runner.max_workers``, or a Dask cluster); a group that fails does not stop the others: the
run's summary in the store's ``runs`` table says which failed and why (status
``"partial"``).  Training tasks are cached by input content (the group's config, the store
and the catalogue rows of its series) for 12 hours: re-running on unchanged data re-uses the
result instead of registering a duplicate version (Prefect's result storage lives under
``PREFECT_HOME``; clear it, or change the data or config, to force a retrain).

Run a flow directly (ephemeral Prefect, no server needed)::

    from recurra.pipelines.flows import run_flow
    summary = run_flow("train", config_path=None)   # the default config
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Callable
from typing import Any

from prefect import flow, get_run_logger, task
from prefect.task_runners import ThreadPoolTaskRunner
from prefect.tasks import exponential_backoff

from recurra.data.schema import RecurraError
from recurra.pipelines import progress, tasks
from recurra.pipelines.config import ConfigError, PipelineConfig, load_config

IO_RETRIES = 3
TRAINING_TAG = "recurra-training"
TRAIN_CACHE_EXPIRATION = dt.timedelta(hours=12)


def make_task_runner(config: PipelineConfig) -> Any:
    """The task runner of ``config.runner``: threads, or a Dask cluster (address or local)."""
    runner = config.runner
    if runner.kind == "dask":
        from prefect_dask import DaskTaskRunner

        if runner.address:
            return DaskTaskRunner(address=runner.address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": runner.n_dask_workers,
                                              "processes": runner.dask_processes,
                                              "threads_per_worker": 1,
                                              "dashboard_address": ":0"})
    workers = 1 if runner.kind == "sequential" else runner.max_workers
    return ThreadPoolTaskRunner(max_workers=workers)


def _logger() -> Any:
    try:
        return get_run_logger()
    except Exception:  # noqa: BLE001 - outside a run context
        import logging

        return logging.getLogger("recurra.flows")


def _train_cache_key(context: Any, parameters: dict[str, Any]) -> str:
    """Hash of what training depends on: config, store root, the group's catalogue rows."""
    config = load_config(parameters.get("config_path"))
    store = tasks.open_store(parameters.get("store_root"))
    group = config.groups[parameters["group_name"]]
    ids = tasks.group_series(config, store).get(group.name, [])
    catalogue = store.catalogue()
    catalogue = catalogue.filter(catalogue["series_id"].is_in(ids))
    payload = json.dumps({
        "group": repr(group), "models": [repr(config.models.get(group.forecaster)),
                                         repr(config.models.get(group.detector))],
        "training": repr(config.training), "store": str(store.root),
        "catalogue": catalogue.select(["series_id", "channel", "last", "n_rows"])
        .sort(["series_id", "channel"]).rows(),
        "holdout": parameters.get("holdout_rows", 0), "reason": parameters.get("reason", ""),
    }, default=str)
    return "recurra-train-" + hashlib.sha256(payload.encode()).hexdigest()[:32]


# Tasks -------------------------------------------------------------------------------------
@task(name="train-group", tags=[TRAINING_TAG], cache_key_fn=_train_cache_key,
      cache_expiration=TRAIN_CACHE_EXPIRATION)
def train_task(group_name: str, config_path: str | None, store_root: str | None,
               reason: str = "", holdout_rows: int = 0) -> dict[str, Any]:
    config = load_config(config_path)
    return tasks.train_group(config.groups[group_name], config, tasks.open_store(store_root),
                             reason=reason, holdout_rows=holdout_rows)


@task(name="detect-group", retries=IO_RETRIES, retry_delay_seconds=exponential_backoff(1))
def detect_task(group_name: str, config_path: str | None, store_root: str | None,
                run_id: str) -> dict[str, Any]:
    config = load_config(config_path)
    return tasks.detect_group(config.groups[group_name], config,
                              tasks.open_store(store_root), run_id)


@task(name="backtest-group")
def backtest_task(group_name: str, config_path: str | None,
                  store_root: str | None) -> dict[str, Any]:
    config = load_config(config_path)
    return tasks.backtest_group(config.groups[group_name], config, tasks.open_store(store_root))


@task(name="write-report", retries=IO_RETRIES, retry_delay_seconds=exponential_backoff(1))
def report_task(store_root: str | None, output: str | None = None) -> str:
    return str(tasks.write_report(tasks.open_store(store_root), output))


def _gather(futures: dict[str, Any], step: str = "",
            units: Callable[[str], int] = lambda name: 1) -> tuple[dict[str, Any], list[str]]:
    """Results by group; failures become messages instead of stopping the flow. With
    ``step``, each finished group advances that progress bar by ``units(name)``."""
    results, failures = {}, []
    for name, future in futures.items():
        outcome = future.result(raise_on_failure=False)
        if step:
            progress.advance(step, units(name), label=name)
        if isinstance(outcome, BaseException):
            failures.append(f"group {name!r} failed: {type(outcome).__name__}: {outcome}")
        else:
            results[name] = outcome
    return results, failures


def _with_runner(selected: Any, config: PipelineConfig) -> Any:
    return selected.with_options(task_runner=make_task_runner(config))


# Flows -------------------------------------------------------------------------------------
@flow(name="ingest", log_prints=True)
def ingest_flow(config_path: str | None = None, store_root: str | None = None) -> dict:
    """Load every configured source with ``recurra.pipelines.ingest.ingest_flow`` (one retried,
    content-cached task per source); the run summary goes to ``runs``."""
    from recurra.pipelines.ingest import ingest_flow as ingest_sources_flow

    config = load_config(config_path)
    store = tasks.open_store(store_root)
    summary = tasks.RunSummary("ingest")
    specs = [spec for specs in tasks.source_specs(config).values() for spec in specs]
    report = ingest_sources_flow(specs, str(store.root))
    counts = tasks.ingest_counts(report)
    summary.rows_ingested = sum(c["rows"] for c in counts.values())
    summary.rows_quarantined = sum(c["quarantined"] for c in counts.values())
    tasks.record_run(store, summary.finish(report.errors))
    return {"summary": summary.row(), "sources": counts}


@flow(name="train", log_prints=True)
def train_flow(config_path: str | None = None, store_root: str | None = None,
               groups: list[str] | None = None, holdout_rows: int = 0,
               reason: str = "scheduled") -> dict:
    """Train, register and gate every group (or ``groups``), concurrently on the runner."""
    config = load_config(config_path)
    store = tasks.open_store(store_root)
    unknown = sorted(set(groups or []) - set(config.groups))
    if unknown:
        raise ConfigError(f"--group {unknown} not in the config; groups: "
                          f"{sorted(config.groups)}")
    names = groups or list(tasks.group_series(config, store))
    def n_models(name: str) -> int:
        group = config.groups.get(name)
        return int(bool(group and group.forecaster)) + int(bool(group and group.detector))

    with tasks.recorded(store, tasks.RunSummary("train")) as summary, progress.step(
            "train", "train: models fitted and gated", sum(map(n_models, names))):
        futures = {name: train_task.submit(name, config_path, store_root, reason, holdout_rows)
                   for name in names}
        results, failures = _gather(futures, "train", n_models)
        summary.series_trained = sum(len(r["series"]) for r in results.values())
        summary.messages.extend(_promotion_messages(results))
        summary.messages.extend(f"group {name!r}: {message}" for name, r in results.items()
                                for message in r.get("excluded", []))
    tasks.record_run(store, summary.finish(failures))
    for failure in failures:
        _logger().warning(failure)
    return {"summary": summary.row(), "groups": results}


def _promotion_messages(results: dict[str, Any]) -> list[str]:
    return [f"{info['name']} v{info['version']} "
            f"{'promoted to champion' if info.get('promoted') else 'kept as challenger'}"
            for result in results.values() for info in result["models"].values()]


@flow(name="detect", log_prints=True)
def detect_flow(config_path: str | None = None, store_root: str | None = None,
                retrain: bool = True) -> dict:
    """Score new rows with the champions; retrain groups whose monitor fired."""
    config = load_config(config_path)
    store = tasks.open_store(store_root)
    series = tasks.group_series(config, store)
    with tasks.recorded(store, tasks.RunSummary("detect")) as summary, progress.step(
            "detect", "detect: series scored", sum(map(len, series.values()))):
        futures = {name: detect_task.submit(name, config_path, store_root, summary.run_id)
                   for name in series}
        results, failures = _gather(futures, "detect", lambda name: len(series[name]))
        summary.events_found = sum(r["events"] for r in results.values())
        summary.rows_ingested = sum(r["new_rows"] for r in results.values())
        for name, r in results.items():
            if r.get("steps", 0) > 1:  # missed runs: one new row per series per run on time
                summary.messages.append(
                    f"group {name!r} caught up {r['steps']} runs' worth of rows "
                    f"({r['new_rows']} rows in {r['chunks']} chunk(s))")
        unready = sorted(name for name, r in results.items()
                         if "no champion registered yet" in r.get("reasons", []))
        if unready:
            summary.messages.append(
                f"no champion registered yet for group(s) {unready}: nothing scored; run "
                "`recurra train` first")
        flagged = {name: r["reasons"] for name, r in results.items() if r["retrain"]}
        for name, reasons in flagged.items():
            action = "retrain" if retrain else "retrain flagged (not run, retrain=False)"
            summary.messages.append(f"{action} {name!r}: " + "; ".join(reasons))
        for name, result in results.items():
            watch = result.get("watch") or []
            if watch and not result["retrain"]:
                summary.messages.append(
                    f"watch {name!r}: live accuracy fired for {len(watch)} series, fewer "
                    "than monitoring.accuracy_min_share: " + "; ".join(watch[:3])
                    + (f" and {len(watch) - 3} more" if len(watch) > 3 else ""))
        retrained = {}
        if retrain and flagged:
            why = "monitor: " + "; ".join(sum(flagged.values(), []))
            _logger().info("retraining %s because %s", sorted(flagged), why)
            retrained = _with_runner(train_flow, config)(config_path, store_root,
                                                         groups=list(flagged), reason=why)
    tasks.record_run(store, summary.finish(failures))
    return {"summary": summary.row(), "groups": results, "retrained": retrained}


@flow(name="backtest", log_prints=True)
def backtest_flow(config_path: str | None = None, store_root: str | None = None) -> dict:
    """Rolling-origin evaluation of every group's forecaster; logged to the tracker."""
    config = load_config(config_path)
    store = tasks.open_store(store_root)
    with tasks.recorded(store, tasks.RunSummary("backtest")) as summary:
        futures = {name: backtest_task.submit(name, config_path, store_root)
                   for name in tasks.group_series(config, store)}
        results, failures = _gather(futures)
    tasks.record_run(store, summary.finish(failures))
    return {"summary": summary.row(), "groups": results}


@flow(name="report", log_prints=True)
def report_flow(store_root: str | None = None, output: str | None = None) -> dict:
    """Write the HTML report from the store and the registry."""
    store = tasks.open_store(store_root)
    with tasks.recorded(store, tasks.RunSummary("report")) as summary:
        path = report_task(store_root, output)
    summary.messages.append(f"report at {path}")
    tasks.record_run(store, summary.finish())
    return {"summary": summary.row(), "report": path}


@flow(name="daily", log_prints=True)
def daily_flow(config_path: str | None = None, store_root: str | None = None,
               holdout_rows: int = 0, retrain: bool = True) -> dict:
    """ingest -> train -> detect -> report, as one run (what ``recurra demo`` runs)."""
    config = load_config(config_path)
    ingested = ingest_flow(config_path, store_root)
    trained = _with_runner(train_flow, config)(config_path, store_root,
                                               holdout_rows=holdout_rows, reason="daily")
    detected = _with_runner(detect_flow, config)(config_path, store_root, retrain=retrain)
    reported = report_flow(store_root)
    return {"ingest": ingested, "train": trained, "detect": detected, "report": reported}


@flow(name="maintain", log_prints=True)
def maintain_flow(config_path: str | None = None, store_root: str | None = None,
                  retain_hours: float = 168) -> dict:
    """``recurra store compact`` then ``recurra store vacuum --retain-hours H``, as one run
    (schedule it with ``[schedules] maintain = "0 3 * * 0"``)."""
    from recurra.data.store_maintenance import compact, vacuum

    store = tasks.open_store(store_root)
    with tasks.recorded(store, tasks.RunSummary("maintain")) as summary:
        compacted = [r for r in compact(store) if r.version is not None]
        deleted = vacuum(store, retain_hours)
    n_deleted = sum(len(files) for _, files in deleted)
    summary.messages.append(f"compacted {len(compacted)} table(s), vacuumed {n_deleted} "
                            f"file(s) older than {retain_hours:g} h")
    tasks.record_run(store, summary.finish())
    return {"summary": summary.row(), "compacted": [r.table for r in compacted],
            "vacuumed": n_deleted}


FLOWS: dict[str, Callable[..., Any]] = {
    "ingest": ingest_flow, "train": train_flow, "detect": detect_flow,
    "backtest": backtest_flow, "report": report_flow, "daily": daily_flow,
    "maintain": maintain_flow,
}


def run_flow(name: str, config_path: str | None = None, **parameters: Any) -> dict:
    """Run one flow with the task runner of the config (``report`` takes no config)."""
    if name not in FLOWS:
        raise RecurraError(f"flow ({name!r}) must be one of {sorted(FLOWS)}")
    from recurra.pipelines.preflight import preflight

    preflight(name, config_path, parameters.get("store_root"))
    selected = FLOWS[name]
    if name == "report":
        return selected(**parameters)
    return _with_runner(selected, load_config(config_path))(config_path=config_path,
                                                            **parameters)
