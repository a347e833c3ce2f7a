"""``recurra ingest`` and ``recurra store summary|quarantine``.

Exit codes of ``ingest``: 0 all rows stored; 2 rows were rejected (quarantined) or a file
could not be read, unless ``--allow-rejects``; 1 bad command-line input.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import polars as pl
import typer
from rich.console import Console
from rich.table import Table

from recurra.data.schema import RecurraError
from recurra.pipelines.cli_text import safe

store_app = typer.Typer(help="Look inside and maintain the store.", no_args_is_help=True)
console = Console()
EXIT_REJECTS = 2
StoreOption = Annotated[str | None, typer.Option(
    "--store", help="Store folder or s3:// URI (default: RECURRA_STORE or <RECURRA_HOME>/store).")]


def register(app: typer.Typer) -> None:
    """Add ``ingest`` and the ``store`` sub-app to ``app``."""
    app.command("ingest")(ingest_command)
    app.add_typer(store_app, name="store")


def parse_options(items: list[str] | None) -> dict[str, object]:
    """``["series_id=acme", "every=1h", "channels=[\\"a\\"]"]`` -> dict; values are JSON when
    they parse as JSON (numbers, booleans, lists), text otherwise."""
    options: dict[str, object] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"--option ({item!r}) must look like key=value")
        try:
            options[key.strip()] = json.loads(value)
        except json.JSONDecodeError:
            options[key.strip()] = value
    return options


def _table(frame: pl.DataFrame, title: str) -> Table:
    table = Table(title=title, show_lines=False)
    for column in frame.columns:
        table.add_column(safe(column), overflow="fold")
    for row in frame.iter_rows():
        table.add_row(*["" if v is None else (f"{v:.3f}" if isinstance(v, float) else safe(v))
                        for v in row])
    return table


def ingest_command(
    path: Annotated[Path | None, typer.Argument(help="File or folder to ingest.")] = None,
    kind: Annotated[str, typer.Option(
        "--kind", help="Loader: sensor, nab, prices, matrix, air, ett, physionet.")] = "sensor",
    option: Annotated[list[str] | None, typer.Option(
        "--option", "-o", help="Loader option key=value (repeatable).")] = None,
    allow_rejects: Annotated[bool, typer.Option(
        "--allow-rejects", help="Exit 0 even when rows were quarantined.")] = False,
    sample: Annotated[bool, typer.Option(
        "--sample", help="Ingest the bundled sample data instead of PATH.")] = False,
    store: StoreOption = None,
) -> None:
    """Load a file or folder into the store; bad rows go to the quarantine."""
    from recurra.data.ingest import SourceSpec, ingest, sample_sources
    from recurra.data.store import Store

    try:
        if sample:
            specs = sample_sources()
        elif path is None:
            raise typer.BadParameter("give a PATH to ingest (or --sample)")
        else:
            specs = [SourceSpec(kind, path, parse_options(option))]
        report = ingest(specs, Store(store), strict=False)
    except RecurraError as error:
        console.print(f"[red]error:[/red] {safe(error)}")
        raise typer.Exit(1) from None
    frame = report.to_frame().select(
        "kind", pl.col("path").map_elements(lambda p: Path(p).name, return_dtype=pl.Utf8),
        pl.col("n_rows_in").alias("in"), pl.col("n_rows_kept").alias("kept"),
        pl.col("n_quarantined").alias("rejected"), pl.col("n_new").alias("new"),
        pl.col("n_updated").alias("updated"), pl.col("n_unchanged").alias("unchanged"),
        pl.col("n_series").alias("series"))
    console.print(_table(frame, "ingest: in/kept/rejected count records (lines), "
                                "new/updated/unchanged count stored values"))
    for source in report.sources:
        for warning in source.warnings:
            console.print(f"[yellow]warning: {safe(warning)}[/yellow]")
        if source.by_reason:
            console.print(f"{safe(Path(source.path).name)}: rejected by reason "
                          f"{safe(source.by_reason)}")
        if source.error:
            console.print(f"[red]{safe(Path(source.path).name)}: {safe(source.error)}[/red]")
    if not report.ok:
        console.print(f"[yellow]{report.n_quarantined} row(s) quarantined[/yellow]"
                      + (f", {len(report.errors)} file error(s)" if report.errors else "")
                      + ": see `recurra store quarantine`")
        if not allow_rejects:
            raise typer.Exit(EXIT_REJECTS)


@store_app.command("summary")
def summary_command(store: StoreOption = None) -> None:
    """Print the catalogue: one row per (series_id, channel)."""
    from recurra.data.store import Store

    catalogue = Store(store).catalogue()
    if catalogue.is_empty():
        console.print("the store is empty (try: recurra ingest --sample)")
        return
    console.print(_table(catalogue.drop("partition"), f"store catalogue ({catalogue.height} "
                                                      "series/channel pairs)"))


@store_app.command("quarantine")
def quarantine_command(
    store: StoreOption = None,
    limit: Annotated[int, typer.Option("--limit", help="Rows shown per reason.")] = 5,
) -> None:
    """List rejected rows by reason (file, line, raw text)."""
    from recurra.data.store import Store

    rejected = Store(store).quarantine()
    if rejected.is_empty():
        console.print("the quarantine is empty")
        return
    kinds = rejected.with_columns(pl.col("reason").str.split(":").list.first().alias("kind"))
    counts = kinds.group_by("kind").len().sort("len", descending=True)
    console.print(_table(counts.rename({"len": "rows"}), "quarantined rows by reason"))
    for (kind,), rows in kinds.group_by("kind", maintain_order=True):
        shown = rows.head(limit).select("source_file", "line", "reason", "raw")
        console.print(_table(shown, f"{safe(kind)}: first {shown.height} of {rows.height}"))
