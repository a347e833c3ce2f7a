"""The model registry, in one place: register, gate, promote, roll back, list, load.

One registered model per (dataset, task), named by :func:`model_name`, with two aliases:
``champion`` (what flows and dashboards use) and ``challenger`` (the newest candidate that
did not, or not yet, become champion). :func:`register_and_gate` registers a new version
as challenger and promotes it to champion only when it beats the champion's score on the
same validation data by ``margin``; ties and worse keep the champion; the first version
becomes champion. Every decision is written as version tags (``recurra.gate.*``) with a
reason text, and every promotion is appended to the model tag ``recurra.champion_history``
so that :func:`rollback` can go back to the previous champion. After its first champion a
registered model never ends up without one.

Alias changes run under a lock (a thread lock plus a file lock next to the SQLite store),
so concurrent promotions from threads or processes on one machine cannot interleave their
read-decide-write steps. (With a remote tracking server, processes on other machines are
not covered by the file lock.)

Size: ~520 lines, on purpose: the house style keeps the registry logic (register, gate,
alias, promote, roll back, load by alias) in one place, and the lock that makes promotions
safe has to wrap every one of those read-decide-write steps.

Examples
--------
>>> decision = register_and_gate(model_uri, model_name("ett", "forecast"), metric="mse",
...     value=0.41, higher_is_better=False, margin=0.005,
...     validation_fingerprint=fingerprint["content_hash"])         # doctest: +SKIP
>>> decision.promoted, decision.reason                               # doctest: +SKIP
(True, 'mse 0.41 beats champion v1 (0.45) by more than margin 0.005')
>>> model = load_champion(model_name("ett", "forecast"))             # doctest: +SKIP
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import json
import math
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import polars as pl

from recurra.data.schema import RecurraError
from recurra.pipelines.mlflow_setup import check_slug, client, configure, lock_path

CHAMPION = "champion"
CHALLENGER = "challenger"
HISTORY_TAG = "recurra.champion_history"
GATE = "recurra.gate."
FINGERPRINT = "recurra.validation_fingerprint"
PROMOTED_AT = "recurra.promoted_at"
MAX_HISTORY = 50
LOCK_TIMEOUT_S = 120.0
_thread_locks: dict[str, threading.Lock] = {}
_thread_locks_guard = threading.Lock()


@dataclasses.dataclass(frozen=True)
class GateDecision:
    """The outcome of :func:`register_and_gate` (or of a manual :func:`promote`)."""

    name: str
    version: str
    promoted: bool
    champion_version: str
    previous_champion: str | None
    metric: str | None
    value: float | None
    champion_value: float | None
    margin: float
    higher_is_better: bool
    reason: str


def model_name(dataset: str, task: str) -> str:
    """The registered model of (dataset, task): ``model_name("ett", "forecast")`` gives
    ``"recurra-ett-forecast"``."""
    return f"recurra-{check_slug('dataset', dataset)}-{check_slug('task', task)}"


@contextlib.contextmanager
def registry_lock(timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Serialise registry writes across threads (thread lock) and processes (file lock)."""
    from filelock import FileLock, Timeout

    path = lock_path(configure())
    with _thread_locks_guard:
        thread_lock = _thread_locks.setdefault(str(path), threading.Lock())
    if not thread_lock.acquire(timeout=timeout):
        raise RecurraError(f"registry lock {path} not acquired within {timeout} s")
    try:
        with FileLock(str(path), timeout=timeout):
            yield
    except Timeout as error:
        raise RecurraError(f"registry lock {path} is held by another process for more than "
                           f"{timeout} s; retry, or remove the file if no Recurra process "
                           "is running") from error
    finally:
        thread_lock.release()


