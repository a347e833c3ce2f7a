"""Where MLflow keeps runs and models: an embedded SQLite store by default.

By default the tracking store and the model registry are one SQLite file,
``<RECURRA_HOME>/mlflow.db``, and artifacts go under ``<RECURRA_HOME>/mlartifacts``; nothing
needs a server. ``MLFLOW_TRACKING_URI`` overrides the store (a tracking server backed by
Postgres, ``http://mlflow:5000``); when it points at a server, the server decides where
artifacts go. Telemetry is switched off before mlflow is first imported.

mlflow is imported lazily, inside functions, so that ``recurra --help`` stays fast.

Examples
--------
>>> uri = configure()            # doctest: +SKIP
>>> experiment_id = ensure_experiment("recurra/ett/forecast")   # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from recurra.data.paths import recurra_home
from recurra.data.schema import RecurraError

DB_FILE = "mlflow.db"
ARTIFACTS_DIR = "mlartifacts"
LOCK_FILE = "mlflow-registry.lock"
_SERVER_SCHEMES = ("http", "https", "databricks")
_QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true",
              "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
              "MLFLOW_LOGGING_LEVEL": "WARNING"}
_configured_uri: str | None = None


def quiet_environment() -> None:
    """Switch MLflow telemetry off (idempotent; a user's explicit setting wins)."""
    for name, value in _QUIET_ENV.items():
        os.environ.setdefault(name, value)


def tracking_uri() -> str:
    """The tracking (and registry) URI: ``MLFLOW_TRACKING_URI`` or the embedded SQLite file."""
    uri = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    return uri or f"sqlite:///{recurra_home() / DB_FILE}"


def is_server(uri: str | None = None) -> bool:
    """Whether ``uri`` names a tracking server (which then owns the artifact location)."""
    scheme = (uri or tracking_uri()).split(":", 1)[0].lower()
    return scheme in _SERVER_SCHEMES


def artifact_root() -> Path:
    """Folder of the artifacts of experiments created by Recurra on a non-server store."""
    path = recurra_home() / ARTIFACTS_DIR
    path.mkdir(parents=True, exist_ok=True)
    return path


def sqlite_path(uri: str | None = None) -> Path | None:
    """The database file of a ``sqlite:///`` URI, else None."""
    uri = uri or tracking_uri()
    if not uri.startswith("sqlite:///"):
        return None
    return Path(uri[len("sqlite:///"):])


def lock_path(uri: str | None = None) -> Path:
    """The file lock guarding registry alias changes: next to the SQLite file, else in home."""
    database = sqlite_path(uri)
    folder = database.parent if database is not None else recurra_home()
    folder.mkdir(parents=True, exist_ok=True)
    return folder / LOCK_FILE


def configure() -> str:
    """Point mlflow at :func:`tracking_uri` (tracking and registry) and return the URI.

    Called by every function of the tracking and registry modules; cheap after the first
    call for the same URI, and follows a changed ``MLFLOW_TRACKING_URI`` (tests do that).
    """
    global _configured_uri
    quiet_environment()
    uri = tracking_uri()
    database = sqlite_path(uri)
    if database is not None:
        database.parent.mkdir(parents=True, exist_ok=True)
    import mlflow

    quiet_output()
    if uri != _configured_uri or mlflow.get_tracking_uri() != uri \
            or mlflow.get_registry_uri() != uri:
        mlflow.set_tracking_uri(uri)
        mlflow.set_registry_uri(uri)
        _configured_uri = uri
    return uri


def quiet_output() -> None:
    """Below INFO (``MLFLOW_LOGGING_LEVEL``, WARNING by default) drop MLflow's INFO log lines
    and its direct prints ("Successfully registered model ...", "Created version ...");
    ``MLFLOW_LOGGING_LEVEL=INFO`` brings both back."""
    import logging

    from mlflow.utils import logging_utils

    level = os.environ.get("MLFLOW_LOGGING_LEVEL", "WARNING").upper()
    logging.getLogger("mlflow").setLevel(level)
    if logging.getLevelName(level) > logging.INFO:  # eprint writes to this stream
        logging_utils.MLFLOW_LOGGING_STREAM = _NULL_STREAM
    elif logging_utils.MLFLOW_LOGGING_STREAM is _NULL_STREAM:
        logging_utils.MLFLOW_LOGGING_STREAM = logging_utils.MlflowLoggingStream()


class _NullStream:
    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


_NULL_STREAM = _NullStream()


def client() -> Any:
    """An ``mlflow.MlflowClient`` on the configured store."""
    uri = configure()
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=uri, registry_uri=uri)


_SLUG = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_slug(parameter: str, value: str) -> str:
    """A dataset / task name: letters, digits, ``_ . -``; raises naming the parameter."""
    if not isinstance(value, str) or not _SLUG.match(value):
        raise RecurraError(f"`{parameter}` ({value!r}) must be a non-empty name of letters, "
                           "digits, '_', '.' or '-' starting with a letter or digit")
    return value


def experiment_name(dataset: str, task: str) -> str:
    """One experiment per (dataset, task): ``experiment_name("ett", "forecast")`` gives
    ``"recurra/ett/forecast"``."""
    return f"recurra/{check_slug('dataset', dataset)}/{check_slug('task', task)}"


def ensure_experiment(name: str) -> str:
    """The id of experiment ``name``, created (with artifacts under home) when missing."""
    mlflow_client = client()
    experiment = mlflow_client.get_experiment_by_name(name)
    if experiment is not None:
        if experiment.lifecycle_stage == "deleted":
            mlflow_client.restore_experiment(experiment.experiment_id)
        return experiment.experiment_id
    location = None
    if not is_server():
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", name).strip("_") or "experiment"
        location = (artifact_root() / safe).as_uri()
    try:
        return mlflow_client.create_experiment(name, artifact_location=location)
    except Exception:  # another process created it in the meantime
        experiment = mlflow_client.get_experiment_by_name(name)
        if experiment is None:
            raise
        return experiment.experiment_id


def ui_command(port: int = 5000, host: str = "127.0.0.1") -> list[str]:
    """The ``mlflow ui`` command line serving the same store as Recurra."""
    uri = tracking_uri()
    command = ["mlflow", "ui", "--backend-store-uri", uri, "--host", host, "--port", str(port)]
    if not is_server(uri):
        command += ["--default-artifact-root", artifact_root().as_uri()]
    return command
