"""Save and load any fitted estimator as a folder: ``meta.json`` + ``state.json`` +
``weights.pt`` (format 3, no pickle).

An estimator takes part by having a frozen-dataclass ``config`` and two methods:
``_get_state() -> dict`` (tensors, numpy arrays, plain values and recurra dataclasses:
everything ``fit`` set) and ``_set_state(state: dict) -> None``. :func:`load_estimator`
rebuilds the class named in ``meta.json`` from its config and restores the state, on CPU or
on a given device.

* ``meta.json``: ``format_version`` (3), ``class``, ``config_class``, ``config``.
* ``state.json``: the state as a versioned JSON tree (:mod:`recurra.nn.state_tree`), the
  name and SHA-256 of the weights file.  Classes are named, and only those under
  ``recurra.`` are rebuilt (old module paths map through :mod:`recurra._legacy`).
* ``weights.pt``: the array data, packed into a few flat ``uint8`` buffers (one per numpy
  dtype, one for all tensor storages), written by ``torch.save`` and read with
  ``torch.load(..., weights_only=True)``.  Packing keeps a 1,000-series stream state with
  tens of thousands of small arrays to a few large reads (``benchmarks/persistence.py``).

Folders of formats 1 and 2 (pickles) still load through
:mod:`recurra.nn._persistence_legacy`, the only place that reads pickles.  A corrupt or
truncated file raises :class:`~recurra.data.schema.RecurraError` naming it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import torch

from recurra._legacy import modern_path
from recurra.data.config_tree import build_config
from recurra.data.schema import RecurraError
from recurra.nn._persistence_legacy import read_legacy_state
from recurra.nn.state_tree import decode_state, encode_state

FORMAT_VERSION = 3
READABLE_FORMATS = (1, 2, 3)
META_FILE = "meta.json"
TREE_FILE = "state.json"  # format 3: the state as a JSON tree
WEIGHTS_FILE = "weights.pt"  # format 3: the packed array buffers (torch.save, no objects)


def config_to_dict(config: Any) -> dict[str, Any]:
    """A JSON-able dict of a (possibly nested) config dataclass."""
    return json.loads(json.dumps(dataclasses.asdict(config), default=_json_default))


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple | set):
        return list(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"cannot store {type(value).__name__} in a config")


def config_from_dict(config_class: type, values: dict[str, Any]) -> Any:
    """Rebuild a config dataclass from :func:`config_to_dict` output, its parts included;
    a config saved before the class was split into parts (flat keys) and keys of fields
    that no longer exist still load (:func:`recurra.data.config_tree.build_config`)."""
    return build_config(config_class, values, where=f"saved {config_class.__name__}",
                        warn=False, unknown="ignore")


def save_estimator(estimator: Any, path: str | Path) -> Path:
    """Write ``estimator`` to the folder ``path`` in format 3 (atomically: a staging folder,
    then a rename). A state holding something format 3 cannot store (a class outside
    ``recurra``) raises before anything is written, naming where in the state it sits."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    cls = type(estimator)
    meta = {
        "format_version": FORMAT_VERSION,
        "class": f"{cls.__module__}.{cls.__qualname__}",
        "config_class": f"{type(estimator.config).__module__}."
                        f"{type(estimator.config).__qualname__}",
        "config": config_to_dict(estimator.config),
    }
    tree, buffers = encode_state(estimator._get_state())  # fails before anything is written
    weights = io.BytesIO()
    torch.save(buffers, weights)
    data = weights.getvalue()
    document = {"weights": WEIGHTS_FILE, "sha256": hashlib.sha256(data).hexdigest(), **tree}
    staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=target.parent))
    (staging / META_FILE).write_text(json.dumps(meta, indent=2))
    (staging / WEIGHTS_FILE).write_bytes(data)
    (staging / TREE_FILE).write_text(json.dumps(document, allow_nan=False,
                                                separators=(",", ":")))
    if target.exists():
        backup = target.with_name(f".{target.name}.old")
        os.replace(target, backup)
        os.replace(staging, target)
        _remove_tree(backup)
    else:
        os.replace(staging, target)
    return target


def load_estimator(path: str | Path, *, map_location: str | torch.device = "cpu",
                   expected: type | None = None) -> Any:
    """Load what :func:`save_estimator` wrote onto ``map_location`` (default CPU): the tensors
    are read onto it and an estimator with a ``to(device)`` method (the neural forecasters
    and detectors) then moves its module and its state tensors there together, so predict
    and update never mix devices. Raises a clear error for a wrong folder, or when
    ``expected`` is given and the saved estimator is not an instance of it."""
    folder = Path(path)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise RecurraError(f"{folder} is not a saved Recurra model: {META_FILE} is missing")
    meta = _read_json(meta_path)
    version = meta.get("format_version") if isinstance(meta, dict) else None
    if version not in READABLE_FORMATS:
        raise RecurraError(f"{folder}: format_version {version} is not supported (this "
                           f"Recurra reads {', '.join(map(str, READABLE_FORMATS))})")
    cls = _import(meta["class"])  # paths from before the recurra package map (_legacy)
    config_class = _import(meta["config_class"])
    # an estimator class may rebuild a config saved under an older class as its own
    config_class = getattr(cls, "config_class_for", lambda saved: saved)(config_class)
    config = config_from_dict(config_class, meta["config"])
    estimator = cls(config)
    if version == 3:
        state = read_state(folder, map_location=map_location)
    else:  # the legacy path: pickles, read only for folders saved before format 3
        state = read_legacy_state(folder, version, map_location)
    estimator._set_state(state)
    if callable(getattr(estimator, "to", None)):
        estimator.to(map_location)
    if expected is not None and not isinstance(estimator, expected):
        raise RecurraError(f"{folder} holds a {cls.__name__}, not a {expected.__name__}")
    return estimator


def read_state(folder: Path, *, map_location: str | torch.device | None = "cpu") -> Any:
    """The fitted state of a format-3 ``folder``: ``state.json`` decoded with the buffers of
    its weights file (checked against the SHA-256 that ``state.json`` records)."""
    tree_path = folder / TREE_FILE
    document = _read_json(tree_path)
    if not isinstance(document, dict) or not isinstance(document.get("weights"), str):
        raise RecurraError(f"{tree_path} is not a Recurra state file (no weights entry)")
    weights_path = folder / Path(document["weights"]).name
    try:
        data = weights_path.read_bytes()
    except OSError as error:
        raise RecurraError(f"{weights_path} cannot be read ({error})") from None
    if hashlib.sha256(data).hexdigest() != document.get("sha256"):
        raise RecurraError(f"{weights_path} is corrupt or truncated: its SHA-256 does not "
                           f"match the one {tree_path} records")
    try:
        buffers = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - torch raises many kinds on a bad file
        raise RecurraError(f"{weights_path} is not a weights file ({error})") from None
    if not isinstance(buffers, dict):
        raise RecurraError(f"{weights_path} does not hold named buffers")
    return decode_state(document, buffers, map_location=map_location, source=str(tree_path))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise RecurraError(f"{path} cannot be read as JSON ({error})") from None


def _import(dotted: str) -> Any:
    module_name, _, attribute = modern_path(dotted).rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()
