"""The model registry adapter the pipeline tasks use: MLflow tracking + registry.

``recurra.pipelines.runs.registry_backend()`` returns an :class:`MlflowRegistry`; tests may swap it
for any object with the same four methods (register, champion, log_metrics, aliases).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl

from recurra.data.schema import RecurraError


class MlflowRegistry:
    """The project's MLflow tracking + registry (``recurra.pipelines.tracking``, ``.registry``):
    one run per fit (params, metrics, the model), ``register_and_gate`` decides promotion."""

    def register(self, name: str, estimator: Any, *, metric: str, value: float,
                 champion_value: float | None, params: dict[str, Any],
                 frame: pl.DataFrame, higher_is_better: bool = False,
                 extra_metrics: dict[str, float] | None = None) -> dict[str, Any]:
        from recurra.pipelines import registry, tracking
        from recurra.pipelines.mlflow_setup import experiment_name

        group, task = params["group"], name.rsplit("-", 1)[-1]
        tracker = tracking.MLflowTracker()
        fingerprint = tracking.data_fingerprint(frame)
        tags = tracking.fingerprint_tags(frame)
        if params.get("series_version") is not None:  # Store.read(..., version=N) re-reads it
            tags["recurra.train.series_version"] = str(params["series_version"])
        with tracker.start_run(experiment_name(group, task), run_name=name,
                               tags=tags) as run_id:
            tracker.log_params(params)
            tracker.log_dict(params, "params.json")  # whole values, whatever their length
            for record in getattr(estimator, "history_", None) or []:
                if isinstance(record, dict) and "epoch" in record:
                    tracker.log_metrics({k: v for k, v in record.items() if k != "epoch"},
                                        step=int(record["epoch"]))
            tracker.log_metrics({**{k: v for k, v in (extra_metrics or {}).items()
                                    if np.isfinite(v)}, metric: value})
            uri = tracker.log_model(estimator, name="model", task=task)
        finite = champion_value if champion_value is not None and np.isfinite(
            champion_value) else None
        decision = registry.register_and_gate(
            uri, name, metric=metric, value=float(value) if np.isfinite(value)
            else (-1e308 if higher_is_better else 1e308), higher_is_better=higher_is_better,
            validation_fingerprint=fingerprint["content_hash"],
            champion_value=finite, tags={"recurra.group": group, "recurra.run_id": run_id})
        return {"name": name, "version": str(decision.version), "promoted": decision.promoted,
                "reason": decision.reason, "uri": f"models:/{name}@champion"}

    def champion(self, name: str) -> tuple[Any, str] | None:
        from recurra.pipelines import registry

        try:
            version = registry.champion_version(name)
        except RecurraError:
            return None
        if version is None:
            return None
        return registry.load_champion_estimator(name), str(version)

    def champion_version(self, name: str) -> str | None:
        """The champion's version without loading the model (None when there is none)."""
        from recurra.pipelines import registry

        try:
            version = registry.champion_version(name)
        except RecurraError:
            return None
        return None if version is None else str(version)

    def log_metrics(self, group: str, task: str, metrics: dict[str, float]) -> None:
        """Log ``metrics`` to the run ``"<task> <UTC date>"`` of experiment
        ``recurra/<group>/<task>``: one run a day holds every scheduled run's values as metric
        history (step = minutes since the epoch), instead of a run per hourly detect."""
        import datetime as dt
        import time

        from mlflow.entities import Metric

        from recurra.pipelines import registry
        from recurra.pipelines.mlflow_setup import client, ensure_experiment, experiment_name

        mlflow_client = client()
        day = dt.datetime.now(dt.UTC).date().isoformat()
        experiment_id = ensure_experiment(experiment_name(group, task))
        query = f"tags.`recurra.day` = '{day}' and tags.`recurra.task` = '{task}'"
        with registry.registry_lock():  # find or create, once across processes
            found = mlflow_client.search_runs([experiment_id], query, max_results=1)
            run_id = found[0].info.run_id if found else mlflow_client.create_run(
                experiment_id, run_name=f"{task} {day}",
                tags={"recurra.day": day, "recurra.task": task}).info.run_id
        now = int(time.time() * 1000)
        items = [Metric(str(k), float(v), now, now // 60_000) for k, v in metrics.items()
                 if v is not None and np.isfinite(v)]
        if items:
            mlflow_client.log_batch(run_id, metrics=items)

    def aliases(self) -> dict[str, dict[str, Any]]:
        from recurra.pipelines import registry

        models = registry.list_models()
        return {row["name"]: {"champion": row["champion_version"],
                              "challenger": row["challenger_version"]}
                for row in models.iter_rows(named=True)}

    def location(self) -> str:
        from recurra.pipelines.mlflow_setup import tracking_uri

        return tracking_uri()
