"""``recurra doctor``'s checks: is this environment ready to run Recurra?

Each check returns a :class:`Check` (name, status ``ok`` | ``warn`` | ``fail``, what was
found, and the fix when it is not ok). ``fail`` means a command will not work; ``warn``
means something optional is missing (a GPU, Chromium for the browser tests).

Example
-------
>>> checks = run_checks()                       # doctest: +SKIP
>>> [c.name for c in checks if c.status == "fail"]   # doctest: +SKIP
[]
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

TIMEOUT_S = 3.0
MIN_PYTHON = (3, 11)


@dataclass(frozen=True)
class Check:
    name: str
    status: str          # "ok" | "warn" | "fail"
    found: str
    fix: str = ""


def check_python() -> Check:
    version = ".".join(map(str, sys.version_info[:3]))
    if sys.version_info[:2] >= MIN_PYTHON:
        return Check("python", "ok", f"Python {version} ({sys.executable})")
    return Check("python", "fail", f"Python {version}",
                 f"install Python {'.'.join(map(str, MIN_PYTHON))}+ and rerun `make demo`")


def check_torch() -> Check:
    try:
        import torch
    except ImportError as error:
        return Check("torch", "fail", f"torch cannot be imported: {error}",
                     "run `make demo` (installs the pinned CPU torch) or "
                     "`pip install -c constraints.txt torch`")
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return Check("torch", "ok", f"torch {torch.__version__}, CUDA {torch.version.cuda}: "
                     f"{torch.cuda.device_count()} GPU(s), {name}; training uses cuda")
    cuda = torch.version.cuda
    found = f"torch {torch.__version__}, no GPU visible; training uses the CPU"
    if cuda:  # a CUDA build without a visible device: driver or CUDA_VISIBLE_DEVICES
        return Check("torch", "warn", found + f" (this build is for CUDA {cuda})",
                     "check `nvidia-smi` and CUDA_VISIBLE_DEVICES")
    return Check("torch", "ok", found + " (CPU build; for a GPU install a CUDA build of "
                 "torch from your index)")


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:  # noqa: S310 - user URL
        return f"HTTP {response.status}"


def check_mlflow() -> Check:
    from recurra.pipelines.mlflow_setup import is_server, sqlite_path, tracking_uri

    uri = tracking_uri()
    if is_server(uri):
        try:
            status = _get(uri.rstrip("/") + "/health")
        except (urllib.error.URLError, OSError) as error:
            return Check("mlflow", "fail", f"tracking server {uri} unreachable: {error}",
                         "start the server, or unset MLFLOW_TRACKING_URI to use the local "
                         "SQLite file")
        return Check("mlflow", "ok", f"tracking server {uri} ({status})")
    path = sqlite_path(uri)
    if path is not None:
        folder = path.parent
        if _writable(folder):
            return Check("mlflow", "ok", f"local SQLite store {uri}")
        return Check("mlflow", "fail", f"cannot write {folder} for {uri}",
                     "set RECURRA_HOME to a writable folder (or MLFLOW_TRACKING_URI)")
    return Check("mlflow", "ok", f"tracking URI {uri} (not checked)")


def check_prefect() -> Check:
    url = os.environ.get("PREFECT_API_URL", "")
    if not url:
        return Check("prefect", "ok", "no PREFECT_API_URL: flows run in ephemeral mode (no "
                     "server needed); `recurra serve` starts a local server")
    try:
        status = _get(url.rstrip("/") + "/health")
    except (urllib.error.URLError, OSError) as error:
        return Check("prefect", "fail", f"Prefect API {url} unreachable: {error}",
                     "start the server (`prefect server start`) or unset PREFECT_API_URL")
    return Check("prefect", "ok", f"Prefect API {url} ({status})")


def check_store() -> Check:
    location = os.environ.get("RECURRA_STORE", "")
    if "://" in location:
        return Check("store", "ok", f"store at {location} (object storage; not probed)")
    from recurra.data.paths import store_root

    try:
        root = Path(store_root())
    except OSError as error:
        return Check("store", "fail", f"store folder cannot be created: {error}",
                     "set RECURRA_HOME (or RECURRA_STORE) to a folder you can write")
    if _writable(root):
        return Check("store", "ok", f"store folder {root} is writable")
    return Check("store", "fail", f"store folder {root} is not writable",
                 "set RECURRA_HOME (or RECURRA_STORE) to a folder you can write")


def check_chromium() -> Check:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    if browser and driver:
        return Check("chromium", "ok", f"{browser} + {driver} (browser tests run)")
    missing = [n for n, p in (("chromium", browser), ("chromedriver", driver)) if not p]
    return Check("chromium", "warn", f"{' and '.join(missing)} not found: the browser tests "
                 "will skip", "apt-get install chromium chromium-driver (Debian)")


def _writable(folder: Path) -> bool:
    """Create ``folder`` if needed and write (then remove) a probe file in it."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".recurra-doctor-"):
            pass
        return True
    except OSError:
        return False


CHECKS: tuple[Callable[[], Check], ...] = (check_python, check_torch, check_mlflow,
                                           check_prefect, check_store, check_chromium)


def run_checks() -> list[Check]:
    """Every check; one that raises is reported as failed rather than stopping the rest."""
    results = []
    for check in CHECKS:
        try:
            results.append(check())
        except Exception as error:  # noqa: BLE001 - report, do not crash the doctor
            name = check.__name__.removeprefix("check_")
            results.append(Check(name, "fail", f"the check raised {error!r}"))
    return results
