"""Config dataclasses as trees: built from nested tables, old flat keys moved into their part.

Estimator configs are frozen dataclasses composed of small frozen parts (a forecaster's
``encoder``, ``window``, ``train``...).  :func:`build_config` makes one from a nested mapping
(a TOML ``params`` table, the ``config`` of a saved model's ``meta.json``): a table becomes
the part's dataclass, a list a tuple (of dataclasses when the field is ``tuple[Part, ...]``).

Configs written before a class was split into parts used flat keys (``hidden_size = 16``).
A part whose class names a ``SHORTHAND`` field may be given as that field's value alone
(``decoder = "seq2seq"`` is ``decoder = {kind = "seq2seq"}``).  A class lists old flat keys
in ``FLAT_KEYS`` (``{"hidden_size": "encoder.hidden_size"}``); each one
found is moved to its part, with a ``FutureWarning`` that names the old key, the new one and
where it was found (``warn=False`` for saved models, which are rewritten on their next save).
An old flat key may share its name with the part it moves into (``threshold = "spot"`` is
now ``threshold = { kind = "spot" }``): a value that is not a table is the old key.

A table fills the field's default part: a part whose default is not its class's own
defaults (a detector's ``train``) keeps that default for the keys the table leaves out.
A class whose parts' classes depend on another key (an ensemble's member configs) builds
them itself in a ``build_parts(values, where=, warn=, unknown=)`` classmethod, called with
the flat keys already moved.

>>> build_config(ForecasterConfig, {"hidden_size": 16, "train": {"max_epochs": 2}},
...              where="models.rnn.params")                             # doctest: +SKIP
FutureWarning: `models.rnn.params.hidden_size` is now `models.rnn.params.encoder.hidden_size`
"""

from __future__ import annotations

import dataclasses
import typing
import warnings
from collections.abc import Mapping
from typing import Any

from recurra.data.schema import RecurraError


class ConfigKeyError(RecurraError, ValueError):
    """A config table with a key its dataclass does not have (the message lists the valid
    ones) or a flat key that clashes with the nested one it moves to."""


def build_config(config_cls: type, values: Mapping[str, Any], *, where: str = "config",
                 warn: bool = True, unknown: str = "raise") -> Any:
    """``config_cls`` from ``values``, recursively (see the module docstring).

    Parameters
    ----------
    config_cls : a config dataclass (its parts are dataclass-typed fields).
    values : the keys of ``config_cls``, parts as nested mappings or as instances.
    where : the key path named in warnings and errors (``"models.rnn.params"``).
    warn : warn for each old flat key moved into its part.
    unknown : ``"raise"`` (a :class:`ConfigKeyError` listing the valid keys) or
        ``"ignore"`` (saved models may name fields that no longer exist).
    """
    if unknown not in ("raise", "ignore"):
        raise ValueError(f"unknown ({unknown!r}) must be 'raise' or 'ignore'")
    values = nest_flat_keys(config_cls, values, where=where, warn=warn)
    build_parts = getattr(config_cls, "build_parts", None)
    if build_parts is not None:
        values = build_parts(values, where=where, warn=warn, unknown=unknown)
    fields = {f.name: f for f in dataclasses.fields(config_cls) if f.init}
    extra = sorted(set(values) - set(fields))
    if extra and unknown == "raise":
        raise ConfigKeyError(f"`{where}` has unknown key(s) {extra}; valid keys of "
                             f"{config_cls.__name__}: {sorted(fields)}")
    hints = typing.get_type_hints(config_cls)
    kwargs = {}
    for name, value in values.items():
        if name not in fields:
            continue
        kwargs[name] = _value(hints.get(name), value, f"{where}.{name}", warn, unknown,
                              _default(fields[name]))
    return config_cls(**kwargs)


def coerce_part(owner: Any, name: str, part: type) -> None:
    """Make the field ``name`` of the frozen config ``owner`` a ``part`` instance, in its
    ``__post_init__``: a mapping is built as the part, a scalar is the part's ``SHORTHAND``
    field (``decoder="seq2seq"``); anything else is a :class:`RecurraError` naming it."""
    value = getattr(owner, name)
    where = f"{type(owner).__name__}.{name}"
    shorthand = getattr(part, "SHORTHAND", None)
    if isinstance(value, Mapping):
        value = build_config(part, value, where=where, warn=False)
    elif shorthand and isinstance(value, str | bool | int | float):
        value = part(**{shorthand: value})
    if not isinstance(value, part):
        also = f" or its `{shorthand}`" if shorthand else ""
        raise RecurraError(f"{where} must be a {part.__name__} (or a table of its keys{also}), "
                           f"got {value!r}")
    object.__setattr__(owner, name, value)


