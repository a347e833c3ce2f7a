"""The model registry as the dashboard shows it: one row per registered model version.

:class:`RegistryView` asks ``recurra.pipelines.registry`` (imported lazily, or any object
with ``list_models()`` / ``list_versions(name)``) and turns what it returns into the
models table: version, aliases, the gate's and the run's metrics, the promotion reason and
a link to the run in the MLflow UI.  A registry that cannot be imported or read gives an
empty table and a note, never an exception.
"""

from __future__ import annotations

import datetime as dt
import inspect
import json
import logging
import os
from typing import Any

import polars as pl

LOGGER = logging.getLogger(__name__)
MODEL_COLUMNS = ("model", "version", "aliases", "metrics", "promoted_at", "reason",
                 "run_id", "run_url")
DEFAULT_MLFLOW_UI = "http://127.0.0.1:5000"


class RegistryView:
    """Read-only view of the model registry for the dashboard's models table.

    Parameters
    ----------
    registry : an object with ``list_models()`` and ``list_versions(name)`` returning frames;
        ``None``: ``recurra.pipelines.registry`` (lazily); ``False``: no registry.
    tracking_uri : the MLflow tracking URI handed to the registry.
    mlflow_ui_url : base URL of the MLflow UI for run links.
    """

    def __init__(self, registry: Any = None, *, tracking_uri: str | None = None,
                 mlflow_ui_url: str | None = None) -> None:
        self.registry = registry
        self.tracking_uri = tracking_uri
        self.mlflow_ui_url = (mlflow_ui_url or DEFAULT_MLFLOW_UI).rstrip("/")

    def models(self) -> tuple[pl.DataFrame, str]:
        """Registered model versions (MODEL_COLUMNS) and a note ("" when all went well).

        The registry is imported lazily; when MLflow or the registry is unavailable the
        frame is empty and the note says why.
        """
        empty = pl.DataFrame(schema={name: pl.Utf8 for name in MODEL_COLUMNS})
        registry = self._registry()
        if registry is None:
            return empty, "model registry not available (recurra.pipelines.registry / MLflow)"
        try:
            names = _names(_call_with_uri(registry.list_models, self.tracking_uri))
            rows = []
            for name in names:
                versions = _call_with_uri(registry.list_versions, self.tracking_uri, name)
                rows.extend(self._model_rows(name, to_frame(versions)))
        except Exception as error:  # a broken tracking server must not break the page
            LOGGER.warning("reading the model registry failed: %s", error)
            return empty, f"could not read the model registry: {error}"
        if not rows:
            return empty, "no registered models yet"
        return pl.DataFrame(rows, schema={name: pl.Utf8 for name in MODEL_COLUMNS}), ""

    def run_url(self, run_id: str | None, experiment_id: str | None) -> str:
        """Link to a run in the MLflow UI (``<ui>/#/experiments/<exp>/runs/<run>``)."""
        if not run_id:
            return ""
        return f"{self.mlflow_ui_url}/#/experiments/{experiment_id or 0}/runs/{run_id}"

    def _model_rows(self, name: str, versions: pl.DataFrame) -> list[dict[str, str]]:
        """Rows of ``recurra.pipelines.registry.list_versions`` (version, aliases, run_id, metric,
        value, decision, reason, promoted_at, metrics as JSON text) for the models table."""
        rows = []
        for record in versions.to_dicts():
            run_id = _text(_first(record, "run_id", "source_run_id"))
            experiment = _first(record, "experiment_id") or self._experiment_of(run_id)
            decision = _text(record.get("decision")).replace("_", " ")
            reason = _text(_first(record, "reason", "promotion_reason", "description"))
            rows.append({
                "model": name,
                "version": _text(_first(record, "version", "model_version")),
                "aliases": _text(_first(record, "aliases", "alias")),
                "metrics": _metrics_text(record),
                "promoted_at": _text(_first(record, "promoted_at")),
                "reason": (f"{decision}: {reason}" if decision and reason
                           and not any(w in reason for w in ("kept", "promot")) else reason),
                "run_id": run_id,
                "run_url": self.run_url(run_id, _text(experiment)),
            })
        return rows

    def _experiment_of(self, run_id: str) -> str | None:
        """The experiment id of a run, asked of MLflow (only with the default registry)."""
        if not run_id or self.registry is not None:
            return None
        try:
            from recurra.pipelines.mlflow_setup import client

            return str(client().get_run(run_id).info.experiment_id)
        except Exception as error:  # a deleted run or a server hiccup: link to experiment 0
            LOGGER.info("experiment of run %s unknown: %s", run_id, error)
            return None

    def _registry(self) -> Any:
        if self.registry is False:
            return None
        if self.registry is not None:
            return self.registry
        if self.tracking_uri:  # recurra.pipelines.registry reads the URI from the environment
            os.environ["MLFLOW_TRACKING_URI"] = self.tracking_uri
        try:  # lazy: importing mlflow costs seconds and may fail; the page must not
            from recurra.pipelines import registry
        except Exception as error:
            LOGGER.warning("model registry unavailable: %s", error)
            return None
        return registry


