"""Module paths from before the ``recurra`` package: ``forecasting.rnn`` is now
``recurra.forecasting.rnn``.

Saved models (``meta.json`` class names and the pickled state), MLflow pyfunc models
(their cloudpickled ``python_model``) and pipeline configs (``models.*.class``) written
before the move name the old top-level packages.  They keep loading:

* :func:`modern_path` maps a dotted path (config values, ``meta.json``, pickle globals);
* :func:`legacy_module_names` lets a third-party unpickler (MLflow's) import the old names
  for the duration of a load, as aliases of the ``recurra`` modules.  A package of the same
  name that the caller has on ``sys.path`` (their own ``data``, say) wins over the alias.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.machinery
import importlib.util
import pickle
import sys
from collections.abc import Iterator
from typing import Any

LEGACY_PACKAGES = ("data", "forecasting", "anomaly", "pipelines", "dashboards")


def is_legacy(dotted: str) -> bool:
    """Whether ``dotted`` (a module or ``module.Name`` path) starts with an old package."""
    return dotted.partition(".")[0] in LEGACY_PACKAGES


def modern_path(dotted: str) -> str:
    """``"forecasting.rnn.RNNForecaster"`` -> ``"recurra.forecasting.rnn.RNNForecaster"``;
    anything else unchanged."""
    return f"recurra.{dotted}" if is_legacy(dotted) else dotted


class Unpickler(pickle.Unpickler):
    """A pickle reader that resolves globals of the old module paths in ``recurra``."""

    def find_class(self, module: str, name: str) -> Any:
        return super().find_class(modern_path(module), name)


class _AliasLoader:
    """Loads a legacy name as the already importable ``recurra`` module (no second copy)."""

    def __init__(self, target: str) -> None:
        self.target = target
        self._spec = None

    def create_module(self, spec: Any) -> Any:
        module = importlib.import_module(self.target)
        self._spec = module.__spec__
        return module

    def exec_module(self, module: Any) -> None:
        module.__spec__ = self._spec  # the import system set the alias spec on it


class _LegacyFinder:
    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        top = name.partition(".")[0]
        if top not in LEGACY_PACKAGES:
            return None
        if "." not in name:
            if importlib.machinery.PathFinder.find_spec(name) is not None:
                return None  # a real package of that name on sys.path wins
        elif getattr(sys.modules.get(top), "__name__", None) != f"recurra.{top}":
            return None
        return importlib.util.spec_from_loader(name, _AliasLoader(f"recurra.{name}"))


@contextlib.contextmanager
def legacy_module_names() -> Iterator[None]:
    """Old module names import as aliases of the ``recurra`` ones inside the block; the
    aliases are removed from ``sys.modules`` afterwards."""
    finder = _LegacyFinder()
    before = set(sys.modules)
    sys.meta_path.insert(0, finder)
    try:
        yield
    finally:
        sys.meta_path.remove(finder)
        for name in set(sys.modules) - before:
            module = sys.modules[name]
            if is_legacy(name) and getattr(module, "__name__", None) == f"recurra.{name}":
                del sys.modules[name]


def load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` with :class:`Unpickler` (this module serves as torch.load's
    ``pickle_module``)."""
    return Unpickler(file, **kwargs).load()
