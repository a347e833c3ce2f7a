"""Columnar nodes of the format-3 state tree (tree version 2): many objects of one shape as
columns.

A dict or list holding at least :data:`MIN_ROWS` values that are all *records* of one shape
(instances of one recurra dataclass or plain class with the same attributes, dicts with the
same string keys in the same order, or tuples of one length), such as ``{series_id:
StreamState}``, is written as one node instead of one node per object::

    {"$cols": "dict", "k": [keys...], "r": RECORDS}     (a list: "$cols": "list", no "k")
    RECORDS = {"of": "$dc" | "$obj" | "dict" | "tuple", "class": name, "n": rows,
               "f": [[field, COLUMN], ...]}

and each field is one column (``"none"``, where present, lists the rows whose value is
None; the column's data then covers only the other rows; ``"ref": [rows, numbers]`` the
rows whose value is an object met before, by its number in the ``$ref`` memo):

=========================  ==============================================================
``{"k": value}``           the same JSON scalar in every row (None, a bool, a number ...)
``{"s": [...]}``           JSON scalars, one per row
``{"fl": ARRAY}``          Python floats (any, NaN included), as one float64 array
``{"ns": ARRAY}``          numpy scalars of one dtype, as one array
``{"a": ARRAY}``           arrays of one dtype and shape, stacked (rows x shape)
``{"ra": ARRAY, "sh": ARRAY}``  arrays of one dtype and rank but different shapes: their
                           elements concatenated and an int64 (rows x rank) array of shapes
``{"t": TENSOR}``          tensors of one dtype, device and shape, each the sole owner of
                           its storage, stacked (views of one storage after loading)
``{"tv": [shape, stride, dtype], "at": ARRAY}``  tensors of one dtype, shape and stride
                           viewing other storages (rows of a batched state): an int64
                           (rows x 2) array of their storage and element offset
``{"r": RECORDS}``         records of one shape again (nested dataclasses, dicts, tuples)
``{"e": [nodes]}``         anything else: one ordinary node per row
=========================  ==============================================================

So loading rebuilds a column with one array operation and the rows with one ``__new__`` and
one ``__dict__`` update each.  Object identity is kept as the per-object nodes keep it:
every row object, array and tensor of a column takes its number in the ``$ref`` memo (rows
first, then the columns in order), and a value met before (or twice in one column) makes
its column ``"e"``, whose ordinary nodes write a ``$ref``.

Size: ~450 lines, because each column kind needs its writer and its reader, and they are
kept side by side so the table above reads against both halves.
"""

from __future__ import annotations

import dataclasses
import math
from operator import itemgetter
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

if TYPE_CHECKING:
    from recurra.nn.state_tree import _Decoder, _Encoder

MIN_ROWS = 8  # fewer values than this keep one node each (a columnar node pays off later)
_JSON_SCALARS = frozenset((type(None), bool, int, str))
_BUFFER_KINDS = "biufcmM"


class _NotColumnar(Exception):
    """Rows that cannot be written as columns; the caller writes ordinary nodes."""


# -- encoding ----------------------------------------------------------------------------
def encode_container(encoder: _Encoder, value: dict | list) -> dict[str, Any] | None:
    """The columnar node of ``value`` (already numbered in the memo), or None when its values
    are too few or not records of one shape; nothing is numbered in the memo then."""
    rows = list(value.values()) if type(value) is dict else value
    if len(rows) < MIN_ROWS:
        return None
    shape = _record_shape(encoder, rows)
    if shape is None:
        return None
    if type(value) is list:
        return {"$cols": "list", "r": _encode_records(encoder, rows, shape)}
    keys = list(value)
    if all(type(k) is str for k in keys):
        return {"$cols": "dict", "k": keys, "r": _encode_records(encoder, rows, shape)}
    key_nodes = [encoder._item(k, "key") for k in keys]
    return {"$cols": "dict", "k": key_nodes, "kn": 1,
            "r": _encode_records(encoder, rows, shape)}


