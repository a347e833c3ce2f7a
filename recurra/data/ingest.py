"""Plain-Python ingestion: sources -> loaders -> store (+ quarantine), with a report.

>>> from recurra.data.store import Store
>>> report = ingest([SourceSpec("nab", "recurra/data/sample/nab")], Store(tmp))  # doctest: +SKIP
>>> report.n_quarantined                                                  # doctest: +SKIP
0

``recurra.pipelines.ingest`` wraps :func:`ingest_source` in Prefect tasks; this module never imports
Prefect.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from recurra.data import loaders
from recurra.data.paths import sample_data_dir
from recurra.data.quarantine import LoadError
from recurra.data.schema import SchemaError
from recurra.data.store import Store

LOADERS: dict[str, Callable[..., loaders.LoadResult]] = {
    "sensor": loaders.load_sensor,
    "nab": loaders.load_nab,
    "prices": loaders.load_prices,
    "matrix": loaders.load_matrix,
    "air": loaders.load_air_quality,
    "ett": loaders.load_ett,
    "physionet": loaders.load_physionet,
}
STATIC_TABLE = "static"


@dataclass(frozen=True)
class SourceSpec:
    """One source to ingest: a loader ``kind``, a ``path`` and loader keyword ``options``.

    >>> SourceSpec("prices", "prices.csv.gz", {"series_id": "SYN"}).kind
    'prices'
    """

    kind: str
    path: str | Path
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.kind not in LOADERS:
            raise SchemaError(f"`kind` ({self.kind!r}) must be one of {sorted(LOADERS)}")
        if not isinstance(self.options, Mapping):
            raise SchemaError(f"`options` ({self.options!r}) must be a mapping of loader "
                              "keyword arguments")

    @classmethod
    def from_path(cls, path: str | Path) -> SourceSpec:
        """A spec whose kind is guessed from the path (see :func:`guess_kind`)."""
        kind = guess_kind(path)
        options = {"series_id": loaders.file_stem(Path(path))} if kind == "matrix" else {}
        return cls(kind, path, options)

    def load(self) -> loaders.LoadResult:
        """Run the loader; a wrong option name raises SchemaError listing the loader's."""
        loader = LOADERS[self.kind]
        try:
            return loader(self.path, **dict(self.options))
        except TypeError as error:
            if "argument" not in str(error):
                raise
            import inspect

            valid = [p for p in inspect.signature(loader).parameters if p != "path"]
            raise SchemaError(f"`options` ({dict(self.options)}) do not fit loader "
                              f"{self.kind!r}: {error}; valid options: {valid}") from error


@dataclass(frozen=True)
class SourceReport:
    """What happened to one source (rows are records, see :mod:`recurra.data.loaders`)."""

    kind: str
    path: str
    n_rows_in: int = 0
    n_rows_kept: int = 0
    n_new: int = 0
    n_updated: int = 0
    n_unchanged: int = 0
    n_quarantined: int = 0
    by_reason: dict[str, int] = field(default_factory=dict)
    n_series: int = 0
    error: str | None = None
    warnings: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass(frozen=True)
class IngestReport:
    """Per-source reports and totals."""

    sources: tuple[SourceReport, ...]

    @property
    def n_quarantined(self) -> int:
        return sum(s.n_quarantined for s in self.sources)

    @property
    def n_new(self) -> int:
        return sum(s.n_new for s in self.sources)

    @property
    def errors(self) -> list[str]:
        return [f"{s.path}: {s.error}" for s in self.sources if s.error]

    @property
    def ok(self) -> bool:
        """No failed source and no quarantined row."""
        return not self.errors and self.n_quarantined == 0

    def to_frame(self) -> pl.DataFrame:
        rows = [{**s.as_dict(), "by_reason": json.dumps(s.by_reason),
                 "warnings": json.dumps(s.warnings)} for s in self.sources]
        return pl.DataFrame(rows)


def guess_kind(path: str | Path) -> str:
    """The loader for a bare path: a folder of ``PRSA_*`` files is ``air``, another folder
    ``nab``; ``ETT*`` is ``ett``; ``set-*``/``*physionet*`` is ``physionet``; ``.txt``
    (headerless matrix) is ``matrix``; any other file (CSV, Parquet) is ``sensor``."""
    path = Path(path)
    name = path.name.lower()
    if path.is_dir():
        return "air" if any(path.glob("PRSA_*")) else "nab"
    if name.startswith("prsa_"):
        return "air"
    if name.startswith("ett"):
        return "ett"
    if name.startswith("set-") or "physionet" in name:
        return "physionet"
    if name.endswith((".txt", ".txt.gz")):
        return "matrix"
    return "sensor"


def ingest_source(spec: SourceSpec, store: Store) -> SourceReport:
    """Load one source, upsert its rows, quarantine its rejects, store static features.

    A file-level problem (LoadError) is recorded in the quarantine as line 0 (the whole
    file) and returned in ``error``; it does not stop other sources.
    """
    try:
        result = spec.load()
    except LoadError as error:
        store.add_quarantine(pl.DataFrame({"source_file": [str(spec.path)], "line": [0],
                                           "reason": [f"file: {error}"], "raw": [""]}))
        return SourceReport(spec.kind, str(spec.path), error=str(error))
    upsert = store.upsert(result.frame, source=str(spec.path))
    store.add_quarantine(result.rejected)
    if result.static is not None and result.static.height:
        store.write_table(STATIC_TABLE, result.static, ["series_id"])
    return SourceReport(
        spec.kind, str(spec.path), result.n_rows_in, result.n_rows_kept, upsert.n_new,
        upsert.n_updated, upsert.n_unchanged, result.rejected.height, result.reasons(),
        result.frame["series_id"].n_unique(), warnings=list(result.warnings))


def ingest(sources: Sequence[SourceSpec | str | Path], store: Store | None = None, *,
           strict: bool = True) -> IngestReport:
    """Ingest every source into ``store`` (default store when ``None``).

    Parameters
    ----------
    sources : SourceSpec items; a bare path gets a kind from :func:`guess_kind`.
    strict : when True, raise :class:`SchemaError` after ingesting everything if any source
        failed or any row was quarantined (good rows are stored either way); when False,
        only report.
    """
    sources = [SourceSpec.from_path(s) if isinstance(s, str | Path) else s for s in sources]
    bad = [s for s in sources if not isinstance(s, SourceSpec)]
    if bad:
        raise SchemaError(f"`sources` must be SourceSpec(kind, path, options) items; got "
                          f"{bad[0]!r} (kinds: {sorted(LOADERS)})")
    store = store if store is not None else Store()
    report = IngestReport(tuple(ingest_source(spec, store) for spec in sources))
    if strict and not report.ok:
        problems = report.errors + [f"{s.path}: {s.n_quarantined} row(s) quarantined "
                                    f"{s.by_reason}" for s in report.sources if s.n_quarantined]
        raise SchemaError("ingest (strict): " + "; ".join(problems)
                          + " (good rows were stored; see Store.quarantine())")
    return report


def sample_sources(folder: str | Path | None = None) -> list[SourceSpec]:
    """The bundled sample data (recurra/data/sample, see SOURCES.md) as source specs."""
    root = Path(folder) if folder else sample_data_dir()
    return [
        SourceSpec("nab", root / "nab"),
        SourceSpec("air", root / "air"),
        SourceSpec("prices", root / "market_daily.csv.gz", {"symbol_column": "symbol"}),
    ]


def ingest_sample(store: Store | None = None) -> IngestReport:
    """Ingest the bundled sample data into ``store``; idempotent (re-running adds nothing)."""
    return ingest(sample_sources(), store, strict=False)