def nest_flat_keys(config_cls: type, values: Mapping[str, Any], *, where: str = "config",
                   warn: bool = True) -> dict[str, Any]:
    """``values`` with the old flat keys of ``config_cls.FLAT_KEYS`` moved into their
    nested tables (a key given both ways is an error naming both)."""
    moves: Mapping[str, str] = getattr(config_cls, "FLAT_KEYS", {})
    out = dict(values)
    part_fields = _part_names(config_cls)
    given: dict[tuple[str, ...], set[str]] = {}  # the keys a part given as an instance set
    # a flat key named like its part (``threshold = "spot"``) moves before the others fill it
    for old, new in sorted(moves.items(), key=lambda move: move[0] not in part_fields):
        if old not in out or (old in _field_names(config_cls)
                              and (old not in part_fields or _is_table(out[old]))):
            continue
        value = out.pop(old)
        *parts, leaf = new.split(".")
        table, path = out, ()
        for part in parts:
            path += (part,)
            current = table.get(part)
            if dataclasses.is_dataclass(current) and not isinstance(current, type):
                given[path] = set(_set_fields(current))
                current = {f.name: getattr(current, f.name)
                           for f in dataclasses.fields(current) if f.init}
            elif current is not None and not isinstance(current, Mapping):
                current = {_shorthand(config_cls, part, where): current}
            table[part] = table = dict(current or {})
        if leaf in given.get(path, table):
            raise ConfigKeyError(f"`{where}` sets both `{old}` (the old flat key) and "
                                 f"`{new}`: keep `{new}`")
        table[leaf] = value
        if warn:
            warnings.warn(f"`{where}.{old}` is now `{where}.{new}`; the flat key still works "
                          "but will be removed", FutureWarning, stacklevel=3)
    return out


def config_to_tree(config: Any) -> dict[str, Any]:
    """The nested dict of a config (tuples as lists): what :func:`build_config` reads back."""
    tree = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        tree[field.name] = _tree_value(value)
    return tree


def _tree_value(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return config_to_tree(value)
    if isinstance(value, tuple | list):
        return [_tree_value(v) for v in value]
    return value


def _value(hint: Any, value: Any, where: str, warn: bool, unknown: str,
           default: Any = None) -> Any:
    part = _dataclass_of(hint)
    if part is not None and isinstance(value, Mapping):
        if isinstance(default, part):  # a default that is not the part's own defaults
            value = {**_set_fields(default), **value}
        return build_config(part, value, where=where, warn=warn, unknown=unknown)
    if part is not None and isinstance(value, str | bool | int | float) \
            and getattr(part, "SHORTHAND", None):
        return build_config(part, {part.SHORTHAND: value}, where=where, warn=warn,
                            unknown=unknown)
    if isinstance(value, list | tuple):
        item = _item_dataclass(hint)
        return tuple(build_config(item, v, where=f"{where}[{i}]", warn=warn, unknown=unknown)
                     if item is not None and isinstance(v, Mapping) else v
                     for i, v in enumerate(value))
    return value


def _dataclass_of(hint: Any) -> type | None:
    """The dataclass of a ``Part`` or ``Part | None`` hint, else None."""
    options = typing.get_args(hint) if typing.get_origin(hint) in (typing.Union, _UNION) \
        else (hint,)
    return next((o for o in options if isinstance(o, type) and dataclasses.is_dataclass(o)),
                None)


def _item_dataclass(hint: Any) -> type | None:
    """``X`` for a ``tuple[X, ...]`` hint whose ``X`` is a dataclass, else None."""
    args = typing.get_args(hint) if typing.get_origin(hint) is tuple else ()
    item = args[0] if args else None
    return item if isinstance(item, type) and dataclasses.is_dataclass(item) else None


def _shorthand(config_cls: type, part: str, where: str) -> str:
    """The field a scalar stands for in the part ``part`` of ``config_cls`` (its class's
    ``SHORTHAND``: ``decoder = "seq2seq"`` is ``decoder = {kind = "seq2seq"}``)."""
    part_cls = _dataclass_of(typing.get_type_hints(config_cls).get(part))
    key = getattr(part_cls, "SHORTHAND", None)
    if key is None:
        raise ConfigKeyError(f"`{where}.{part}` must be a table of "
                             f"{getattr(part_cls, '__name__', part)} fields")
    return key


def _set_fields(part: Any) -> dict[str, Any]:
    """The fields of a part instance that differ from their defaults (what it sets)."""
    default = type(part)()
    return {f.name: getattr(part, f.name) for f in dataclasses.fields(part)
            if f.init and getattr(part, f.name) != getattr(default, f.name)}


def _field_names(config_cls: type) -> set[str]:
    return {f.name for f in dataclasses.fields(config_cls)}


def _part_names(config_cls: type) -> set[str]:
    """The fields of ``config_cls`` that are parts (dataclass-typed)."""
    hints = typing.get_type_hints(config_cls)
    return {f.name for f in dataclasses.fields(config_cls)
            if _dataclass_of(hints.get(f.name)) is not None}


def _is_table(value: Any) -> bool:
    return isinstance(value, Mapping) or (dataclasses.is_dataclass(value)
                                          and not isinstance(value, type))


def _default(item: dataclasses.Field) -> Any:
    """The default value of a dataclass field (None when it has none)."""
    if item.default_factory is not dataclasses.MISSING:
        return item.default_factory()
    return None if item.default is dataclasses.MISSING else item.default


_UNION = type(int | None)
