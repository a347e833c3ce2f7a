"""What every flow run shares: the ``runs`` table row, the store, the registry adapter.

:func:`registry_backend` and :func:`state_dir` are looked up on this module at call time
(``runs.registry_backend()``), so a test or an embedding application can replace the
registry adapter in one place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import uuid
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recurra.pipelines.config import PipelineConfig
from recurra.pipelines.mlflow_registry import MlflowRegistry

RUN_COLUMNS = ("run_id", "flow", "started_at", "finished_at", "status", "rows_ingested",
               "rows_quarantined", "series_trained", "events_found", "message")


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


def state_dir() -> Path:
    from recurra.data.paths import recurra_home

    return recurra_home() / "state"


def registry_backend() -> MlflowRegistry:
    """The model registry adapter the tasks use (MLflow, through ``recurra.pipelines.registry``)."""
    return MlflowRegistry()


def group_series(config: PipelineConfig, store: Any) -> dict[str, list[str]]:
    """Series ids of each group (a series belongs to the first group that matches it)."""
    members: dict[str, list[str]] = {name: [] for name in config.groups}
    for series_id in store.series_ids():
        group = config.group_of(series_id)
        if group is not None:
            members[group.name].append(series_id)
    return {name: ids for name, ids in members.items() if ids}


def _metric_key(prefix: str, series_id: str) -> str:
    """An MLflow-safe metric name: ``live_mae.nab/realTraffic/speed_6005``."""
    import re

    return f"{prefix}.{re.sub(r'[^A-Za-z0-9_./ -]', '_', series_id)}"


def _mean(values: Any) -> float:
    values = list(values)
    return float(np.mean(values)) if values else float("nan")