def _record_shape(encoder: _Encoder, rows: list) -> tuple[str, str | None, tuple] | None:
    """``(kind, class name, field names)`` shared by every row, or None."""
    cls = type(rows[0])
    if any(type(r) is not cls for r in rows):
        return None
    if cls is tuple:
        length = len(rows[0])
        return ("tuple", None, tuple(range(length))) \
            if all(len(r) == length for r in rows) else None
    if not _fresh(encoder, rows):
        return None
    if cls is dict:
        names = tuple(rows[0])
        if any(type(k) is not str for k in names) or any(tuple(r) != names for r in rows):
            return None
        return "dict", None, names
    try:
        kind, name = encoder.classes.get(cls) or encoder._classify(cls)
    except Exception:  # noqa: BLE001 - the ordinary nodes raise it with its path
        return None
    if kind not in ("$dc", "$obj") or not hasattr(rows[0], "__dict__"):
        return None
    keys = rows[0].__dict__.keys()
    if any(r.__dict__.keys() != keys for r in rows):
        return None
    return kind, name, tuple(keys)


def _fresh(encoder: _Encoder, values: list) -> bool:
    """No value was numbered before and none is there twice."""
    ids = set(map(id, values))
    return len(ids) == len(values) and ids.isdisjoint(encoder.memo.keys())


def _number(encoder: _Encoder, values: list) -> None:
    start = len(encoder.memo)
    encoder.memo.update(zip(map(id, values), range(start, start + len(values)),
                            strict=True))
    encoder.keep.extend(values)


def _encode_records(encoder: _Encoder, rows: list, shape: tuple) -> dict[str, Any]:
    kind, name, names = shape
    if kind != "tuple":
        _number(encoder, rows)
    node: dict[str, Any] = {"of": kind, "class": name, "n": len(rows), "f": []}
    if name is None:
        del node["class"]
    if not names:
        return node
    if kind == "tuple":
        columns = zip(*rows, strict=True)
    else:
        getter = itemgetter(*names)
        dicts = rows if kind == "dict" else [r.__dict__ for r in rows]
        columns = zip(*map(getter, dicts), strict=True) if len(names) > 1 \
            else ([getter(d) for d in dicts],)
    for field, values in zip(names, columns, strict=True):
        try:
            node["f"].append([field, _encode_column(encoder, list(values))])
        except Exception as error:
            if hasattr(error, "path"):  # state_tree._Unsupported
                error.path.append(f"[*].{field}" if kind != "dict" else f"[*][{field!r}]")
            raise
    return node


def _encode_column(encoder: _Encoder, values: list) -> dict[str, Any]:
    types = set(map(type, values))
    if types <= _JSON_SCALARS:
        first = values[0]
        if len(types) == 1 and values.count(first) == len(values):
            return {"k": first}
        return {"s": values}
    if types <= {float, type(None)}:
        return _with_none(values, lambda present: {"fl": encoder._array(
            np.array(present, dtype=np.float64))})
    if types <= _JSON_SCALARS | {float} and all(
            math.isfinite(v) for v in values if type(v) is float):
        return {"s": values}
    has_none = type(None) in types
    types.discard(type(None))
    if len(types) == 1:
        (cls,) = types
        encode = lambda present: _typed(encoder, cls, present)  # noqa: E731
        try:
            if not has_none and encoder.memo.keys().isdisjoint(map(id, values)):
                return encode(values)  # the common case, without a loop over the rows
            return _split_rows(encoder, values, encode)
        except _NotColumnar:
            pass
    return {"e": [encoder.encode(v) for v in values]}


def _with_none(values: list, encode: Any) -> dict[str, Any]:
    none = [i for i, v in enumerate(values) if v is None]
    if not none:
        return encode(values)
    node = encode([v for v in values if v is not None])
    node["none"] = none
    return node


