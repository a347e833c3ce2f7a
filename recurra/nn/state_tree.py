"""An estimator's fitted state as a JSON tree plus flat byte buffers (persistence format 3).

:func:`encode_state` turns the ``_get_state()`` dict (nested dicts / lists / tuples, numpy
arrays and scalars, torch tensors, numbers, strings, None, and dataclasses, named tuples or
plain objects of ``recurra`` classes) into ``(tree, buffers)``: JSON, and 1-D ``uint8``
tensors by name that ``torch.save`` stores and ``torch.load(..., weights_only=True)`` reads
back, so no pickle is involved either way.
:func:`decode_state` is the inverse; it builds only classes under ``recurra.`` (old module
paths map through :func:`recurra._legacy.modern_path`).

Array data is packed: every numeric numpy array goes into one buffer per dtype (the tree
keeps ``[buffer, offset, shape]``), and every tensor storage into one ``tensors`` buffer
(storage, offset, size, stride, dtype): a 1,000-series state of tens of thousands of small
arrays costs a few large writes; its per-series objects are columns (one stacked array per
field), loaded with a few array operations and one object construction per series.  Views
of one storage load as views of one storage; an object met twice loads as one object.

Nodes: ``null``, booleans, integers, strings and lists stand for themselves, and so do finite
floats and dicts whose keys are strings none of which starts with ``$``.  Everything else is
an object whose first key is a tag:

=======================================  ===================================================
``{"$f": "nan"}``                        a non-finite float (``"inf"``, ``"-inf"``)
``{"$t": [...]}``                        a tuple
``{"$d": [[key, value], ...]}``          a dict with other keys
``{"$od": [[key, value], ...], "$a": {}}``  an ``OrderedDict`` and its attributes (torch's
                                         ``_metadata`` of a ``state_dict``)
``{"$set": [...]}``, ``{"$fset": [...]}``  a set, a frozenset
``{"$b": "base64"}``                     bytes
``{"$nd": [dtype, offset, shape]}``      a numeric array: ``prod(shape)`` elements of buffer
                                         ``array:<dtype>`` from ``offset`` (a 4th item
                                         ``"F"``: Fortran order)
``{"$nda": [dtype, shape, [...]]}``      a string, bytes or object array, elements in JSON
``{"$ns": [dtype, value]}``              a numpy scalar (datetimes as their int64)
``{"$dt": dtype}``                       a numpy dtype
``{"$tensor": [storage, offset, size, stride, dtype], "$p": 1, "$g": 1}``  a tensor
                                         (``$p``: an ``nn.Parameter``; ``$g``: requires grad)
``{"$tdtype": "float32"}``, ``{"$tdevice": "cuda:0"}``  a torch dtype, a torch device
``{"$dc": "recurra.x.Cls", "$v": {...}}``  a dataclass and its fields
``{"$nt": "recurra.x.Cls", "$v": [...]}``  a named tuple
``{"$obj": "recurra.x.Cls", "$v": {...}}``  a plain object and its ``__dict__``
``{"$ref": k}``                          the ``k``-th container / array / object again
``{"$cols": "dict", "k": [...], "r": {...}}``  a dict or list of many objects of one shape, as
                                         columns (tree version 2, :mod:`.state_columns`)
=======================================  ===================================================

>>> tree, buffers = encode_state({"h": np.zeros(3), "n": (1, 2)})
>>> tree["state"], sorted(buffers)
({'h': {'$nd': ['<f8', 0, [3]]}, 'n': {'$t': [1, 2]}}, ['array:<f8'])

Size: ~600 lines, because the encoder and the decoder are the two halves of one format, tag
by tag, and the table above is their shared specification (each tag written and read here).
"""

from __future__ import annotations

import base64
import collections
import contextlib
import dataclasses
import gc
import importlib
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from recurra._legacy import modern_path
from recurra.data.schema import RecurraError
from recurra.nn.state_columns import decode_container, encode_container

TREE_VERSION = 2  # 2: columnar nodes (recurra.nn.state_columns); 1 still loads
READABLE_TREE_VERSIONS = (1, 2)
ALLOWED_PREFIX = "recurra."
TENSORS = "tensors"
_SCALARS = (type(None), bool, int, str)
_JSON_KINDS = "USO"  # array kinds whose elements go to JSON
_BUFFER_KINDS = "biufcmM"


