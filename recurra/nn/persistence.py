"""Save and load any fitted estimator as a folder: ``meta.json`` + ``state.json`` +
``weights.pt`` (format 3, no pickle).

An estimator takes part by having a frozen-dataclass ``config`` and two methods:
``_get_state() -> dict`` (tensors, numpy arrays, plain values and recurra dataclasses:
everything ``fit`` set) and ``_set_state(state: dict) -> None``. :func:`load_estimator`
rebuilds the class named in ``meta.json`` from its config and restores the state, on CPU or
on a given device.

* ``meta.json``: ``format_version`` (3), ``class``, ``config_class``, ``config``.
* ``state.json``: the state as a versioned JSON tree (:mod:`recurra.nn.state_tree`), the
  name and SHA-256 of the weights file, and the caller's ``extra`` (plain JSON committed
  with the state, such as how far each series was consumed: :func:`saved_extra`).
  Classes are named, and only those under ``recurra.`` are rebuilt (old module paths map
  through :mod:`recurra._legacy`).
* ``weights.pt``: the array data, packed into a few flat ``uint8`` buffers (one per numpy
  dtype, one for all tensor storages), written by ``torch.save`` and read with
  ``torch.load(..., weights_only=True)``.  A save over an existing folder of the same model
  names it ``weights-<sha256 prefix>.pt`` (``state.json`` says which file it is).  Packing
  keeps a 1,000-series stream state with tens of thousands of small arrays to a few large
  reads (``benchmarks/persistence.py``).

Folders of formats 1 and 2 (pickles) still load through
:mod:`recurra.nn._persistence_legacy`, the only place that reads pickles.  A corrupt or
truncated file raises :class:`~recurra.data.schema.RecurraError` naming it.

Every file is flushed to disk (``fsync``) before the rename that publishes it, and the
folder after, so a save that returned survives a power cut as well as a killed process.
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


def save_estimator(estimator: Any, path: str | Path, *,
                   extra: dict[str, Any] | None = None) -> Path:
    """Write ``estimator`` to the folder ``path`` in format 3, atomically: a crash at any
    point leaves the previous save at ``path`` loadable (or nothing, for a new folder).

    ``extra`` (JSON values) is written into ``state.json`` and so committed in the same
    rename as the state: :func:`saved_extra` reads it back.  The scheduled detect run keeps
    there the last timestamp each series' state has consumed.

    A state holding something format 3 cannot store (a class outside ``recurra``) raises
    before anything is written, naming where in the state it sits.  Saving again over a
    format-3 folder of the same class and config (the scheduled runs' case) replaces its
    state in place: the new weights go to a file of their own, named by their SHA-256 and
    written only when they changed, and replacing ``state.json`` (one rename) commits; the
    previous weights file is removed after.  Otherwise the folder is written in full beside
    ``path`` and swapped in (the previous one kept as ``.<name>.old`` until then).
    """
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
    meta_text = json.dumps(meta, indent=2)
    tree, buffers = encode_state(estimator._get_state())  # fails before anything is written
    weights = io.BytesIO()
    torch.save(buffers, weights)
    data = weights.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    if extra is not None:
        tree = {**tree, "extra": extra}
    if _reads(target / META_FILE) == meta_text:
        current = _current_document(target)
        if current is not None:
            _replace_state(target, current, tree, data, digest)
            return target
    document = {"weights": WEIGHTS_FILE, "sha256": digest, **tree}
    staging = Path(tempfile.mkdtemp(prefix=".saving-", dir=target.parent))
    _write_durably(staging / META_FILE, meta_text.encode())
    _write_durably(staging / WEIGHTS_FILE, data)
    _write_durably(staging / TREE_FILE, _document_text(document).encode())
    _sync_folder(staging)
    backup = _backup(target)
    if target.exists():
        if backup.exists():  # left by a save that crashed after its swap
            _remove_tree(backup)
        os.replace(target, backup)
    os.replace(staging, target)  # a crash before this: the backup loads (saved_folder)
    _sync_folder(target.parent)
    if backup.exists():
        _remove_tree(backup)
    return target


def saved_extra(path: str | Path) -> dict[str, Any]:
    """The ``extra`` that :func:`save_estimator` committed with the last complete save at
    ``path`` (``{}`` when there is none, or for a folder of formats 1 and 2)."""
    folder = saved_folder(path)
    document = None if folder is None else _current_document(folder)
    extra = document.get("extra") if document is not None else None
    return extra if isinstance(extra, dict) else {}


def _write_durably(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` and flush it to disk before returning."""
    with open(path, "wb") as out:
        out.write(data)
        out.flush()
        os.fsync(out.fileno())


def _sync_folder(folder: Path) -> None:
    """Flush ``folder``'s entries (the renames into it) to disk, where the OS allows."""
    try:
        handle = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:  # some filesystems refuse fsync on a directory
        pass
    finally:
        os.close(handle)


def _replace_state(folder: Path, current: dict[str, Any], tree: dict[str, Any], data: bytes,
                   digest: str) -> None:
    """Commit a new state into a format-3 ``folder`` whose ``state.json`` is ``current``:
    write the weights under a new name (unless unchanged), then replace ``state.json``."""
    old_weights = current["weights"]
    name = old_weights if current.get("sha256") == digest else f"weights-{digest[:16]}.pt"
    if name != old_weights:
        partial = folder / f".{name}.partial"
        _write_durably(partial, data)
        os.replace(partial, folder / name)
    text = _document_text({"weights": name, "sha256": digest, **tree})
    if text != _reads(folder / TREE_FILE):
        handle, staged = tempfile.mkstemp(prefix=".state-", suffix=".json", dir=folder)
        os.close(handle)
        _write_durably(Path(staged), text.encode())
        os.replace(staged, folder / TREE_FILE)  # the commit
        _sync_folder(folder)
    for stale in folder.iterdir():  # the previous weights; leftovers of crashed saves
        if stale.name != name and (stale.name == WEIGHTS_FILE or stale.name.startswith(
                (".weights-", ".state-")) or (stale.name.startswith("weights-")
                                             and stale.name.endswith(".pt"))):
            stale.unlink(missing_ok=True)


def _current_document(folder: Path) -> dict[str, Any] | None:
    """The format-3 ``state.json`` of ``folder`` when its weights file is there, else None."""
    try:
        document = json.loads((folder / TREE_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return None
    weights = document.get("weights") if isinstance(document, dict) else None
    if not isinstance(weights, str) or Path(weights).name != weights \
            or not (folder / weights).is_file():
        return None
    return document


def _document_text(document: dict[str, Any]) -> str:
    return json.dumps(document, allow_nan=False, separators=(",", ":"))


def _reads(path: Path) -> str | None:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError):
        return None


def _backup(target: Path) -> Path:
    return target.with_name(f".{target.name}.old")


def saved_folder(path: str | Path) -> Path | None:
    """The folder holding the last complete save at ``path``: ``path`` itself, or the
    previous save kept beside it when a save crashed between moving it aside and moving
    the new folder in; None when there is none."""
    folder = Path(path)
    if (folder / META_FILE).is_file():
        return folder
    backup = _backup(folder)
    return backup if (backup / META_FILE).is_file() else None


def load_estimator(path: str | Path, *, map_location: str | torch.device = "cpu",
                   expected: type | None = None) -> Any:
    """Load what :func:`save_estimator` wrote onto ``map_location`` (default CPU): the tensors
    are read onto it and an estimator with a ``to(device)`` method (the neural forecasters
    and detectors) then moves its module and its state tensors there together, so predict
    and update never mix devices. Raises a clear error for a wrong folder, or when
    ``expected`` is given and the saved estimator is not an instance of it."""
    folder = saved_folder(path) or Path(path)
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
    for attempt in range(2):
        document = _read_json(tree_path)
        if not isinstance(document, dict) or not isinstance(document.get("weights"), str):
            raise RecurraError(f"{tree_path} is not a Recurra state file (no weights entry)")
        weights_path = folder / Path(document["weights"]).name
        try:
            data = weights_path.read_bytes()
            break
        except FileNotFoundError:
            if attempt or _current_document(folder) in (None, document):
                raise RecurraError(f"{weights_path} cannot be read (it is missing)") from None
            # a save replaced the state between the two reads: read the new one
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