def _split_rows(encoder: _Encoder, values: list, encode: Any) -> dict[str, Any]:
    """Like :func:`_with_none`, and rows holding an object numbered before (a stream state
    still sharing its calibration's arrays) go to ``"ref"``: ``[rows, memo numbers]``."""
    memo = encoder.memo
    none, ref_rows, ref_numbers, present = [], [], [], []
    for row, value in enumerate(values):
        if value is None:
            none.append(row)
            continue
        number = memo.get(id(value))
        if number is None:
            present.append(value)
        else:
            ref_rows.append(row)
            ref_numbers.append(number)
    node = encode(present) if present else {"e": []}
    if none:
        node["none"] = none
    if ref_rows:
        node["ref"] = [ref_rows, ref_numbers]
    return node


def _typed(encoder: _Encoder, cls: type, present: list) -> dict[str, Any]:
    if cls is np.ndarray:
        return _arrays(encoder, present)
    if cls is torch.Tensor:
        try:
            return _tensors(encoder, present)
        except _NotColumnar:
            return _tensor_views(encoder, present)
    if issubclass(cls, np.generic):
        dtype = present[0].dtype
        if dtype.kind not in _BUFFER_KINDS or any(v.dtype != dtype for v in present):
            raise _NotColumnar
        return {"ns": encoder._array(np.array(present, dtype=dtype))}
    if cls is dict or cls is tuple or hasattr(cls, "__dict__"):
        shape = _record_shape(encoder, present)
        if shape is not None:
            return {"r": _encode_records(encoder, present, shape)}
    raise _NotColumnar


def _arrays(encoder: _Encoder, arrays: list[np.ndarray]) -> dict[str, Any]:
    first = arrays[0]
    dtype, shape, ndim = first.dtype, first.shape, first.ndim
    if dtype.kind not in _BUFFER_KINDS or dtype.fields is not None \
            or not _fresh(encoder, arrays):
        raise _NotColumnar
    layouts = {(a.dtype, a.shape) for a in arrays}
    if len(layouts) > 1 and (len({d for d, _ in layouts}) > 1
                             or len({len(s) for _, s in layouts}) > 1):
        raise _NotColumnar
    if ndim > 1 and any(not a.flags.c_contiguous and a.flags.f_contiguous for a in arrays):
        raise _NotColumnar  # Fortran order loads as it was: ordinary nodes
    if len(layouts) == 1:
        stacked = np.concatenate(arrays).reshape(len(arrays), *shape) if ndim \
            else np.stack(arrays)
        node = {"a": encoder._array(stacked)}
    else:
        flat = np.concatenate([a.reshape(-1) for a in arrays])
        shapes = np.array([a.shape for a in arrays], dtype=np.int64).reshape(len(arrays), ndim)
        node = {"ra": encoder._array(flat), "sh": encoder._array(shapes)}
    _number(encoder, arrays)
    return node


def _tensors(encoder: _Encoder, tensors: list[torch.Tensor]) -> dict[str, Any]:
    first = tensors[0]
    dtype, device, shape = first.dtype, first.device, first.shape
    nbytes = first.numel() * first.element_size()
    if not nbytes or not _fresh(encoder, tensors):
        raise _NotColumnar
    keys = []
    for tensor in tensors:
        if (tensor.dtype != dtype or tensor.device != device or tensor.shape != shape
                or tensor.requires_grad or tensor.layout != torch.strided
                or tensor.is_quantized or tensor.is_conj() or tensor.is_neg()
                or not tensor.is_contiguous() or tensor.storage_offset()):
            raise _NotColumnar
        storage = tensor.untyped_storage()
        if storage.nbytes() != nbytes:  # a view of a larger storage: ordinary nodes
            raise _NotColumnar
        keys.append((storage.data_ptr(), str(device)))
    if len(set(keys)) != len(keys) or any(k in encoder.storages for k in keys):
        raise _NotColumnar
    node = {"t": encoder._tensor(torch.stack(tensors))}
    index = node["t"]["$tensor"][0]
    for row, key in enumerate(keys):  # a later view of a row's storage refers into the stack
        encoder.storages[key] = (index, row * nbytes)
    _number(encoder, tensors)
    return node


