"""Where Recurra keeps its state: one folder, configurable, embedded by default.

``RECURRA_HOME`` (default ``./.recurra`` in the working folder) holds the store (Delta tables),
the MLflow SQLite database and artifacts, Prefect's home and the HTML reports. Each part can
be moved on its own (``RECURRA_STORE``, ``MLFLOW_TRACKING_URI``, ``PREFECT_HOME``).
"""

from __future__ import annotations

import os
from pathlib import Path


def recurra_home() -> Path:
    """The state folder (created on first use)."""
    home = Path(os.environ.get("RECURRA_HOME", Path.cwd() / ".recurra")).expanduser()
    home.mkdir(parents=True, exist_ok=True)
    return home.resolve()


def store_root() -> Path | str:
    """Root of the store: ``RECURRA_STORE`` or ``<home>/store``.

    A local folder (created on first use) comes back as a resolved Path; an object-store
    URI (``s3://bucket/prefix``, ``gs://``, ``az://``...) comes back unchanged as text, for
    the Delta store to open with the usual environment settings (``AWS_*``).
    """
    root = os.environ.get("RECURRA_STORE", "").strip()
    if root and "://" in root and not root.lower().startswith("file://"):
        return root.rstrip("/")
    if root.lower().startswith("file://"):
        root = root[7:]
    path = Path(root).expanduser() if root else recurra_home() / "store"
    path.mkdir(parents=True, exist_ok=True)
    return path.resolve()


def reports_dir() -> Path:
    """Folder of the self-contained HTML reports."""
    path = recurra_home() / "reports"
    path.mkdir(parents=True, exist_ok=True)
    return path


def sample_data_dir() -> Path:
    """The bundled sample data (see recurra/data/sample/SOURCES.md)."""
    return Path(__file__).resolve().parent / "sample"
