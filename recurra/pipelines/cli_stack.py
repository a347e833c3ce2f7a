"""``recurra stack up | down | status | env``: the multi-process topology on this machine.

Registered on the main app by ``recurra.pipelines.cli``; the work is in
:mod:`recurra.pipelines.stack`.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from recurra.data.schema import RecurraError

HomeOption = Annotated[Path | None, typer.Option(
    help="State folder; the stack lives in <home>/stack (default: $RECURRA_HOME or ./.recurra).")]
OnlyOption = Annotated[list[str] | None, typer.Option(
    help="Only these services (postgres, s3, mlflow, prefect, dask-scheduler, dask-worker-1, "
         "dask-worker-2, prefect-worker); repeat the option.")]


def register(app: typer.Typer) -> None:
    """Add the ``stack`` command group to ``app``."""
    group = typer.Typer(help="PostgreSQL + MLflow server + S3 + Prefect server/worker + Dask "
                             "cluster as separate processes on 127.0.0.1 (docs/deploy.md).",
                        no_args_is_help=True)
    group.command("up")(up)
    group.command("down")(down)
    group.command("status")(status)
    group.command("env")(env)
    group.command("deploy")(deploy)
    app.add_typer(group, name="stack")


def up(home: HomeOption = None, config: Annotated[Path | None, typer.Option(
           help="Pipeline config to run on the stack (default: the bundled one).")] = None,
       only: OnlyOption = None) -> None:
    """Start the services that are not running; register the deployments on the pool."""
    from recurra.pipelines.stack import status as read_status
    from recurra.pipelines.stack import up as start

    _guard(lambda: start(home, str(config) if config else None, only=only or None))
    _print_status(read_status(home))


def down(home: HomeOption = None, only: OnlyOption = None) -> None:
    """Stop the services (data folders stay; `up` brings them back on the same ports)."""
    from recurra.pipelines.stack import down as stop_all

    _guard(lambda: stop_all(home, only=only or None))


def status(home: HomeOption = None,
           as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False) -> None:
    """Which services run, on which address, and where their logs are."""
    from recurra.pipelines.stack import status as read_status

    services = read_status(home)
    if as_json:
        typer.echo(json.dumps(services, indent=2))
    else:
        _print_status(services)
    if not all(service["running"] for service in services.values()):
        raise typer.Exit(1)


def env(home: HomeOption = None) -> None:
    """`export` lines for a shell that talks to the stack (eval "$(recurra stack env)")."""
    import shlex

    from recurra.pipelines.stack import environment, load_state, stack_root

    root = stack_root(home)
    for name, value in environment(load_state(root)).items():
        typer.echo(f"export {name}={shlex.quote(value)}")
    config = shlex.quote(str(root / "recurra.toml"))
    typer.echo(f"# pipeline config of the stack: --config {config}")


def deploy(api_url: Annotated[str, typer.Option(
               help="Prefect API of the server, e.g. http://prefect-host:4200/api.")],
           config: Annotated[Path | None, typer.Option(
               help="Pipeline config, as the workers will read it (path on their hosts).")
           ] = None,
           pool: Annotated[str, typer.Option(help="Process work pool (created if missing).")
                           ] = "recurra",
           only: Annotated[list[str] | None, typer.Option(
               help="Only these schedules (ingest, train, detect, ...).")] = None) -> None:
    """Register the schedules of a config as deployments on a work pool (real hosts)."""
    from recurra.pipelines.deployed import deploy_to_pool

    def action() -> None:
        for name in deploy_to_pool(str(config) if config else None, api_url, pool, only or None):
            typer.echo(f"deployed {name} to pool {pool!r}")

    _guard(action)


def _print_status(services: dict) -> None:
    for name, service in services.items():
        state = f"up (pid {service['pid']})" if service["running"] else "down"
        typer.echo(f"{name:<15} {state:<16} {service['address']}")


def _guard(action) -> None:  # noqa: ANN001 - a thunk
    try:
        action()
    except RecurraError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