def register_and_gate(model: str, name: str, *, metric: str, value: float,
                      higher_is_better: bool, margin: float = 0.0,
                      validation_fingerprint: str | None = None,
                      champion_value: float | None = None,
                      tags: Mapping[str, Any] | None = None) -> GateDecision:
    """Register ``model`` as a new version of ``name`` (challenger) and gate its promotion.

    Parameters
    ----------
    model : a model URI (``models:/m-...``, ``runs:/<run_id>/model``) or a run id (its
        ``model`` is registered).
    name : the registered model (see :func:`model_name`).
    metric, value : the validation score of the new version (finite).
    higher_is_better : direction of ``metric``.
    margin : how much (>= 0, in metric units) the new version must beat the champion by.
    validation_fingerprint : content hash of the validation frame
        (``tracking.data_fingerprint(frame)["content_hash"]``); the champion's stored score
        is only compared when it was measured on the same data.
    champion_value : the champion's score re-measured by the caller on this validation
        data; when given, it is used instead of the champion's stored score.
    tags : extra version tags.

    Returns
    -------
    GateDecision (also written as version tags ``recurra.gate.*``).
    """
    _check_gate_inputs(metric, value, margin, champion_value)
    uri = model if ":/" in model else f"runs:/{model}/model"
    mlflow_client = client()  # configures the store (and telemetry) before importing mlflow
    import mlflow

    with registry_lock():
        champion = _alias_version(mlflow_client, name, CHAMPION)
        decision = _decide(name, champion, metric, float(value), higher_is_better,
                           float(margin), validation_fingerprint, champion_value)
        version_tags = {**(_string_tags(tags) or {}), **_decision_tags(decision),
                        **({PROMOTED_AT: _now()} if decision.promoted else {})}
        if validation_fingerprint is not None:
            version_tags[FINGERPRINT] = str(validation_fingerprint)
        version = _register(mlflow, uri, name, version_tags)
        decision = dataclasses.replace(
            decision, version=version,
            champion_version=version if decision.promoted else decision.champion_version)
        if decision.promoted:
            _set_champion(mlflow_client, name, version, decision.reason, fresh=True)
        else:
            mlflow_client.set_registered_model_alias(name, CHALLENGER, version)
    return decision


def _register(mlflow: Any, uri: str, name: str, tags: dict[str, str]) -> str:
    from mlflow.exceptions import MlflowException

    try:
        return str(mlflow.register_model(uri, name, tags=tags).version)
    except MlflowException as error:
        raise RecurraError(f"`model` ({uri!r}) could not be registered as {name!r}: "
                           f"{error.message}") from error


def _decision_tags(decision: GateDecision) -> dict[str, str]:
    return {f"{GATE}metric": decision.metric or "", f"{GATE}value": repr(decision.value),
            f"{GATE}higher_is_better": str(bool(decision.higher_is_better)),
            f"{GATE}margin": repr(decision.margin),
            f"{GATE}decision": "promoted" if decision.promoted else "kept_champion",
            f"{GATE}reason": decision.reason,
            f"{GATE}champion_version": decision.previous_champion or "",
            f"{GATE}champion_value": "" if decision.champion_value is None
            else repr(decision.champion_value)}


def track_and_register(estimator: Any, name: str, *, experiment: str, metric: str,
                       value: float, higher_is_better: bool, margin: float = 0.0,
                       validation: Any = None, params: Any = None,
                       metrics: Mapping[str, float] | None = None,
                       run_name: str | None = None, input_example: Any = None,
                       task: str | None = None) -> GateDecision:
    """One call for pipelines: a tracked run logging ``estimator``, then the gate.

    Starts a run in ``experiment`` (e.g. ``tracking.experiment_name(dataset, task)``),
    logs ``params`` (flattened; the estimator's config when None) and ``metrics`` (plus
    ``metric``: ``value``), fingerprints ``validation`` (tags ``recurra.validation.*``),
    logs the model and calls :func:`register_and_gate` with the validation fingerprint.

    >>> decision = track_and_register(fitted, model_name("ett", "forecast"),
    ...     experiment="recurra/ett/forecast", metric="mae", value=0.42,
    ...     higher_is_better=False, validation=valid)                  # doctest: +SKIP
    """
    from recurra.pipelines.tracking import MLflowTracker, data_fingerprint, fingerprint_tags

    fingerprint = None
    tags = {"recurra.registered_model": name}
    if validation is not None:
        fingerprint = data_fingerprint(validation)["content_hash"]
        tags.update(fingerprint_tags(validation, prefix="validation"))
    tracker = MLflowTracker()
    with tracker.start_run(experiment, run_name, tags=tags) as run_id:
        tracker.log_params(params if params is not None else {"config": estimator.config})
        tracker.log_metrics({**dict(metrics or {}), metric: value})
        model_uri = tracker.log_model(estimator, name="model", task=task,
                                      input_example=input_example)
    return register_and_gate(model_uri, name, metric=metric, value=value,
                             higher_is_better=higher_is_better, margin=margin,
                             validation_fingerprint=fingerprint, tags={"run_id": run_id})