def _tensor_views(encoder: _Encoder, tensors: list[torch.Tensor]) -> dict[str, Any]:
    """Tensors of one dtype, device, shape and stride that view other storages (rows of a
    batched state): the storages are stored once each, the rows as storage and offset."""
    first = tensors[0]
    dtype, device, shape, stride = first.dtype, first.device, first.shape, first.stride()
    if not _fresh(encoder, tensors):
        raise _NotColumnar
    for tensor in tensors:
        if (tensor.dtype != dtype or tensor.device != device or tensor.shape != shape
                or tensor.stride() != stride or tensor.requires_grad
                or tensor.layout != torch.strided or tensor.is_quantized
                or tensor.is_conj() or tensor.is_neg()):
            raise _NotColumnar
    places = np.array([encoder._place(t) for t in tensors], dtype=np.int64).reshape(-1, 2)
    node = {"tv": [list(shape), list(stride), str(dtype).removeprefix("torch.")],
            "at": encoder._array(places)}
    _number(encoder, tensors)
    return node


# -- decoding ----------------------------------------------------------------------------
def decode_container(decoder: _Decoder, node: dict[str, Any]) -> dict | list:
    if node["$cols"] == "list":
        out: Any = []
        decoder.memo.append(out)
        out.extend(_decode_records(decoder, node["r"]))
        return out
    out = {}
    decoder.memo.append(out)
    keys = [decoder.decode(k) for k in node["k"]] if node.get("kn") else node["k"]
    rows = _decode_records(decoder, node["r"])
    if len(keys) != len(rows):
        raise decoder._error(f"a columnar node has {len(keys)} keys for {len(rows)} rows")
    out.update(zip(keys, rows, strict=True))
    return out


def _decode_records(decoder: _Decoder, node: dict[str, Any]) -> list:
    kind, n_rows = node["of"], node["n"]
    names = [field for field, _ in node["f"]]
    if kind == "tuple":
        columns = [_decode_column(decoder, column, n_rows) for _, column in node["f"]]
        return list(zip(*columns, strict=True)) if columns else [() for _ in range(n_rows)]
    fields: tuple = ()
    if kind == "dict":
        rows: list = [{} for _ in range(n_rows)]
        dicts = rows
    elif kind in ("$dc", "$obj"):
        cls, fields = _record_class(decoder, kind, node["class"])
        new = cls.__new__
        rows = [new(cls) for _ in range(n_rows)]
        try:
            dicts = [r.__dict__ for r in rows]
        except AttributeError:
            raise decoder._error(f"names {node['class']!r} as columns, but its objects have "
                                 "no __dict__") from None
    else:
        raise decoder._error(f"unknown columnar record kind {kind!r}")
    decoder.memo.extend(rows)
    columns = [_decode_column(decoder, column, n_rows) for _, column in node["f"]]
    for field in fields:  # fields added to the class after the save take their defaults
        if field.name not in names:
            names.append(field.name)
            columns.append([_default(decoder, node["class"], field) for _ in range(n_rows)])
    if columns:
        for into, values in zip(dicts, zip(*columns, strict=True), strict=True):
            into.update(zip(names, values, strict=True))
    return rows


def _default(decoder: _Decoder, name: str, field: dataclasses.Field) -> Any:
    saved: dict[str, Any] = {}
    decoder._defaults(name, (field,), saved)
    return saved[field.name]


