"""``recurra models list|promote|rollback`` and ``recurra mlflow-ui``.

Registered on the main app by ``recurra.pipelines.cli``. mlflow and the registry are imported inside
the commands, so ``recurra --help`` stays fast.
"""

from __future__ import annotations

import json
import os
import subprocess
from typing import Annotated, Any

import typer

from recurra.data.schema import RecurraError
from recurra.pipelines.cli_text import visible

models_app = typer.Typer(name="models", no_args_is_help=True, add_completion=False,
                         help="The model registry: list versions, promote, roll back.")


def register(app: typer.Typer) -> None:
    """Add the ``models`` sub-app and ``mlflow-ui`` to ``app``."""
    app.add_typer(models_app, name="models")
    app.command("mlflow-ui")(mlflow_ui)


@models_app.command("list")
def list_command(
    name: Annotated[str | None, typer.Argument(
        help="A registered model: list its versions (default: list every model).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines.")] = False,
) -> None:
    """List registered models, or the versions of one model with aliases and gate scores."""
    from recurra.pipelines import registry

    if name is None:
        frame = _guard(registry.list_models)
        columns = ["name", "n_versions", "latest_version", "champion_version",
                   "challenger_version", "metric", "champion_value", "updated_at"]
        empty = "no registered models yet (train one: recurra train, or recurra demo)"
    else:
        frame = _guard(lambda: registry.list_versions(name))
        columns = ["version", "aliases", "metric", "value", "champion_value", "decision",
                   "created_at", "run_id", "reason"]
        empty = f"model {name!r} has no versions"
    _print_frame(frame.select(columns), as_json, empty)


@models_app.command("promote")
def promote_command(
    name: Annotated[str, typer.Argument(help="The registered model.")],
    version: Annotated[str, typer.Argument(help="The version to make champion.")],
) -> None:
    """Make VERSION the champion of NAME by hand (recorded in the champion history)."""
    from recurra.pipelines import registry

    decision = _guard(lambda: registry.promote(name, version))
    previous = f" (was v{decision.previous_champion})" if decision.previous_champion else ""
    typer.echo(f"{name}: champion is v{decision.version}{previous}: {decision.reason}")


@models_app.command("rollback")
def rollback_command(name: Annotated[str, typer.Argument(help="The registered model.")]
                     ) -> None:
    """Give the champion alias of NAME back to its previous champion."""
    from recurra.pipelines import registry

    decision = _guard(lambda: registry.rollback(name))
    typer.echo(f"{name}: champion is v{decision.version}: {decision.reason}")


def mlflow_ui(
    port: Annotated[int, typer.Option(help="Port of the MLflow UI.")] = 5000,
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the command instead of running it.")] = False,
) -> None:
    """Run the MLflow UI on Recurra's tracking store (the embedded SQLite file by default)."""
    from recurra.pipelines.mlflow_setup import quiet_environment, ui_command

    if not 0 < port < 65536:
        raise typer.BadParameter(f"--port ({port}) must be in 1..65535")
    command = ui_command(port=port, host=host)
    if dry_run:
        typer.echo(" ".join(command))
        return
    quiet_environment()
    typer.echo(f"MLflow UI on http://{host}:{port} (store {command[3]}); Ctrl-C stops it")
    try:
        raise typer.Exit(subprocess.call(command, env=os.environ.copy()))
    except KeyboardInterrupt:  # pragma: no cover - interactive
        raise typer.Exit(0) from None
    except FileNotFoundError as error:
        typer.echo(f"error: `mlflow` is not on PATH ({error}); activate the environment",
                   err=True)
        raise typer.Exit(2) from error


def _print_frame(frame: Any, as_json: bool, empty: str) -> None:
    if as_json:
        for row in frame.to_dicts():
            typer.echo(json.dumps(row, default=str))
        return
    if frame.height == 0:
        typer.echo(empty)
        return
    from rich.console import Console
    from rich.table import Table

    from recurra.pipelines.cli_text import safe

    table = Table(show_lines=False)
    for column in frame.columns:
        table.add_column(safe(column))
    for row in frame.iter_rows():
        table.add_row(*(safe(_cell(value)) for value in row))
    Console(width=200).print(table)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return ",".join(map(str, value))
    if isinstance(value, float):
        return f"{value:.6g}"
    if hasattr(value, "strftime"):
        return value.strftime("%Y-%m-%d %H:%M:%S")
    return str(value)


def _guard(action: Any) -> Any:
    try:
        return action()
    except RecurraError as error:
        typer.echo(f"error: {visible(error)}", err=True)
        raise typer.Exit(2) from error