def _check_gate_inputs(metric: str, value: float, margin: float,
                       champion_value: float | None) -> None:
    if not isinstance(metric, str) or not metric:
        raise RecurraError(f"`metric` ({metric!r}) must be a non-empty metric name")
    for parameter, number in (("value", value), ("margin", margin),
                              ("champion_value", champion_value)):
        if number is None and parameter == "champion_value":
            continue
        if isinstance(number, bool) or not isinstance(number, int | float) \
                or not math.isfinite(number):
            raise RecurraError(f"`{parameter}` ({number!r}) must be a finite number")
    if margin < 0:
        raise RecurraError(f"`margin` ({margin}) must be >= 0")


def _decide(name: str, champion: _Version | None, metric: str, value: float,
            higher_is_better: bool, margin: float, fingerprint: str | None,
            champion_value: float | None) -> GateDecision:
    """Compare a new version (number not known yet: "") with the champion; pure."""
    base = dict(name=name, version="", metric=metric, value=value, margin=margin,
                higher_is_better=higher_is_better)
    if champion is None:
        return GateDecision(**base, promoted=True, champion_version="",
                            previous_champion=None, champion_value=None,
                            reason="first version of the model: no champion yet")
    keep = dict(promoted=False, champion_version=champion.version,
                previous_champion=champion.version)
    if champion_value is None:
        stored_metric = champion.tags.get(f"{GATE}metric")
        stored_fingerprint = champion.tags.get(FINGERPRINT)
        if stored_metric != metric or f"{GATE}value" not in champion.tags:
            return GateDecision(**base, **keep, champion_value=None, reason=(
                f"champion v{champion.version} has no stored {metric!r} score "
                f"(gated on {stored_metric!r}): pass champion_value re-measured on this "
                "validation data, or promote by hand"))
        if stored_fingerprint != fingerprint:
            return GateDecision(**base, **keep, champion_value=None, reason=(
                f"champion v{champion.version} was scored on other validation data "
                f"(fingerprint {stored_fingerprint} != {fingerprint}): pass champion_value "
                "re-measured on this data, or promote by hand"))
        champion_value = float(champion.tags[f"{GATE}value"])
    better = (value > champion_value + margin if higher_is_better
              else value < champion_value - margin)
    direction = "higher" if higher_is_better else "lower"
    if better:
        return GateDecision(**base, promoted=True, champion_version="",
                            previous_champion=champion.version, champion_value=champion_value,
                            reason=(f"{metric} {value:.6g} beats champion v{champion.version} "
                                    f"({champion_value:.6g}) by more than margin {margin:g} "
                                    f"({direction} is better)"))
    return GateDecision(**base, **keep, champion_value=champion_value, reason=(
        f"{metric} {value:.6g} does not beat champion v{champion.version} "
        f"({champion_value:.6g}) by more than margin {margin:g} ({direction} is better): "
        "champion kept"))


def promote(name: str, version: str | int, *, reason: str = "promoted by hand") -> GateDecision:
    """Make ``version`` of ``name`` the champion (recorded in the champion history)."""
    mlflow_client = client()
    version = str(version)
    with registry_lock():
        target = _get_version(mlflow_client, name, version)
        champion = _alias_version(mlflow_client, name, CHAMPION)
        previous = champion.version if champion is not None else None
        if previous != version:
            _set_champion(mlflow_client, name, version, reason)
        else:
            reason = f"v{version} is already the champion"
    return _manual_decision(name, target, previous, reason)


def rollback(name: str) -> GateDecision:
    """Give the champion alias back to the previous champion of the history.

    Raises
    ------
    RecurraError when the model has no earlier champion (it keeps its current one).
    """
    mlflow_client = client()
    with registry_lock():
        _get_model(mlflow_client, name)
        champion = _alias_version(mlflow_client, name, CHAMPION)
        if champion is None:
            raise RecurraError(f"model {name!r} has no champion to roll back from")
        history = read_history(name)
        while history and history[-1]["version"] == champion.version:
            history.pop()
        existing = {str(v.version) for v in mlflow_client.search_model_versions(f"name='{name}'")}
        while history and history[-1]["version"] not in existing:
            history.pop()
        if not history:
            raise RecurraError(f"model {name!r} has no earlier champion than v"
                               f"{champion.version} to roll back to (champion kept)")
        target = history[-1]["version"]
        mlflow_client.set_registered_model_alias(name, CHAMPION, target)
        mlflow_client.set_registered_model_tag(name, HISTORY_TAG, json.dumps(history))
        _set_version_tags(mlflow_client, name, champion.version,
                          {"recurra.rolled_back_at": _now()})
        new = _get_version(mlflow_client, name, target)
    return _manual_decision(name, new, champion.version,
                            f"rolled back from v{champion.version} to v{target}")


