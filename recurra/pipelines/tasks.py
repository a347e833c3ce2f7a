"""Plain functions the Prefect flows wrap: ingest, train, detect, backtest, report.

Training lives in :mod:`recurra.pipelines.train_tasks`, detection in
:mod:`recurra.pipelines.detect_tasks`, the run record and the registry adapter in
:mod:`recurra.pipelines.runs`; their entry points are re-exported here.

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

import datetime as dt
from pathlib import Path
from typing import Any

import polars as pl

from recurra.data.schema import (
    CHANNEL,
    SERIES_ID,
)
from recurra.pipelines import runs
from recurra.pipelines.config import GroupConfig, PipelineConfig
from recurra.pipelines.detect_tasks import (  # noqa: F401 - the flows' entry points, re-exported
    EVENT_KEY,
    FORECAST_KEY,
    SCORE_KEY,
    detect_group,
    events_from_scores,
)
from recurra.pipelines.runs import (  # noqa: F401 - re-exported
    RUN_COLUMNS,
    RunSummary,
    _mean,
    _metric_key,
    group_series,
    open_store,
    record_run,
    recorded,
    registry_backend,
    state_dir,
)
from recurra.pipelines.train_tasks import (  # noqa: F401 - re-exported
    fit_forecaster,
    split_by_time,
    train_group,
    validate_forecaster,
)


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
    runs.registry_backend().log_metrics(group.name, "backtest",
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
