"""``recurra demo``: the whole chain once on the bundled sample data, then where to look.

ingest -> train (register + gate) -> detect -> report, as the ``daily`` flow in Prefect's
ephemeral mode (no server), with every piece of state in one folder: ``RECURRA_HOME``
(default ``./.recurra``) holds the store, the MLflow SQLite registry + artifacts, Prefect's
home and the reports.  The last ``holdout_rows`` rows of each series are kept out of
training so that ``detect`` has "newly arrived" rows to score, as it would in production.

Example
-------
>>> outcome = run_demo(home="/tmp/recurra-demo")          # doctest: +SKIP
>>> outcome["report"]                                      # doctest: +SKIP
'/tmp/recurra-demo/reports/recurra-report.html'
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path
from typing import Any

DEMO_MARKER = ".recurra-demo"
DEFAULT_HOLDOUT = 400
STATE_PARTS = ("store", "mlflow.db", "mlartifacts", "state", "reports", "prefect")


def prepare_home(home: str | Path | None, fresh: bool = True) -> Path:
    """Set ``RECURRA_HOME``, ``PREFECT_HOME`` and the quiet flags; with ``fresh``, clear the
    state of a previous demo (only in a folder that a demo created: it carries a marker)."""
    folder = Path(home or os.environ.get("RECURRA_HOME") or Path.cwd() / ".recurra")
    folder = folder.expanduser().resolve()
    if fresh and (folder / DEMO_MARKER).is_file():
        for part in STATE_PARTS:
            target = folder / part
            if target.is_dir():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()
    folder.mkdir(parents=True, exist_ok=True)
    (folder / DEMO_MARKER).write_text("created by `recurra demo`; --fresh clears this folder\n")
    os.environ["RECURRA_HOME"] = str(folder)
    os.environ.pop("RECURRA_STORE", None)
    os.environ["PREFECT_HOME"] = str(folder / "prefect")
    os.environ.pop("PREFECT_API_URL", None)  # ephemeral mode: no server needed
    for name, value in (("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("DO_NOT_TRACK", "true"),
                        ("MLFLOW_DISABLE_TELEMETRY", "true"),
                        ("PREFECT_LOGGING_LEVEL", "WARNING"),
                        # a busy CPU can take longer than the default 20 s to start it
                        ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")):
        os.environ.setdefault(name, value)
    return folder


def run_demo(home: str | Path | None = None, config_path: str | None = None,
             holdout_rows: int = DEFAULT_HOLDOUT, fresh: bool = True,
             retrain: bool = False) -> dict[str, Any]:
    """Run the ``daily`` flow once and collect what the summary shows.

    ``retrain`` lets the monitor retrain the groups it flags within the run (off by default
    to keep the demo short: the flags and their reasons are shown either way).

    Returns a dict: home, store, tracking_uri, report, sources (rows per source),
    models (name -> aliases), events, runs (summaries), seconds.
    """
    folder = prepare_home(home, fresh)
    started = time.monotonic()
    from recurra.pipelines.flows import run_flow  # imported after the environment is set

    outcome = run_flow("daily", config_path, holdout_rows=holdout_rows, retrain=retrain)
    from recurra.data.paths import store_root
    from recurra.pipelines.tasks import open_store, registry_backend

    store = open_store()
    backend = registry_backend()
    events = store.read_table("events")
    return {
        "home": str(folder), "store": str(store_root()), "tracking_uri": backend.location(),
        "report": outcome["report"]["report"], "sources": outcome["ingest"]["sources"],
        "models": backend.aliases(), "events": events.height,
        "events_by_series": _count_by_series(events),
        "runs": [outcome[k]["summary"] for k in ("ingest", "train", "detect", "report")],
        "seconds": round(time.monotonic() - started, 1),
    }


def _count_by_series(events: Any) -> dict[str, int]:
    if events.is_empty():
        return {}
    counts = events.group_by("series_id").len().sort("series_id")
    return dict(zip(counts["series_id"].to_list(), counts["len"].to_list(), strict=True))


def print_summary(outcome: dict[str, Any]) -> None:
    """The rich summary: rows per source, models and aliases, events, where things are."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    sources = Table(title="Ingested (per source)")
    for column in ("source", "records kept", "new long rows", "quarantined"):
        sources.add_column(column)
    for name, counts in outcome["sources"].items():
        sources.add_row(name, str(counts["rows"]), str(counts["new"]),
                        str(counts["quarantined"]))
    console.print(sources)
    models = Table(title="Registered models")
    for column in ("model", "champion", "challenger"):
        models.add_column(column)
    for name, aliases in outcome["models"].items():
        models.add_row(name, _version(aliases.get("champion")),
                       _version(aliases.get("challenger")))
    console.print(models)
    runs = Table(title="Flow runs")
    for column in ("flow", "status", "series trained", "events", "message"):
        runs.add_column(column)
    for run in outcome["runs"]:
        runs.add_row(run["flow"], run["status"], str(run["series_trained"]),
                     str(run["events_found"]), _short(run["message"] or "", 200))
    console.print(runs)
    console.print(f"[bold]Anomaly events found:[/bold] {outcome['events']} "
                  f"{outcome['events_by_series'] or ''}")
    uri = outcome["tracking_uri"]
    console.print(f"""[bold]Where the results are[/bold] (finished in {outcome['seconds']} s)
  state folder   {outcome['home']}   (RECURRA_HOME)
  Delta store    {outcome['store']}
  MLflow store   {uri}
                 open the UI: mlflow ui --backend-store-uri {uri}   (then http://127.0.0.1:5000)
  HTML report    {outcome['report']}
  dashboard      RECURRA_HOME={outcome['home']} recurra dashboard   (http://127.0.0.1:8050)""")


def _version(value: Any) -> str:
    return "-" if value is None else f"v{value}"


def _short(text: str, limit: int) -> str:
    """``text`` cut at ``limit`` characters (the full message is in the store's runs table)."""
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "…"
