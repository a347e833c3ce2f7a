"""Experiment tracking behind one small protocol: a no-op default and an MLflow implementation.

Pipelines code against :class:`Tracker`; ``NullTracker`` keeps the core and the tests free of
any tracking store, ``MLflowTracker`` writes to the store of :mod:`recurra.pipelines.mlflow_setup`
(embedded SQLite by default). mlflow is imported lazily.

Conventions: one experiment per (dataset, task), ``"recurra/<dataset>/<task>"``; the full
config flattened into params (``model.hidden_size``); the training frame's
:func:`data_fingerprint` and :func:`environment_tags` as tags; the training loop's
``callback(event, payload)`` turned into metric histories by :func:`epoch_callback`.

Examples
--------
>>> tracker = MLflowTracker()                                     # doctest: +SKIP
>>> with tracker.start_run(experiment_name("ett", "forecast"), "gru-64") as run_id:
...     tracker.log_params(flatten_params(config))
...     model.fit(train, callback=epoch_callback(tracker))
...     uri = tracker.log_model(model, name="model", task="forecast")
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import math
import platform
import subprocess
from collections.abc import Callable, Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from recurra.data.schema import (
    KEY,
    OBSERVED,
    SERIES_ID,
    TIMESTAMP,
    VALUE,
    RecurraError,
    validate_frame,
)
from recurra.pipelines.mlflow_setup import experiment_name  # noqa: F401 - re-exported for callers

MAX_PARAM_LENGTH = 500  # MLflow < 2.3 and older servers reject longer values (newer: 6000)
PARAM_BATCH = 100
FINGERPRINT_TAG = "recurra.data_fingerprint"
LIBRARIES = ("torch", "numpy", "polars", "pandas", "mlflow", "prefect", "scikit-learn")


@runtime_checkable
class Tracker(Protocol):
    """What pipelines log. Every method is a no-op outside ``start_run`` for ``NullTracker``."""

    def start_run(self, experiment: str, run_name: str | None = None,
                  tags: Mapping[str, Any] | None = None) -> contextlib.AbstractContextManager:
        """Context manager around one run; yields the run id (None for NullTracker)."""

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None: ...

    def log_text(self, text: str, artifact_file: str) -> None: ...

    def log_dict(self, dictionary: Mapping[str, Any], artifact_file: str) -> None: ...

    def log_model(self, estimator: Any, *, name: str = "model", task: str | None = None,
                  input_example: Any = None) -> str | None:
        """Log a fitted estimator as a pyfunc model; returns its model URI."""

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...


class NullTracker:
    """The default tracker: accepts everything, stores nothing."""

    run_id: str | None = None

    @contextlib.contextmanager
    def start_run(self, experiment: str, run_name: str | None = None,
                  tags: Mapping[str, Any] | None = None) -> Iterator[None]:
        yield None

    def log_params(self, params: Mapping[str, Any]) -> None:
        return None

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        return None

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        return None

    def log_text(self, text: str, artifact_file: str) -> None:
        return None

    def log_dict(self, dictionary: Mapping[str, Any], artifact_file: str) -> None:
        return None

    def log_model(self, estimator: Any, *, name: str = "model", task: str | None = None,
                  input_example: Any = None) -> str | None:
        return None

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        return None


class MLflowTracker:
    """Tracker writing to MLflow through an explicit client and run id (thread-safe use
    from Prefect task threads: nothing relies on mlflow's per-thread active run, except
    :meth:`log_model`, which resumes the run in the calling thread when needed).

    Parameters
    ----------
    environment : add :func:`environment_tags` to every run (default True).
    """

    def __init__(self, *, environment: bool = True) -> None:
        self.environment = environment
        self.run_id: str | None = None
        self._client: Any = None

    @contextlib.contextmanager
    def start_run(self, experiment: str, run_name: str | None = None,
                  tags: Mapping[str, Any] | None = None) -> Iterator[str]:
        """Start a run in ``experiment`` (created when missing); yields the run id.

        The run ends FINISHED, or FAILED when the block raises (the error propagates).
        """
        if self.run_id is not None:
            raise RecurraError(f"MLflowTracker already has an active run ({self.run_id}); "
                               "runs of one tracker cannot nest: use a second tracker")
        from recurra.pipelines.mlflow_setup import client, ensure_experiment

        self._client = client()  # sets the store up and telemetry off before importing mlflow
        import mlflow

        experiment_id = ensure_experiment(experiment)
        all_tags = {**(environment_tags() if self.environment else {}), **dict(tags or {})}
        run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name,
                               tags=_stringify(all_tags), nested=mlflow.active_run() is not None)
        self.run_id = run.info.run_id
        status = "FAILED"
        try:
            yield self.run_id
            status = "FINISHED"
        finally:
            active = mlflow.active_run()
            if active is not None and active.info.run_id == self.run_id:
                mlflow.end_run(status)
            else:
                self._client.set_terminated(self.run_id, status)
            self.run_id = None

    def _run(self) -> str:
        if self.run_id is None:
            raise RecurraError("MLflowTracker: log_* called outside `with tracker.start_run(...)`")
        return self.run_id

    def log_params(self, params: Mapping[str, Any]) -> None:
        """Log params (nested mappings/dataclasses are flattened into ``a.b`` keys; values
        longer than :data:`MAX_PARAM_LENGTH` are truncated with ``...``; callers that need
        them whole also log a dict artifact)."""
        from mlflow.entities import Param

        run_id = self._run()
        flat = flatten_params(params)
        items = [Param(param_key(k), _truncate(v)) for k, v in flat.items()]
        for start in range(0, len(items), PARAM_BATCH):
            self._client.log_batch(run_id, params=items[start:start + PARAM_BATCH])

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None:
        """Log finite numeric metrics at ``step``; None / NaN / inf values are skipped."""
        import time

        from mlflow.entities import Metric

        run_id = self._run()
        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, int(step or 0)) for k, v in metrics.items()
                 if _is_finite_number(v)]
        if items:
            self._client.log_batch(run_id, metrics=items)

    def log_artifact(self, path: str | Path, artifact_path: str | None = None) -> None:
        target = Path(path)
        if not target.exists():
            raise RecurraError(f"log_artifact: `path` ({str(target)!r}) does not exist")
        if target.is_dir():
            self._client.log_artifacts(self._run(), str(target), artifact_path)
        else:
            self._client.log_artifact(self._run(), str(target), artifact_path)

    def log_text(self, text: str, artifact_file: str) -> None:
        self._client.log_text(self._run(), text, artifact_file)

    def log_dict(self, dictionary: Mapping[str, Any], artifact_file: str) -> None:
        self._client.log_dict(self._run(), json.loads(json.dumps(dictionary, default=str)),
                              artifact_file)

    def log_model(self, estimator: Any, *, name: str = "model", task: str | None = None,
                  input_example: Any = None) -> str:
        """Log ``estimator`` as a Recurra pyfunc model in this run; returns its model URI."""
        import mlflow

        from recurra.pipelines.pyfunc import log_estimator

        run_id = self._run()
        active = mlflow.active_run()
        if active is not None and active.info.run_id == run_id:
            info = log_estimator(estimator, name=name, task=task, input_example=input_example)
        else:  # called from another thread than start_run: resume the run here
            with mlflow.start_run(run_id=run_id):
                info = log_estimator(estimator, name=name, task=task,
                                     input_example=input_example)
            self._client.update_run(run_id, status="RUNNING")
        return info.model_uri

    def set_tags(self, tags: Mapping[str, Any]) -> None:
        run_id = self._run()
        from mlflow.entities import RunTag

        items = [RunTag(k, v) for k, v in _stringify(tags).items()]
        if items:
            self._client.log_batch(run_id, tags=items)


# Helpers ----------------------------------------------------------------------------------
EpochCallback = Callable[[str, Mapping[str, Any]], None]


def epoch_callback(tracker: Tracker, *, prefix: str = "") -> EpochCallback:
    """The training loop's ``callback(event, payload)`` writing per-epoch metric histories.

    On ``"epoch_end"`` every numeric payload entry except ``epoch`` (``train_loss``,
    ``val_loss``, ``lr``, ...) is logged at ``step=epoch``; None/NaN values (no validation
    set) are skipped. Other events are ignored.

    >>> callback = epoch_callback(NullTracker())
    >>> callback("epoch_end", {"epoch": 0, "train_loss": 1.0, "val_loss": None, "lr": 1e-3})
    """

    def callback(event: str, payload: Mapping[str, Any]) -> None:
        if event != "epoch_end":
            return
        step = int(payload.get("epoch", 0))
        metrics = {f"{prefix}{k}": v for k, v in payload.items()
                   if k != "epoch" and _is_finite_number(v)}
        tracker.log_metrics(metrics, step=step)

    return callback


def flatten_params(params: Any, prefix: str = "") -> dict[str, str]:
    """Flatten a (nested) config dataclass or mapping into ``{"a.b": "value"}`` strings.

    >>> flatten_params({"model": {"hidden_size": 64, "cell": "gru"}, "lags": (1, 2)})
    {'model.hidden_size': '64', 'model.cell': 'gru', 'lags': '[1, 2]'}
    """
    if dataclasses.is_dataclass(params) and not isinstance(params, type):
        params = {f.name: getattr(params, f.name) for f in dataclasses.fields(params)}
    if not isinstance(params, Mapping):
        raise RecurraError(f"flatten_params: `params` must be a mapping or a dataclass, got "
                           f"{type(params).__name__}")
    flat: dict[str, str] = {}
    for key, value in params.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) or (dataclasses.is_dataclass(value)
                                          and not isinstance(value, type)):
            flat.update(flatten_params(value, prefix=f"{name}."))
        elif isinstance(value, tuple | list | set):
            flat[name] = json.dumps(list(value), default=str)
        else:
            flat[name] = str(value)
    return flat


def data_fingerprint(frame: Any) -> dict[str, Any]:
    """What a model was trained or validated on: ids, time range, rows and a content hash.

    The hash is SHA-256 over the canonical (validated, sorted) key, value and mask columns,
    stable across processes and library versions; two frames with the same rows give the
    same ``content_hash`` whatever their input row order.

    Returns
    -------
    dict with ``n_rows``, ``n_series``, ``series_ids`` (sorted, at most 50 listed),
    ``n_channels``, ``start``, ``end`` (ISO, UTC), ``n_observed`` and ``content_hash``.
    """
    canonical = validate_frame(frame, name="fingerprint frame")
    digest = hashlib.sha256()
    for column in (*KEY, VALUE, OBSERVED):
        series = canonical[column]
        if column == TIMESTAMP:
            digest.update(series.dt.epoch("us").to_numpy().astype("<i8").tobytes())
        elif column == VALUE:
            digest.update(series.fill_null(float("nan")).to_numpy().astype("<f8").tobytes())
        elif column == OBSERVED:
            digest.update(series.to_numpy().astype("u1").tobytes())
        else:
            digest.update("\x1f".join(series.to_list()).encode())
        digest.update(b"\x1e")
    ids = sorted(canonical[SERIES_ID].unique().to_list())
    timestamps = canonical[TIMESTAMP]
    return {
        "n_rows": canonical.height,
        "n_series": len(ids),
        "series_ids": ids[:50],
        "n_channels": canonical["channel"].n_unique(),
        "start": timestamps.min().isoformat() if canonical.height else None,
        "end": timestamps.max().isoformat() if canonical.height else None,
        "n_observed": int(canonical[OBSERVED].sum()),
        "content_hash": digest.hexdigest(),
    }


def fingerprint_tags(frame: Any, prefix: str = "train") -> dict[str, str]:
    """:func:`data_fingerprint` as run tags ``recurra.<prefix>.<field>``."""
    fingerprint = data_fingerprint(frame)
    return {f"recurra.{prefix}.{k}": json.dumps(v) if isinstance(v, list) else str(v)
            for k, v in fingerprint.items()}


def environment_tags() -> dict[str, str]:
    """Device, Python and library versions, and the git commit when run inside a checkout."""
    tags = {"recurra.device": _device(), "recurra.python": platform.python_version()}
    for library in LIBRARIES:
        try:
            tags[f"recurra.version.{library}"] = metadata.version(library)
        except metadata.PackageNotFoundError:
            continue
    commit = git_commit()
    if commit:
        tags["recurra.git_commit"] = commit
    return tags


def git_commit(folder: str | Path | None = None) -> str | None:
    """The HEAD commit of the checkout holding ``folder`` (default: this package), else None."""
    where = Path(folder) if folder else Path(__file__).resolve().parent
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=where, capture_output=True,
                                text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip() or None if result.returncode == 0 else None


def _device() -> str:
    import torch

    if torch.cuda.is_available():
        return f"cuda:{torch.cuda.get_device_name(0)}"
    return "cpu"


def _is_finite_number(value: Any) -> bool:
    if isinstance(value, bool) or value is None:
        return False
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


MAX_PARAM_KEY_LENGTH = 250


def param_key(key: str) -> str:
    """``key`` as MLflow accepts it: characters other than letters, digits, ``_ - . / `` and
    space become ``_``; at most 250 characters.

    >>> param_key("config.static:weights[0]")
    'config.static_weights_0_'
    """
    import re

    return re.sub(r"[^A-Za-z0-9_\-./ ]", "_", str(key))[:MAX_PARAM_KEY_LENGTH]


def _truncate(value: str) -> str:
    return value if len(value) <= MAX_PARAM_LENGTH else value[:MAX_PARAM_LENGTH - 3] + "..."


def _stringify(tags: Mapping[str, Any]) -> dict[str, str]:
    return {str(k): v if isinstance(v, str) else json.dumps(v, default=str)
            for k, v in tags.items() if v is not None}
