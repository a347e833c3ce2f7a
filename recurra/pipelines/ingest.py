"""Prefect 3 flow around :mod:`recurra.data.ingest`: one task per source, retried on transient I/O
errors with exponential backoff, cached by the content of the source files.

Runs in ephemeral mode (no server needed): ``ingest_flow([SourceSpec("nab", "data/")])``.

Caching: the key of a source task is the SHA-256 of (kind, options, store root, and the
bytes of every file of the source, in path order). Re-running the flow on unchanged files
skips the load and returns the cached :class:`~recurra.data.ingest.SourceReport` (the store already
holds those rows). Caveat: if the store folder is wiped, pass ``refresh=True`` (or delete
Prefect's result storage) so the sources are loaded again.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.tasks import exponential_backoff

from recurra.data.ingest import IngestReport, SourceReport, SourceSpec, ingest_source
from recurra.data.schema import SchemaError
from recurra.data.store import Store

IO_RETRIES = 3
CACHE_EXPIRATION = dt.timedelta(days=30)
NOT_TRANSIENT = (FileNotFoundError, IsADirectoryError, PermissionError, NotADirectoryError)


def source_fingerprint(spec: SourceSpec, store_root: str) -> str:
    """SHA-256 of the source's kind, options, store root and file bytes."""
    digest = hashlib.sha256()
    header = {"kind": spec.kind, "options": dict(spec.options), "store": store_root}
    digest.update(json.dumps(header, sort_keys=True, default=str).encode())
    path = Path(spec.path)
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        try:
            with file.open("rb") as handle:
                for block in iter(lambda h=handle: h.read(1 << 20), b""):
                    digest.update(block)
        except OSError:
            digest.update(b"<unreadable>")  # the task itself reports the problem
    return digest.hexdigest()


def _cache_key(context: Any, arguments: dict[str, Any]) -> str:
    spec, root = arguments["spec"], arguments["store_root"]
    return f"ingest-{source_fingerprint(spec, root)}"


def _is_transient(task_: Any, task_run: Any, state: Any) -> bool:
    """Retry OSErrors (network share hiccups, busy files), not bad input or missing files."""
    try:
        state.result()
    except NOT_TRANSIENT:
        return False
    except OSError:
        return True
    except Exception:  # noqa: BLE001 - any other failure is not transient
        return False
    return False


@task(name="ingest-source", retries=IO_RETRIES, retry_delay_seconds=exponential_backoff(1),
      retry_jitter_factor=0.5, retry_condition_fn=_is_transient, cache_key_fn=_cache_key,
      cache_expiration=CACHE_EXPIRATION, persist_result=True,
      task_run_name="ingest-{spec.kind}")
def ingest_source_task(spec: SourceSpec, store_root: str) -> SourceReport:
    """Load one source into the store at ``store_root`` (see recurra.data.ingest.ingest_source)."""
    return ingest_source(spec, Store(store_root))


def _as_spec(source: SourceSpec | Mapping[str, Any]) -> SourceSpec:
    if isinstance(source, SourceSpec):
        return source
    if isinstance(source, Mapping) and {"kind", "path"} <= set(source):
        return SourceSpec(source["kind"], source["path"], dict(source.get("options", {})))
    raise SchemaError(f"source ({source!r}) must be a SourceSpec or a mapping with 'kind', "
                      "'path' and optional 'options'")


@flow(name="ingest-sources", log_prints=True)
def ingest_flow(sources: Sequence[SourceSpec | Mapping[str, Any]],
                store_root: str | None = None, refresh: bool = False) -> IngestReport:
    """Ingest ``sources`` into the store (default store when ``store_root`` is None).

    Returns the :class:`~recurra.data.ingest.IngestReport`; never raises for quarantined rows (the
    report says how many), only for invalid source specs.
    """
    specs = [_as_spec(s) for s in sources]
    root = str(Store(store_root).root)
    run = ingest_source_task.with_options(refresh_cache=True) if refresh else ingest_source_task
    reports = tuple(run(spec, root) for spec in specs)
    report = IngestReport(reports)
    print(f"ingested {len(reports)} source(s): {report.n_new} new row(s), "
          f"{report.n_quarantined} quarantined")
    return report
