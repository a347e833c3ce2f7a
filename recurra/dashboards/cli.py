"""``recurra dashboard`` and ``recurra report``: the dashboard's two commands.

Registered on the main ``recurra`` Typer app by ``recurra.pipelines.cli`` through
:func:`register`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from recurra.dashboards.downsample import MAX_POINTS
from recurra.data.schema import RecurraError


def register(app: typer.Typer) -> None:
    """Add the ``dashboard`` and ``report`` commands to ``app``."""
    app.command("dashboard")(dashboard)
    app.command("report")(report)


def dashboard(
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8050,
    host: Annotated[str, typer.Option(help="Interface to bind (0.0.0.0 for all).")] = (
        "127.0.0.1"),
    store: Annotated[Path | None, typer.Option(
        help="Store folder (default: $RECURRA_STORE or $RECURRA_HOME/store).")] = None,
    tracking_uri: Annotated[str | None, typer.Option(
        help="MLflow tracking URI for the models view (default: $MLFLOW_TRACKING_URI).")
    ] = None,
    mlflow_ui: Annotated[str, typer.Option(
        help="Base URL of the MLflow UI that run links point to.")] = "http://127.0.0.1:5000",
    max_points: Annotated[int, typer.Option(
        help="Most points drawn per trace (longer series are downsampled).")] = MAX_POINTS,
    debug: Annotated[bool, typer.Option(help="Dash debug mode (hot reload).")] = False,
) -> None:
    """Serve the analyst dashboard (read-only; works offline)."""
    from recurra.dashboards.app import create_app

    if not 0 < port < 65536:
        raise typer.BadParameter(f"--port ({port}) must be between 1 and 65535")
    if max_points < 7:
        raise typer.BadParameter(f"--max-points ({max_points}) must be >= 7")
    try:
        app = create_app(store, tracking_uri, mlflow_ui_url=mlflow_ui, max_points=max_points)
    except RecurraError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    typer.echo(f"Recurra dashboard on http://{host}:{port}/ (Ctrl+C to stop)")
    # no version check: it would call plotly's server, and the dashboard works offline
    app.run(host=host, port=port, debug=debug, dev_tools_disable_version_check=True)


def report(
    out: Annotated[Path | None, typer.Option(
        help="HTML file or folder to write (default: $RECURRA_HOME/reports/).")] = None,
    series: Annotated[list[str] | None, typer.Option(
        help="Series to chart (repeat the option); default: those with results.")] = None,
    run_id: Annotated[str | None, typer.Option(help="Pipeline run the report is about.")
                      ] = None,
    store: Annotated[Path | None, typer.Option(help="Store folder.")] = None,
    title: Annotated[str, typer.Option(help="Page title.")] = "Recurra report",
) -> None:
    """Write one self-contained HTML report (plotly.js embedded, opens offline)."""
    from recurra.dashboards.report import write_report
    from recurra.data.paths import reports_dir

    try:
        path = write_report(store, out if out is not None else reports_dir(),
                            series_ids=series or None, run_id=run_id, title=title)
    except RecurraError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from error
    typer.echo(str(path))