class StateTreeError(RecurraError):
    """A state that cannot be written in format 3, or a tree that cannot be read back."""


class _Unsupported(Exception):
    """Raised deep in the encoder; the path is added on the way up."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message, self.path = message, []


def encode_state(state: Any) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """``(tree, buffers)`` of ``state``: the JSON tree (``{"tree_version", "storages",
    "state"}``, ``storages`` listing ``[byte offset, bytes, device]`` of each tensor storage
    in the ``tensors`` buffer) and the named 1-D uint8 buffers."""
    encoder = _Encoder()
    try:
        with _gc_paused():
            node = encoder.encode(state)
    except _Unsupported as error:
        where = "state" + "".join(reversed(error.path))
        raise StateTreeError(f"{where}: {error.message}") from None
    buffers = encoder.buffers()
    return {"tree_version": TREE_VERSION, "storages": encoder.storage_rows,
            "state": node}, buffers


def decode_state(tree: Any, buffers: dict[str, torch.Tensor], *,
                 map_location: str | torch.device | None = None, source: str = "state") -> Any:
    """The state :func:`encode_state` encoded. Tensors go to ``map_location`` (default: the
    device each was saved from). ``source`` names the file in error messages."""
    if not isinstance(tree, dict) or tree.get("tree_version") not in READABLE_TREE_VERSIONS:
        version = tree.get("tree_version") if isinstance(tree, dict) else None
        readable = ", ".join(map(str, READABLE_TREE_VERSIONS))
        raise StateTreeError(f"{source}: state tree version {version!r} is not supported "
                             f"(this Recurra reads {readable})")
    try:
        decoder = _Decoder(buffers, map_location, source)
        decoder.storage_rows = tree["storages"]
        with _gc_paused():
            return decoder.decode(tree["state"])
    except StateTreeError:
        raise
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as error:
        raise StateTreeError(f"{source} is not a valid state tree ({type(error).__name__}: "
                             f"{error})") from None


@contextlib.contextmanager
def _gc_paused() -> Iterator[None]:
    """No garbage collection while a tree (no reference cycles of its own) is built: its many
    new nodes would trigger full collections of the whole heap (3x a 1,000-series encode)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class _Encoder:
    def __init__(self) -> None:
        self.memo: dict[int, int] = {}  # id(obj) -> its number in pre-order
        self.keep: list[Any] = []  # keeps memoised objects alive (ids stay unique)
        self.arrays: dict[str, list[np.ndarray]] = {}
        self.sizes: dict[str, int] = {}
        # (storage pointer, device) -> (storage row, byte offset of that storage in the row)
        self.storages: dict[tuple[int, str], tuple[int, int]] = {}
        self.storage_data: list[torch.Tensor] = []
        self.storage_rows: list[list[Any]] = []
        self.tensor_bytes = 0
        self.classes: dict[type, tuple[str, str]] = {}  # class -> (kind, name)
        self.dtype_keys: dict[np.dtype, str] = {}

    # -- entry points ------------------------------------------------------------------
    def encode(self, value: Any) -> Any:
        kind = type(value)
        if kind in _SCALARS:
            return value
        if kind is float:
            return value if math.isfinite(value) else {"$f": repr(value)}
        method = _METHODS.get(kind)
        if method is not None:
            return method(self, value)
        return self._other(value)

    def buffers(self) -> dict[str, torch.Tensor]:
        out = {}
        for dtype, parts in self.arrays.items():
            flat = np.concatenate([p.reshape(-1) for p in parts]) if parts else np.zeros(0)
            out[f"array:{dtype}"] = torch.from_numpy(
                np.ascontiguousarray(flat.astype(dtype, copy=False)).view(np.uint8))
        if self.storage_data:
            out[TENSORS] = torch.cat([d.cpu() for d in self.storage_data])
        return out

    # -- memo ----------------------------------------------------------------------------
    def _seen(self, value: Any) -> dict[str, int] | None:
        number = self.memo.get(id(value))
        if number is not None:
            return {"$ref": number}
        self.memo[id(value)] = len(self.memo)
        self.keep.append(value)
        return None

    # -- containers ----------------------------------------------------------------------
    def _list(self, value: list) -> Any:
        return self._seen(value) or encode_container(self, value) \
            or [self._item(v, i) for i, v in enumerate(value)]

    def _item(self, value: Any, key: Any) -> Any:
        try:
            return self.encode(value)
        except _Unsupported as error:
            error.path.append(f"[{key!r}]")
            raise

    def _tuple(self, value: tuple) -> Any:
        return {"$t": [self._item(v, i) for i, v in enumerate(value)]}

    def _dict(self, value: dict) -> Any:
        ref = self._seen(value) or encode_container(self, value)
        if ref:
            return ref
        if all(type(k) is str and not k.startswith("$") for k in value):
            return {k: self._item(v, k) for k, v in value.items()}
        return {"$d": [[self._item(k, "key"), self._item(v, k)] for k, v in value.items()]}

    def _ordered(self, value: collections.OrderedDict) -> Any:
        ref = self._seen(value)
        if ref:
            return ref
        items = [[self._item(k, "key"), self._item(v, k)] for k, v in value.items()]
        return {"$od": items, "$a": self._item(dict(vars(value)), "attributes")}

    def _set(self, value: set | frozenset) -> Any:
        tag = "$set" if type(value) is set else "$fset"
        if tag == "$set":
            ref = self._seen(value)
            if ref:
                return ref
        return {tag: [self._item(v, "item") for v in value]}

    # -- numpy ---------------------------------------------------------------------------
    def _array(self, value: np.ndarray) -> Any:
        ref = self._seen(value)
        if ref:
            return ref
        dtype = value.dtype
        if dtype.kind in _JSON_KINDS:
            items = [self._item(v, i) for i, v in enumerate(value.reshape(-1).tolist())]
            return {"$nda": [dtype.str, list(value.shape), items]}
        key = self.dtype_keys.get(dtype)
        if key is None:
            if dtype.kind not in _BUFFER_KINDS or dtype.fields is not None:
                raise _Unsupported(f"numpy dtype {dtype} cannot be stored in format 3")
            key = self.dtype_keys[dtype] = dtype.str
        fortran = value.ndim > 1 and not value.flags.c_contiguous and value.flags.f_contiguous
        offset = self.sizes.get(key, 0)
        self.arrays.setdefault(key, []).append(value.T if fortran else value)
        self.sizes[key] = offset + value.size
        node = [key, offset, list(value.shape)]
        if fortran:
            node.append("F")
        return {"$nd": node}

    def _numpy_scalar(self, value: np.generic) -> Any:
        dtype = value.dtype
        if dtype.kind in "mM":
            return {"$ns": [dtype.str, int(value.view(np.int64))]}
        if dtype.kind == "f" and dtype.itemsize <= 8:
            number = float(value)
            return {"$ns": [dtype.str, number if math.isfinite(number) else repr(number)]}
        if dtype.kind in "biu" or dtype.kind in "US":
            return {"$ns": [dtype.str, self.encode(value.item())]}
        return {"$ns": [dtype.str, self._array(np.asarray(value))]}

    # -- torch ---------------------------------------------------------------------------
    def _tensor(self, value: torch.Tensor) -> Any:
        ref = self._seen(value)
        if ref:
            return ref
        if value.layout != torch.strided or value.is_quantized:
            raise _Unsupported(f"a {value.layout} tensor cannot be stored in format 3")
        tensor = value.detach()
        if tensor.is_conj() or tensor.is_neg():
            tensor = tensor.resolve_conj().resolve_neg()
        index, offset = self._place(tensor)
        node: dict[str, Any] = {"$tensor": [index, offset, list(tensor.shape),
                                            list(tensor.stride()), _dtype_name(tensor.dtype)]}
        if isinstance(value, torch.nn.Parameter):
            node["$p"] = 1
        if value.requires_grad:
            node["$g"] = 1
        return node

    def _place(self, tensor: torch.Tensor) -> tuple[int, int]:
        """``(storage row, element offset)`` of ``tensor``'s data: its storage is added to
        the ``tensors`` buffer the first time it is met."""
        storage = tensor.untyped_storage()
        device = str(tensor.device)
        key = (storage.data_ptr(), device)
        index, shift = self.storages.get(key, (None, 0)) if storage.nbytes() else (None, 0)
        if shift % tensor.element_size():  # into a columnar stack at an odd offset: a copy
            index, shift = None, 0
        if index is None:
            index = len(self.storage_rows)
            if storage.nbytes():
                self.storages[key] = index, 0
            data = torch.empty(0, dtype=torch.uint8, device=tensor.device).set_(
                storage, 0, (storage.nbytes(),), (1,))
            self.storage_data.append(data)
            self.storage_rows.append([self.tensor_bytes, storage.nbytes(), device])
            self.tensor_bytes += storage.nbytes()
        return index, tensor.storage_offset() + shift // tensor.element_size()

    # -- classes -------------------------------------------------------------------------
    def _other(self, value: Any) -> Any:
        if isinstance(value, np.generic):
            return self._numpy_scalar(value)
        if isinstance(value, np.dtype):
            if value.fields is not None:
                raise _Unsupported(f"numpy dtype {value} cannot be stored in format 3")
            return {"$dt": value.str}
        if isinstance(value, torch.nn.Parameter):
            return self._tensor(value)
        cls = type(value)
        kind, name = self.classes.get(cls) or self._classify(cls)
        if kind == "$nt":
            return {"$nt": name, "$v": [self._item(v, i) for i, v in enumerate(value)]}
        ref = self._seen(value)
        if ref:
            return ref
        if kind == "$dc" and not hasattr(value, "__dict__"):  # slots=True
            attributes = {f.name: getattr(value, f.name) for f in dataclasses.fields(value)}
            return {"$dc": name, "$v": self._attributes(attributes)}
        return {kind: name, "$v": self._attributes(vars(value))}

    def _classify(self, cls: type) -> tuple[str, str]:
        name = f"{cls.__module__}.{cls.__qualname__}"
        if not name.startswith(ALLOWED_PREFIX):
            raise _Unsupported(f"{name} is not a recurra class: format 3 stores only plain "
                               "values, numpy arrays, tensors and recurra classes")
        if issubclass(cls, tuple) and hasattr(cls, "_fields"):
            kind = "$nt"
        elif _custom_pickling(cls):
            raise _Unsupported(f"{name} defines its own pickling; format 3 cannot store it")
        elif dataclasses.is_dataclass(cls):
            kind = "$dc"
        elif "__dict__" not in dir(cls) or hasattr(cls, "__slots__"):
            raise _Unsupported(f"{name} has no __dict__; format 3 cannot store it")
        else:
            kind = "$obj"
        self.classes[cls] = kind, name
        return kind, name

    def _attributes(self, attributes: dict[str, Any]) -> dict[str, Any]:
        out = {}
        for key, item in attributes.items():
            try:
                out[key] = self.encode(item)
            except _Unsupported as error:
                error.path.append(f".{key}")
                raise
        return out