def _record_class(decoder: _Decoder, kind: str, name: str) -> tuple[type, tuple]:
    known = decoder.classes.get((kind, name))
    if kind == "$dc":
        if known is None:
            cls = decoder._class(name, dataclasses.is_dataclass, "dataclass")
            known = decoder.classes[kind, name] = cls, dataclasses.fields(cls)
        return known
    if known is None:
        from recurra.nn.state_tree import _custom_pickling

        known = decoder.classes[kind, name] = decoder._class(
            name, lambda c: not _custom_pickling(c), "plain class")
    return known, ()


def _decode_column(decoder: _Decoder, node: dict[str, Any], n_rows: int) -> list:
    if "k" in node:
        return [node["k"]] * n_rows
    if "s" in node:
        values = node["s"]
    else:
        none = node.get("none", ())
        ref_rows, ref_numbers = node.get("ref", ((), ()))
        values = _decode_present(decoder, node, n_rows - len(none) - len(ref_rows))
        if none or ref_rows:
            values = _place(decoder, values, none, ref_rows, ref_numbers, n_rows)
    if len(values) != n_rows:
        raise decoder._error(f"a column holds {len(values)} values for {n_rows} rows")
    return values


def _decode_present(decoder: _Decoder, node: dict[str, Any], n_present: int) -> list:
    if "a" in node:
        stacked = decoder.decode(node["a"])
        if stacked.ndim > 1:
            rows = list(stacked)
        else:  # rows of 0-d arrays stay arrays (a[i] would be a numpy scalar)
            rows = [stacked[i, ...] for i in range(stacked.shape[0])]
        decoder.memo.extend(rows)
        return rows
    if "t" in node:
        rows = list(decoder.decode(node["t"]).unbind(0))
        decoder.memo.extend(rows)
        return rows
    if "tv" in node:
        shape, stride, dtype = node["tv"]
        places = decoder.decode(node["at"])
        if places.ndim != 2 or places.shape[1] != 2:
            raise decoder._error("a tensor column's places are not a rows x 2 array")
        dtype = getattr(torch, dtype)
        rows = []
        for index, offset in places.tolist():
            storage = decoder._storage(index)
            rows.append(torch.empty(0, dtype=dtype, device=storage.device).set_(
                storage, offset, shape, stride))
        decoder.memo.extend(rows)
        return rows
    if "ra" in node:
        flat, shapes = decoder.decode(node["ra"]), decoder.decode(node["sh"])
        if shapes.ndim != 2 or (shapes < 0).any():
            raise decoder._error("a ragged column's shapes are not a rows x rank array")
        ends = np.cumsum(np.prod(shapes, axis=1, dtype=np.int64)).tolist()
        if ends and ends[-1] != flat.shape[0]:
            raise decoder._error("a ragged column's shapes do not add up to its elements")
        starts = [0, *ends[:-1]]
        rows = [flat[start:end].reshape(shape) for start, end, shape in
                zip(starts, ends, shapes.tolist(), strict=True)]
        decoder.memo.extend(rows)
        return rows
    if "fl" in node:
        return decoder.decode(node["fl"]).tolist()
    if "ns" in node:
        return list(decoder.decode(node["ns"]))
    if "r" in node:
        return _decode_records(decoder, node["r"])
    if "e" in node:
        return [decoder.decode(v) for v in node["e"]]
    raise decoder._error(f"unknown column {sorted(node)}")


def _place(decoder: _Decoder, values: list, none: list[int], ref_rows: list[int],
           ref_numbers: list[int], n_rows: int) -> list:
    """The column's rows: None, an object decoded before, or the next decoded value."""
    out: list = [None] * n_rows
    memo = decoder.memo
    for row, number in zip(ref_rows, ref_numbers, strict=True):
        if not 0 <= number < len(memo):
            raise decoder._error(f"refers to object {number}, which comes later or not at all")
        out[row] = memo[number]
    taken = set(none).union(ref_rows)
    present = (i for i in range(n_rows) if i not in taken)
    for index, value in zip(present, values, strict=True):
        out[index] = value
    return out