def _set_champion(mlflow_client: Any, name: str, version: str, reason: str,
                  fresh: bool = False) -> None:
    """Move the champion alias and append to the history (caller holds the lock).

    ``fresh``: a version just registered with its ``promoted_at`` tag and no alias.
    """
    history = read_history(name)
    history.append({"version": version, "at": _now(), "reason": reason[:200]})
    mlflow_client.set_registered_model_alias(name, CHAMPION, version)
    mlflow_client.set_registered_model_tag(name, HISTORY_TAG,
                                           json.dumps(history[-MAX_HISTORY:]))
    if fresh:
        return
    _set_version_tags(mlflow_client, name, version, {PROMOTED_AT: _now()})
    challenger = _alias_version(mlflow_client, name, CHALLENGER)
    if challenger is not None and challenger.version == version:
        mlflow_client.delete_registered_model_alias(name, CHALLENGER)


def _manual_decision(name: str, target: Any, previous: str | None, reason: str) -> GateDecision:
    stored = target.tags.get(f"{GATE}value")
    return GateDecision(name=name, version=target.version, promoted=True,
                        champion_version=target.version, previous_champion=previous,
                        metric=target.tags.get(f"{GATE}metric"),
                        value=float(stored) if stored else None, champion_value=None,
                        margin=0.0, higher_is_better=target.tags.get(
                            f"{GATE}higher_is_better") == "True", reason=reason)


def read_history(name: str) -> list[dict[str, str]]:
    """The champion history of ``name``: ``[{"version", "at", "reason"}, ...]``, oldest first."""
    model = _get_model(client(), name)
    raw = model.tags.get(HISTORY_TAG)
    return json.loads(raw) if raw else []


# Reading -----------------------------------------------------------------------------------
def champion_version(name: str) -> str | None:
    """The version number holding the champion alias, or None."""
    mlflow_client = client()
    _get_model(mlflow_client, name)
    champion = _alias_version(mlflow_client, name, CHAMPION)
    return champion.version if champion is not None else None


def list_models() -> pl.DataFrame:
    """One row per registered model: versions, aliases and the champion's gate score.

    Columns: name, n_versions, latest_version, champion_version, challenger_version,
    metric, champion_value, champion_run_id, updated_at (UTC).
    """
    mlflow_client = client()
    rows = []
    for model in _all_models(mlflow_client):
        versions = list(mlflow_client.search_model_versions(f"name='{model.name}'"))
        by_number = {str(v.version): v for v in versions}
        champion = by_number.get(str(model.aliases.get(CHAMPION, "")))
        rows.append({
            "name": model.name, "n_versions": len(versions),
            "latest_version": max((int(v.version) for v in versions), default=None),
            "champion_version": _as_int(model.aliases.get(CHAMPION)),
            "challenger_version": _as_int(model.aliases.get(CHALLENGER)),
            "metric": champion.tags.get(f"{GATE}metric") if champion else None,
            "champion_value": _as_float(champion.tags.get(f"{GATE}value")) if champion else None,
            "champion_run_id": champion.run_id if champion else None,
            "updated_at": _from_ms(model.last_updated_timestamp)})
    return pl.DataFrame(rows, schema=MODELS_SCHEMA).sort("name")


MODELS_SCHEMA = {"name": pl.Utf8, "n_versions": pl.Int64, "latest_version": pl.Int64,
                 "champion_version": pl.Int64, "challenger_version": pl.Int64,
                 "metric": pl.Utf8, "champion_value": pl.Float64, "champion_run_id": pl.Utf8,
                 "updated_at": pl.Datetime("us", "UTC")}
VERSIONS_SCHEMA = {"name": pl.Utf8, "version": pl.Int64, "aliases": pl.List(pl.Utf8),
                   "run_id": pl.Utf8, "created_at": pl.Datetime("us", "UTC"),
                   "status": pl.Utf8, "metric": pl.Utf8, "value": pl.Float64,
                   "champion_value": pl.Float64, "decision": pl.Utf8, "reason": pl.Utf8,
                   "validation_fingerprint": pl.Utf8, "promoted_at": pl.Utf8,
                   "source": pl.Utf8, "metrics": pl.Utf8, "tags": pl.Utf8}