_METHODS = {list: _Encoder._list, tuple: _Encoder._tuple, dict: _Encoder._dict,
            collections.OrderedDict: _Encoder._ordered, set: _Encoder._set,
            frozenset: _Encoder._set, np.ndarray: _Encoder._array,
            torch.Tensor: _Encoder._tensor, torch.nn.Parameter: _Encoder._tensor,
            bytes: lambda self, v: {"$b": base64.b64encode(v).decode("ascii")},
            torch.dtype: lambda self, v: {"$tdtype": _dtype_name(v)},
            torch.device: lambda self, v: {"$tdevice": str(v)}}


def _custom_pickling(cls: type) -> bool:
    return (cls.__reduce_ex__ is not object.__reduce_ex__
            or cls.__reduce__ is not object.__reduce__
            or getattr(cls, "__setstate__", None) is not None
            or getattr(cls, "__getstate__", object.__getstate__) is not object.__getstate__)


def _dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


class _Decoder:
    def __init__(self, buffers: dict[str, torch.Tensor],
                 map_location: str | torch.device | None, source: str) -> None:
        self.source = source
        self.memo: list[Any] = []
        self.arrays = {key.removeprefix("array:"): value.numpy()
                       for key, value in buffers.items() if key.startswith("array:")}
        self.views: dict[str, np.ndarray] = {}
        self.tensor_bytes = buffers.get(TENSORS)
        self.device = None if map_location is None else torch.device(map_location)
        self.storage_rows: list[list[Any]] = []
        self.storages: dict[int, torch.UntypedStorage] = {}
        self.moved: dict[str, torch.Tensor] = {}
        self.classes: dict[tuple[str, str], Any] = {}  # (tag, name) -> class, defaults

    def decode(self, node: Any) -> Any:
        kind = type(node)
        if kind is dict:
            if node:
                first = next(iter(node))
                if first.startswith("$"):
                    method = _TAGS.get(first)
                    if method is None:
                        raise self._error(f"unknown node {first!r}")
                    return method(self, node)
            out: dict[str, Any] = {}
            self.memo.append(out)
            for key, value in node.items():
                out[key] = self.decode(value)
            return out
        if kind is list:
            items: list[Any] = []
            self.memo.append(items)
            items.extend(self.decode(v) for v in node)
            return items
        return node

    def _error(self, message: str) -> StateTreeError:
        return StateTreeError(f"{self.source}: {message}")

    def _register(self, value: Any) -> int:
        self.memo.append(value)
        return len(self.memo) - 1

    def _pairs(self, pairs: list, into: dict) -> dict:
        for key, value in pairs:
            into[self.decode(key)] = self.decode(value)
        return into

    def _array(self, node: dict) -> np.ndarray:
        dtype, offset, shape, *order = node["$nd"]
        flat = self.views.get(dtype)
        if flat is None:
            flat = self.views[dtype] = self.arrays[dtype].view(np.dtype(dtype))
        size = math.prod(shape)
        if offset < 0 or offset + size > flat.shape[0]:
            raise self._error(f"array of {dtype} at {offset} runs past its buffer")
        if order:
            value = flat[offset:offset + size].reshape(shape[::-1]).T
        else:
            value = flat[offset:offset + size].reshape(shape)
        self.memo.append(value)
        return value

    def _json_array(self, node: dict) -> np.ndarray:
        dtype, shape, items = node["$nda"]
        index = self._register(None)
        decoded = [self.decode(v) for v in items]
        if np.dtype(dtype).kind == "O":
            value = np.empty(len(decoded), dtype=object)
            for i, item in enumerate(decoded):
                value[i] = item
            value = value.reshape(shape)
        else:
            value = np.array(decoded, dtype=dtype).reshape(shape)
        self.memo[index] = value
        return value

    def _numpy_scalar(self, node: dict) -> np.generic:
        dtype, value = node["$ns"]
        dtype = np.dtype(dtype)
        if dtype.kind in "mM":
            return np.int64(value).view(dtype)
        if isinstance(value, dict):
            return self.decode(value)[()]
        return dtype.type(value)

    def _tensor(self, node: dict) -> torch.Tensor:
        index, offset, size, stride, dtype = node["$tensor"]
        storage = self._storage(index)
        tensor = torch.empty(0, dtype=getattr(torch, dtype), device=storage.device).set_(
            storage, offset, size, stride)
        if node.get("$p"):
            tensor = torch.nn.Parameter(tensor, requires_grad=bool(node.get("$g")))
        elif node.get("$g"):
            tensor.requires_grad_(True)
        self.memo.append(tensor)
        return tensor

    def _storage(self, index: int) -> torch.UntypedStorage:
        storage = self.storages.get(index)
        if storage is None:
            start, nbytes, device = self.storage_rows[index]
            target = self.device or torch.device(device)
            data = self.moved.get(str(target))
            if data is None:
                if self.tensor_bytes is None:
                    raise self._error("names tensors but the weights hold none")
                data = self.moved[str(target)] = self.tensor_bytes.to(target)
            if start < 0 or start + nbytes > data.shape[0]:
                raise self._error(f"tensor storage {index} runs past the tensor buffer")
            storage = self.storages[index] = data[start:start + nbytes].clone() \
                .untyped_storage()
        return storage

    def _class(self, name: str, check: Any, what: str) -> type:
        path = modern_path(name)
        if not path.startswith(ALLOWED_PREFIX):
            raise self._error(f"names the class {name!r}, which is not under 'recurra.': "
                              "only recurra classes are loaded")
        module_name, _, attribute = path.rpartition(".")
        try:
            cls = getattr(importlib.import_module(module_name), attribute)
        except (ImportError, AttributeError):
            raise self._error(f"names the class {name!r}, which this Recurra does not "
                              "have") from None
        if not isinstance(cls, type) or not check(cls):
            raise self._error(f"names {name!r}, which is not a {what}")
        return cls

    def _dataclass(self, node: dict) -> Any:
        name = node["$dc"]
        known = self.classes.get(("$dc", name))
        if known is None:
            cls = self._class(name, dataclasses.is_dataclass, "dataclass")
            known = self.classes["$dc", name] = cls, dataclasses.fields(cls)
        cls, fields = known
        value = cls.__new__(cls)
        self.memo.append(value)
        saved = {key: self.decode(item) for key, item in node["$v"].items()}
        if len(saved) < len(fields) or any(f.name not in saved for f in fields):
            self._defaults(name, fields, saved)
        if hasattr(value, "__dict__"):
            value.__dict__.update(saved)  # frozen or not, as pickle restores them
        else:  # slots=True
            for key, item in saved.items():
                object.__setattr__(value, key, item)
        return value

    def _defaults(self, name: str, fields: tuple, saved: dict[str, Any]) -> None:
        """Fields the saved object lacks (added to the class later) take their defaults."""
        for field in fields:
            if field.name in saved:
                continue
            if field.default is not dataclasses.MISSING:
                saved[field.name] = field.default
            elif field.default_factory is not dataclasses.MISSING:
                saved[field.name] = field.default_factory()
            else:
                raise self._error(f"{name} lacks its field {field.name!r}")

    def _object(self, node: dict) -> Any:
        name = node["$obj"]
        cls = self.classes.get(("$obj", name))
        if cls is None:
            cls = self.classes["$obj", name] = self._class(
                name, lambda c: not _custom_pickling(c), "plain class")
        value = cls.__new__(cls)
        self.memo.append(value)
        value.__dict__.update({key: self.decode(item) for key, item in node["$v"].items()})
        return value

    def _named_tuple(self, node: dict) -> Any:
        name = node["$nt"]
        cls = self.classes.get(("$nt", name))
        if cls is None:
            cls = self.classes["$nt", name] = self._class(
                name, lambda c: issubclass(c, tuple) and hasattr(c, "_fields"), "named tuple")
        return cls._make(self.decode(v) for v in node["$v"])

    def _ordered(self, node: dict) -> collections.OrderedDict:
        out: collections.OrderedDict = collections.OrderedDict()
        self.memo.append(out)
        self._pairs(node["$od"], out)
        for key, value in self.decode(node["$a"]).items():
            setattr(out, key, value)
        return out

    def _plain_set(self, node: dict) -> set:
        out: set = set()
        self.memo.append(out)
        out.update(self.decode(v) for v in node["$set"])
        return out

    def _dict_pairs(self, node: dict) -> dict:
        out: dict = {}
        self.memo.append(out)
        return self._pairs(node["$d"], out)

    def _ref(self, node: dict) -> Any:
        index = node["$ref"]
        if not 0 <= index < len(self.memo):
            raise self._error(f"refers to object {index}, which comes later or not at all")
        return self.memo[index]


_TAGS = {
    "$f": lambda self, n: float(n["$f"]),
    "$t": lambda self, n: tuple(self.decode(v) for v in n["$t"]),
    "$d": _Decoder._dict_pairs,
    "$od": _Decoder._ordered,
    "$set": _Decoder._plain_set,
    "$fset": lambda self, n: frozenset(self.decode(v) for v in n["$fset"]),
    "$b": lambda self, n: base64.b64decode(n["$b"]),
    "$nd": _Decoder._array,
    "$nda": _Decoder._json_array,
    "$ns": _Decoder._numpy_scalar,
    "$dt": lambda self, n: np.dtype(n["$dt"]),
    "$tensor": _Decoder._tensor,
    "$tdtype": lambda self, n: getattr(torch, n["$tdtype"]),
    "$tdevice": lambda self, n: torch.device(n["$tdevice"]),
    "$dc": _Decoder._dataclass,
    "$nt": _Decoder._named_tuple,
    "$obj": _Decoder._object,
    "$ref": _Decoder._ref,
    "$cols": decode_container,
}
