"""Save and load any fitted estimator as a folder: ``meta.json`` + ``state.pt`` +
``state.pkl``.

An estimator takes part by having a frozen-dataclass ``config`` and two methods:
``_get_state() -> dict`` (tensors, numpy arrays, plain values: everything ``fit`` set) and
``_set_state(state: dict) -> None``. :func:`load_estimator` rebuilds the class named in
``meta.json`` from its config and restores the state, on CPU or on a given device.

Format 2 splits the state: every tensor goes, in one list, to ``state.pt`` (``torch.save``),
and the rest (dicts, numpy arrays, numbers: per-series
stream states with hundreds of thousands of small objects) to ``state.pkl`` through the C
pickler, with each tensor replaced by its index.  ``torch.save`` of the whole state calls a
Python hook for every object, which made saving a 1,000-series stream state take ~0.5 s of
each scheduled run.  Format 1 folders (one ``torch.save`` of everything) still load.
Both are pickles: load only models from a store or registry you trust.
"""

from __future__ import annotations

import copyreg
import dataclasses
import importlib
import io
import json
import os
import pickle
import tempfile
from pathlib import Path
from typing import Any

import torch

from recurra import _legacy as _legacy_pickle
from recurra._legacy import modern_path
from recurra.data.config_tree import build_config
from recurra.data.schema import RecurraError

FORMAT_VERSION = 2
READABLE_FORMATS = (1, 2)
META_FILE = "meta.json"
STATE_FILE = "state.pt"  # format 2: the tensors; format 1: the whole state
SKELETON_FILE = "state.pkl"  # format 2: the state with tensors replaced by their index


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
    """Write ``estimator`` to the folder ``path`` (atomically: temp folder, then rename)."""
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
    staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=target.parent))
    (staging / META_FILE).write_text(json.dumps(meta, indent=2))
    tensors, skeleton = split_tensors(estimator._get_state())
    torch.save(tensors, staging / STATE_FILE)
    (staging / SKELETON_FILE).write_bytes(skeleton)
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
    meta = json.loads(meta_path.read_text())
    version = meta.get("format_version")
    if version not in READABLE_FORMATS:
        raise RecurraError(f"{folder}: format_version {version} is not supported (this "
                           f"Recurra reads {', '.join(map(str, READABLE_FORMATS))})")
    cls = _import(meta["class"])  # paths from before the recurra package map (_legacy)
    config_class = _import(meta["config_class"])
    # an estimator class may rebuild a config saved under an older class as its own
    config_class = getattr(cls, "config_class_for", lambda saved: saved)(config_class)
    config = config_from_dict(config_class, meta["config"])
    estimator = cls(config)
    if version == 1:
        state = torch.load(folder / STATE_FILE, map_location=map_location, weights_only=False,
                           pickle_module=_legacy_pickle)
    else:
        # a plain list of tensors (weights_only=True would read it too, ~3x slower on
        # thousands of per-series tensors; the skeleton is a pickle anyway)
        tensors = torch.load(folder / STATE_FILE, map_location=map_location, weights_only=False)
        state = join_tensors(tensors, (folder / SKELETON_FILE).read_bytes())
    estimator._set_state(state)
    if callable(getattr(estimator, "to", None)):
        estimator.to(map_location)
    if expected is not None and not isinstance(estimator, expected):
        raise RecurraError(f"{folder} holds a {cls.__name__}, not a {expected.__name__}")
    return estimator


def _tensor_at(index: int) -> Any:  # the global a skeleton names; resolved by _Joiner
    raise RecurraError("a state skeleton must be read with join_tensors")


class _Splitter(pickle.Pickler):
    """Pickles everything but tensors, which it collects and replaces by their index."""

    def __init__(self, file: io.BytesIO) -> None:
        super().__init__(file, protocol=pickle.HIGHEST_PROTOCOL)
        self.tensors: list[torch.Tensor] = []
        self.dispatch_table = copyreg.dispatch_table.copy()
        for kind in (torch.Tensor, torch.nn.Parameter):
            self.dispatch_table[kind] = self._reduce_tensor

    def _reduce_tensor(self, tensor: torch.Tensor) -> tuple:
        self.tensors.append(tensor)
        return _tensor_at, (len(self.tensors) - 1,)


class _Joiner(pickle.Unpickler):
    """Reads a skeleton back, resolving its tensor indices and old module paths."""

    def __init__(self, file: io.BytesIO, tensors: list[torch.Tensor]) -> None:
        super().__init__(file)
        self._tensors = tensors

    def find_class(self, module: str, name: str) -> Any:
        module = modern_path(module)
        if module == __name__ and name == "_tensor_at":
            return self._tensors.__getitem__
        return super().find_class(module, name)


def split_tensors(state: Any) -> tuple[list[torch.Tensor], bytes]:
    """``(tensors, skeleton)``: the tensors inside ``state`` and the pickled rest."""
    buffer = io.BytesIO()
    splitter = _Splitter(buffer)
    splitter.dump(state)
    return splitter.tensors, buffer.getvalue()


def join_tensors(tensors: list[torch.Tensor], skeleton: bytes) -> Any:
    """The inverse of :func:`split_tensors`."""
    return _Joiner(io.BytesIO(skeleton), list(tensors)).load()


def _import(dotted: str) -> Any:
    module_name, _, attribute = modern_path(dotted).rpartition(".")
    return getattr(importlib.import_module(module_name), attribute)


def _remove_tree(path: Path) -> None:
    for child in sorted(path.rglob("*"), reverse=True):
        child.rmdir() if child.is_dir() else child.unlink()
    path.rmdir()
