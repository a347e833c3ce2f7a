"""``recurra demo | train | detect | backtest | serve``: the flow commands.

Registered on the main app by ``recurra.pipelines.cli``.  Prefect is imported inside the commands
(after the environment is set), so ``recurra --help`` stays fast.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer

from recurra.data.schema import RecurraError
from recurra.pipelines.cli_text import visible

ConfigOption = Annotated[Path | None, typer.Option(
    "--config",
    help="Pipeline config (TOML); default: the bundled recurra/pipelines/recurra.toml.")]
StoreOption = Annotated[Path | None, typer.Option(
    "--store", help="Store folder (default: $RECURRA_STORE or $RECURRA_HOME/store).")]


def register(app: typer.Typer) -> None:
    """Add ``demo``, ``train``, ``detect``, ``backtest`` and ``serve`` to ``app``."""
    app.command("demo")(demo)
    app.command("train")(train)
    app.command("detect")(detect)
    app.command("backtest")(backtest)
    app.command("serve")(serve)


def demo(
    home: Annotated[Path | None, typer.Option(
        help="State folder (default: $RECURRA_HOME or ./.recurra).")] = None,
    config: ConfigOption = None,
    holdout: Annotated[int, typer.Option(
        help="Rows per series kept out of training, scored by detect as new arrivals.")
    ] = 400,
    fresh: Annotated[bool, typer.Option(
        help="Clear the state of a previous demo in that folder first.")] = True,
    retrain: Annotated[bool, typer.Option(
        help="Let the drift/live-error monitor retrain the groups it flags.")] = False,
) -> None:
    """Run ingest -> train -> detect -> register (gate) -> report on the bundled sample data."""
    from recurra.pipelines.demo import print_summary, run_demo

    if holdout < 0:
        raise typer.BadParameter(f"--holdout ({holdout}) must be >= 0")
    outcome = _guard(lambda: run_demo(home, _text(config), holdout_rows=holdout, fresh=fresh,
                                      retrain=retrain))
    print_summary(outcome)


def train(config: ConfigOption = None, store: StoreOption = None,
          group: Annotated[list[str] | None, typer.Option(
              help="Only these series groups (repeat the option).")] = None) -> None:
    """Train, register and gate the models of every series group (or --group ...)."""
    _run("train", config, store_root=_text(store), groups=group or None, reason="manual")


def detect(config: ConfigOption = None, store: StoreOption = None,
           retrain: Annotated[bool, typer.Option(
               help="Retrain groups whose live-error or drift monitor fires.")] = True) -> None:
    """Score rows that arrived since the last run with the champions; write events."""
    _run("detect", config, store_root=_text(store), retrain=retrain)


def backtest(config: ConfigOption = None, store: StoreOption = None) -> None:
    """Rolling-origin evaluation of each group's forecaster (logged to MLflow)."""
    _run("backtest", config, store_root=_text(store))


def serve(config: ConfigOption = None,
          only: Annotated[list[str] | None, typer.Option(
              help="Serve only these schedules (ingest, detect, train, ...).")] = None,
          port: Annotated[int, typer.Option(
              help="Port of the local Prefect server started when PREFECT_API_URL is unset.")
          ] = 4200) -> None:
    """Serve the scheduled deployments (cron from the config) on a Prefect server.

    Uses PREFECT_API_URL when set, else starts `prefect server start` on 127.0.0.1:--port.
    """
    prefect_environment()
    from recurra.pipelines.serve import serve_forever

    _guard(lambda: serve_forever(_text(config), only=only or None, port=port))


def prefect_environment() -> None:
    """Before Prefect is imported: its home under ``$RECURRA_HOME/prefect`` (unless
    ``PREFECT_HOME`` is set), analytics off, a patient ephemeral-server start."""
    from recurra.data.paths import recurra_home

    os.environ.setdefault("PREFECT_HOME", str(recurra_home() / "prefect"))
    for name, value in (("PREFECT_SERVER_ANALYTICS_ENABLED", "false"), ("DO_NOT_TRACK", "true"),
                        ("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")):
        os.environ.setdefault(name, value)


def _run(name: str, config: Path | None, **parameters: Any) -> None:
    prefect_environment()
    from recurra.pipelines.flows import run_flow

    outcome = _guard(lambda: run_flow(name, _text(config), **parameters))
    typer.echo(json.dumps(outcome["summary"], default=str, indent=2))
    if outcome["summary"]["status"] != "completed":
        raise typer.Exit(1)


def _guard(action: Any) -> Any:
    try:
        return action()
    except RecurraError as error:
        typer.echo(f"error: {visible(error)}", err=True)
        raise typer.Exit(2) from error


def _text(path: Path | None) -> str | None:
    return str(path) if path is not None else None