def list_versions(name: str, *, with_run_metrics: bool = True) -> pl.DataFrame:
    """One row per version of ``name`` (newest first): aliases, gate scores and decision,
    run id and (``with_run_metrics``) the run's latest metrics as a JSON text column."""
    mlflow_client = client()
    model = _get_model(mlflow_client, name)
    aliases: dict[str, list[str]] = {}
    for alias, version in model.aliases.items():
        aliases.setdefault(str(version), []).append(alias)
    rows = []
    for v in mlflow_client.search_model_versions(f"name='{name}'"):
        metrics = {}
        if with_run_metrics and v.run_id:
            with contextlib.suppress(Exception):  # a deleted run keeps its version
                metrics = mlflow_client.get_run(v.run_id).data.metrics
        rows.append({
            "name": name, "version": int(v.version),
            "aliases": sorted(aliases.get(str(v.version), [])),
            "run_id": v.run_id, "created_at": _from_ms(v.creation_timestamp),
            "status": v.status, "metric": v.tags.get(f"{GATE}metric"),
            "value": _as_float(v.tags.get(f"{GATE}value")),
            "champion_value": _as_float(v.tags.get(f"{GATE}champion_value")),
            "decision": v.tags.get(f"{GATE}decision"), "reason": v.tags.get(f"{GATE}reason"),
            "validation_fingerprint": v.tags.get(FINGERPRINT),
            "promoted_at": v.tags.get(PROMOTED_AT), "source": v.source,
            "metrics": json.dumps(metrics, sort_keys=True),
            "tags": json.dumps(dict(v.tags), sort_keys=True)})
    return pl.DataFrame(rows, schema=VERSIONS_SCHEMA).sort("version", descending=True)


def load_champion(name: str) -> Any:
    """The champion of ``name`` as a pyfunc model (``models:/<name>@champion``)."""
    from recurra.pipelines.pyfunc import load_model

    if champion_version(name) is None:
        raise RecurraError(f"model {name!r} has no champion yet: register a version with "
                           "register_and_gate or promote one with `recurra models promote`")
    return load_model(f"models:/{name}@{CHAMPION}")


def load_champion_estimator(name: str) -> Any:
    """The champion's Recurra estimator itself (full API: update, predict(horizon=...))."""
    from recurra.pipelines.pyfunc import unwrap_estimator

    return unwrap_estimator(load_champion(name))


# Internals ---------------------------------------------------------------------------------
def _all_models(mlflow_client: Any) -> list[Any]:
    models, token = [], None
    while True:
        page = mlflow_client.search_registered_models(max_results=100, page_token=token)
        models.extend(page)
        token = page.token
        if not token:
            return models


def _get_model(mlflow_client: Any, name: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_registered_model(name)
    except MlflowException as error:
        known = sorted(m.name for m in _all_models(mlflow_client))
        raise RecurraError(f"no registered model named {name!r}; known models: {known}"
                           ) from error


def _get_version(mlflow_client: Any, name: str, version: str) -> Any:
    from mlflow.exceptions import MlflowException

    _get_model(mlflow_client, name)
    try:
        return _view(mlflow_client.get_model_version(name, version))
    except MlflowException as error:
        known = sorted(int(v.version) for v in
                       mlflow_client.search_model_versions(f"name='{name}'"))
        raise RecurraError(f"model {name!r} has no version {version!r}; versions: {known}"
                           ) from error


def _alias_version(mlflow_client: Any, name: str, alias: str) -> Any:
    from mlflow.exceptions import MlflowException

    try:
        found = mlflow_client.get_model_version_by_alias(name, alias)
    except MlflowException:
        return None
    return _view(found)


@dataclasses.dataclass(frozen=True)
class _Version:
    """The parts of an MLflow ModelVersion the gate reads (version always a string)."""

    version: str
    tags: dict[str, str]
    run_id: str | None


def _view(model_version: Any) -> _Version:
    return _Version(str(model_version.version), dict(model_version.tags or {}),
                    model_version.run_id)


def _set_version_tags(mlflow_client: Any, name: str, version: str,
                      tags: Mapping[str, str]) -> None:
    for key, value in tags.items():
        mlflow_client.set_model_version_tag(name, version, key, value)


def _string_tags(tags: Mapping[str, Any] | None) -> dict[str, str] | None:
    if not tags:
        return None
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in tags.items()}


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


def _from_ms(value: int | None) -> dt.datetime | None:
    return dt.datetime.fromtimestamp(value / 1000, dt.UTC) if value else None


def _as_int(value: str | None) -> int | None:
    return int(value) if value else None


def _as_float(value: str | None) -> float | None:
    return float(value) if value else None
