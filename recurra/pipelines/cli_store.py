"""``recurra store compact|vacuum|migrate``: maintenance of the Delta store.

Added to the ``store`` sub-app of :mod:`recurra.pipelines.cli_data` (registered after it).
Exit codes: 0 done; 1 a store error (named path or URI, message on stderr).
"""

from __future__ import annotations

from typing import Annotated

import typer

from recurra.data.schema import RecurraError
from recurra.pipelines.cli_data import StoreOption, console, store_app


def register(app: typer.Typer) -> None:  # noqa: ARG001 - commands live on store_app
    """The commands are declared on ``store_app`` at import; nothing else to add."""


def _fail(error: RecurraError) -> None:
    typer.echo(f"error: {error}", err=True)
    raise typer.Exit(1)


@store_app.command("compact")
def compact_command(
    store: StoreOption = None,
    target_mb: Annotated[int | None, typer.Option(
        "--target-mb", min=1, help="Approximate size of the rewritten files (default 100).")
    ] = None,
) -> None:
    """Rewrite small files into large ones (series and result tables; rows unchanged)."""
    from recurra.data.store import Store
    from recurra.data.store_maintenance import compact

    try:
        reports = compact(Store(store), None if target_mb is None else target_mb * 2**20)
    except RecurraError as error:
        _fail(error)
    changed = [r for r in reports if r.version is not None]
    for report in changed:
        console.print(f"{report.table}: {report.n_files_removed} file(s) -> "
                      f"{report.n_files_added} (version {report.version})", markup=False)
    console.print(f"compacted {len(changed)} of {len(reports)} table(s); old files stay until "
                  "`recurra store vacuum`", markup=False)


@store_app.command("vacuum")
def vacuum_command(
    store: StoreOption = None,
    retain_hours: Annotated[float, typer.Option(
        "--retain-hours", min=0,
        help="Keep files that versions of the last H hours still use (time travel).")] = 168,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="List what would be deleted, delete nothing.")] = False,
) -> None:
    """Delete files no version newer than --retain-hours refers to (ends older time travel)."""
    from recurra.data.store import Store
    from recurra.data.store_maintenance import vacuum

    try:
        done = vacuum(Store(store), retain_hours, dry_run=dry_run)
    except RecurraError as error:
        _fail(error)
    verb = "would delete" if dry_run else "deleted"
    total = sum(len(files) for _, files in done)
    for table, files in done:
        if files:
            console.print(f"{table}: {verb} {len(files)} file(s)", markup=False)
    console.print(f"{verb} {total} file(s) in {len(done)} table(s) (retention "
                  f"{retain_hours:g} h)", markup=False)


@store_app.command("migrate")
def migrate_command(
    old_root: Annotated[str, typer.Argument(help="Folder of a store in the old Parquet layout.")],
    store: StoreOption = None,
) -> None:
    """Copy a store written by an older Recurra (Parquet layout) into the Delta store."""
    from recurra.data.store import Store
    from recurra.data.store_maintenance import migrate

    try:
        target = Store(store)
        report = migrate(old_root, target)
    except RecurraError as error:
        _fail(error)
    tables = ", ".join(f"{n} ({rows} rows)" for n, rows in report.tables.items()) or "none"
    console.print(f"migrated {report.n_series} series ({report.n_rows} rows) and tables: "
                  f"{tables} into {target.uri}", markup=False)
    if report.skipped:
        console.print(f"kept as they were (already in the new store): "
                      f"{', '.join(report.skipped)}", markup=False)
