"""``recurra init`` and ``recurra doctor``: the first-run path for your own data.

Registered on the main app by ``recurra.pipelines.cli``. The logic lives in
:mod:`recurra.pipelines.init_config` and :mod:`recurra.pipelines.doctor`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from recurra.data.schema import RecurraError

console = Console()
STATUS_STYLE = {"ok": "[green]  ok[/green]", "warn": "[yellow]warn[/yellow]",
                "fail": "[red]FAIL[/red]"}


def register(app: typer.Typer) -> None:
    """Add ``init`` and ``doctor`` to ``app``."""
    app.command("init")(init)
    app.command("doctor")(doctor)


def init(
    path: Annotated[Path, typer.Argument(help="A CSV/Parquet file or a folder of them.")],
    kind: Annotated[str | None, typer.Option(
        "--kind", help="Loader: sensor, nab, prices, matrix, air, ett, physionet "
                       "(default: guessed from the path, as `recurra ingest` does).")] = None,
    out: Annotated[Path, typer.Option(
        "--out", help="Config file to write.")] = Path("recurra.toml"),
    force: Annotated[bool, typer.Option(
        "--force", help="Overwrite --out if it exists.")] = False,
) -> None:
    """Inspect your data and write a commented recurra.toml for it."""
    from recurra.pipelines.init_config import (
        check_config,
        inspect_data,
        next_commands,
        render_config,
    )

    if out.exists() and not force:
        console.print(f"[red]error:[/red] --out ({escape(str(out))}) exists; pass --force to "
                      "overwrite it (nothing was written)")
        raise typer.Exit(1)
    try:
        profile = inspect_data(path, kind)
        text = render_config(profile)
        check_config(text)
    except RecurraError as error:
        console.print(f"[red]error:[/red] {escape(str(error))}")
        raise typer.Exit(2) from None
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    model = "a GRU-D" if profile.gappy else "an LSTM"
    console.print(
        f"[bold]{escape(profile.path)}[/bold] ({profile.kind} loader): {profile.n_series} "
        f"series, {len(profile.channels)} channel(s), frequency {profile.frequency}, "
        f"{profile.n_rows} rows, {profile.gap_share:.1%} missing"
        + (f", {profile.n_rejected} row(s) the loader rejects" if profile.n_rejected else ""))
    console.print(f"wrote [bold]{escape(str(out))}[/bold]: one group, {model} forecaster "
                  "and a detector (edit it freely; keys in docs/configuration.md)")
    console.print("next:")
    for command in next_commands(profile, str(out)):
        console.print(f"  {escape(command)}", soft_wrap=True)


def doctor() -> None:
    """Check Python, torch and its device, MLflow, Prefect, the store and Chromium."""
    from recurra.pipelines.doctor import run_checks

    checks = run_checks()
    for check in checks:
        console.print(f"{STATUS_STYLE[check.status]}  [bold]{check.name}[/bold]: "
                      f"{escape(check.found)}", soft_wrap=True)
        if check.fix:
            console.print(f"      fix: {escape(check.fix)}", soft_wrap=True)
    failed = [c.name for c in checks if c.status == "fail"]
    if failed:
        console.print(f"[red]{len(failed)} check(s) failed:[/red] {', '.join(failed)}")
        raise typer.Exit(1)
    console.print("[green]ready[/green]")
