"""Module paths from earlier layouts: ``forecasting.rnn`` is now
``recurra.forecasting.rnn`` (one package), and the torch building blocks moved from
``recurra.forecasting`` / ``recurra.data`` to ``recurra.nn`` (:data:`MOVED_MODULES`).

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

#: modules that moved inside ``recurra``: old dotted module -> new one
MOVED_MODULES = {
    "recurra.forecasting.modules": "recurra.nn.modules",
    "recurra.forecasting.grud": "recurra.nn.grud",
    "recurra.forecasting.grud_kernel": "recurra.nn.grud_kernel",
    "recurra.forecasting.heads": "recurra.nn.heads",
    "recurra.forecasting.train": "recurra.nn.train",
    "recurra.forecasting.device": "recurra.nn.device",
    "recurra.forecasting.value_range": "recurra.nn.value_range",
    "recurra.data.persistence": "recurra.nn.persistence",
}


def is_legacy(dotted: str) -> bool:
    """Whether ``dotted`` (a module or ``module.Name`` path) names an old module."""
    return dotted.partition(".")[0] in LEGACY_PACKAGES or _moved(dotted) is not None


def _moved(dotted: str) -> str | None:
    for old, new in MOVED_MODULES.items():
        if dotted == old or dotted.startswith(old + "."):
            return new + dotted[len(old):]
    return None


def modern_path(dotted: str) -> str:
    """``"forecasting.rnn.RNNForecaster"`` -> ``"recurra.forecasting.rnn.RNNForecaster"``,
    ``"forecasting.train.TrainConfig"`` -> ``"recurra.nn.train.TrainConfig"``; anything
    else unchanged."""
    if dotted.partition(".")[0] in LEGACY_PACKAGES:
        dotted = f"recurra.{dotted}"
    return _moved(dotted) or dotted


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
        if name in MOVED_MODULES:
            return importlib.util.spec_from_loader(name, _AliasLoader(MOVED_MODULES[name]))
        top = name.partition(".")[0]
        if top not in LEGACY_PACKAGES:
            return None
        if "." not in name:
            if importlib.machinery.PathFinder.find_spec(name) is not None:
                return None  # a real package of that name on sys.path wins
        elif getattr(sys.modules.get(top), "__name__", None) != f"recurra.{top}":
            return None
        return importlib.util.spec_from_loader(name, _AliasLoader(modern_path(name)))


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
            if is_legacy(name) and getattr(module, "__name__", None) == modern_path(name):
                del sys.modules[name]


def load(file: Any, **kwargs: Any) -> Any:
    """``pickle.load`` with :class:`Unpickler` (this module serves as torch.load's
    ``pickle_module``)."""
    return Unpickler(file, **kwargs).load()
