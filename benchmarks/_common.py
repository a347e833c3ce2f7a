"""Shared helpers for the benchmark scripts: one JSON line on stdout + a results file.

Every script under ``benchmarks/`` ends with::

    from _common import write_result
    write_result("grud_physionet", {"auc_roc": 0.85, "train_s": 120.0, ...})

which adds ``device``, ``versions`` (torch, numpy, polars, python), ``machine`` (measured
facts, :func:`machine_facts`: CPU count, torch threads, load average when the script started
and when it wrote its result) and ``timestamp`` (UTC, ISO 8601), prints the whole result
as ONE JSON line on stdout and writes it to ``benchmarks/results/<name>.json``.

Scripts are run as ``python benchmarks/<name>.py``; to import ``_common`` from them (and the
project packages), call :func:`setup_paths` first or insert the folders yourself.
"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import platform
import sys
from pathlib import Path
from typing import Any

BENCHMARKS_DIR = Path(__file__).resolve().parent
PROJECT_ROOT = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"
SHARED_DATA = PROJECT_ROOT.parent / "shared" / "data"


def add_write_flag(parser) -> None:
    """``--write``: the one way a run's JSON lands in ``benchmarks/results/``."""
    parser.add_argument("--write", action="store_true",
                        help="write the JSON to benchmarks/results/ (default: a temp folder)")


def keep_out_of_results(write: bool) -> None:
    """Unless ``write``, send :func:`write_result` to a fresh temp folder: exploratory and
    smoke runs never overwrite the committed figures."""
    global RESULTS_DIR
    if not write and RESULTS_DIR == BENCHMARKS_DIR / "results":
        import tempfile

        RESULTS_DIR = Path(tempfile.mkdtemp(prefix="recurra-bench-"))
        print(f"results go to {RESULTS_DIR} (pass --write for benchmarks/results/)",
              file=sys.stderr)


def load_average() -> list[float] | None:
    """The 1, 5 and 15 minute load averages, rounded (None where the OS has none)."""
    try:
        return [round(value, 2) for value in os.getloadavg()]
    except (AttributeError, OSError):  # pragma: no cover - Windows
        return None


LOAD_AT_START = load_average()  # every script imports this module before it measures


def machine_facts() -> dict[str, Any]:
    """What the machine was doing, measured rather than described: CPU count, torch
    threads, load average at the start (import of this module) and now, CPU model."""
    facts: dict[str, Any] = {"cpu_count": os.cpu_count(), "platform": platform.platform()}
    try:
        import torch

        facts["torch_threads"] = torch.get_num_threads()
        facts["cuda_available"] = torch.cuda.is_available()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    facts["load_average_start"] = LOAD_AT_START
    facts["load_average_end"] = load_average()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                facts["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return facts


def setup_paths() -> None:
    """Make ``import data``, ``import forecasting`` and ``import _common`` work from a script."""
    for folder in (str(PROJECT_ROOT), str(BENCHMARKS_DIR)):
        if folder not in sys.path:
            sys.path.insert(0, folder)


def device_name(device: Any = None) -> str:
    """A human-readable name of ``device`` (default: CUDA when available, else CPU)."""
    try:
        import torch
    except ImportError:  # pragma: no cover - torch is a dependency
        return f"cpu ({platform.processor() or platform.machine()})"
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def versions(extra: tuple[str, ...] = ()) -> dict[str, str]:
    """Versions of torch, numpy, polars, python (+ any ``extra`` importable package)."""
    import contextlib
    import importlib
    from importlib import metadata

    result = {"python": platform.python_version()}
    for name in ("torch", "numpy", "polars", *extra):
        try:  # the distribution's metadata: no import, no import-time banners on stdout
            result[name] = metadata.version(_DISTRIBUTIONS.get(name, name))
            continue
        except metadata.PackageNotFoundError:
            pass
        try:
            with contextlib.redirect_stdout(sys.stderr):
                module = importlib.import_module(name)
            result[name] = str(getattr(module, "__version__", "unknown"))
        except ImportError:
            result[name] = "not installed"
    return result


_DISTRIBUTIONS = {"sklearn": "scikit-learn", "cv2": "opencv-python"}


def _clean(value: Any) -> Any:
    """JSON-able copy: numpy scalars/arrays to Python, NaN/inf to None, tuples to lists."""
    if isinstance(value, dict):
        return {str(k): _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    if hasattr(value, "tolist"):  # numpy scalar or array, torch tensor
        return _clean(value.tolist())
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, Path):
        return str(value)
    return value


def write_result(name: str, result: dict, *, device: Any = None,
                 extra_versions: tuple[str, ...] = ()) -> None:
    """Print ``result`` as one JSON line and write it to ``benchmarks/results/<name>.json``.

    Parameters
    ----------
    name : file stem, e.g. ``"grud_physionet"`` or ``"forecast_ett"``.
    result : the figures (plus train_s, predict_s, epochs/steps...); ``device`` and
        ``versions`` are added unless already present.
    device : the torch device used (default: CUDA when available, else CPU).
    extra_versions : more packages whose versions to record (e.g. ``("pypots",)``).
    """
    payload = dict(result)
    payload.setdefault("benchmark", name)
    payload.setdefault("device", device_name(device))
    payload.setdefault("versions", versions(extra_versions))
    payload.setdefault("machine", machine_facts())
    payload.setdefault("timestamp", dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    payload = _clean(payload)
    line = json.dumps(payload, sort_keys=False)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    (RESULTS_DIR / f"{name}.json").write_text(line + "\n")
    print(line, flush=True)