def to_frame(value: Any) -> pl.DataFrame:
    """A polars frame of what a store or registry call returned (polars, lazy, pandas, list)."""
    if isinstance(value, pl.DataFrame):
        return value
    if isinstance(value, pl.LazyFrame):
        return value.collect()
    if isinstance(value, list):
        return pl.DataFrame(value) if value else pl.DataFrame()
    return pl.from_pandas(value) if hasattr(value, "to_dict") else pl.DataFrame(value)


def _names(models: Any) -> list[str]:
    if isinstance(models, list):
        return [m if isinstance(m, str) else getattr(m, "name", str(m)) for m in models]
    frame = to_frame(models)
    column = "name" if "name" in frame.columns else ("model" if "model" in frame.columns
                                                      else frame.columns[0])
    return [str(n) for n in frame[column].to_list()] if frame.width else []


def _call_with_uri(function: Any, tracking_uri: str | None, *args: Any) -> Any:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):
        parameters = {}
    if tracking_uri and "tracking_uri" in parameters:
        return function(*args, tracking_uri=tracking_uri)
    return function(*args)


def _first(record: dict[str, Any], *names: str) -> Any:
    for name in names:
        value = record.get(name)
        if value not in (None, "", []):
            return value
    return None


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, str) and len(value) >= 16 and value[4:5] == "-" and "T" in value:
        try:  # ISO time text (the registry's promoted_at)
            value = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return value
    if isinstance(value, list | tuple | set):
        return ", ".join(str(v) for v in value)
    if isinstance(value, dt.datetime):
        value = value.astimezone(dt.UTC) if value.tzinfo else value
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, int) and value > 10**11:  # MLflow epoch milliseconds
        return dt.datetime.fromtimestamp(value / 1000, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return str(value)


def _metrics_text(record: dict[str, Any], max_metrics: int = 6) -> str:
    """``metric=value`` of the gate score first, then validation/test metrics of the run.

    >>> _metrics_text({"metric": "mse", "value": 0.41,
    ...                "metrics": '{"train_loss": 0.2, "val_mae": 0.5}'})
    'mse=0.41 (gate), val_mae=0.5'
    """
    metrics = record.get("metrics")
    if isinstance(metrics, str):
        try:
            metrics = json.loads(metrics)
        except ValueError:
            metrics = {}
    if isinstance(metrics, dict):
        items = [(k, v) for k, v in metrics.items()
                 if any(word in k.lower() for word in ("val", "test", "backtest"))]
    else:
        items = [(k.split(".", 1)[1] if "." in k else k[len("metric_"):], v)
                 for k, v in record.items()
                 if (k.startswith("metrics.") or k.startswith("metric_")) and v is not None]
    texts = [f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
             for k, v in sorted(items)][:max_metrics]
    gate, value = record.get("metric"), record.get("value")
    if gate and value is not None:
        texts = [f"{gate}={value:.4g} (gate)"] + [t for t in texts
                                                  if not t.startswith(f"{gate}=")]
    return ", ".join(texts)
