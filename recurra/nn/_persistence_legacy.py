"""Readers of persistence formats 1 and 2: the legacy path, kept only so that folders saved
before format 3 load. Pickles are only read here, for such old folders; nothing writes them.

Format 1 is one ``torch.save`` of the whole state (``state.pt``).  Format 2 holds every
tensor, in one list, in ``state.pt`` and the rest in ``state.pkl`` (the C pickler), each
tensor replaced by its index.  Both are pickles: load only models you trust.
:func:`split_tensors` (the format-2 writer's half) stays for ``benchmarks/persistence.py``.
"""

from __future__ import annotations

import copyreg
import io
import pickle
from pathlib import Path
from typing import Any

import torch

from recurra import _legacy as _legacy_pickle
from recurra._legacy import modern_path

STATE_FILE = "state.pt"  # format 2: the tensors; format 1: the whole state
SKELETON_FILE = "state.pkl"  # format 2: the state with tensors replaced by their index
#: the module the global of a format-2 skeleton names (where the format-2 writer lived)
SKELETON_MODULE = "recurra.nn.persistence"


def read_legacy_state(folder: Path, version: int, map_location: str | torch.device) -> Any:
    """The state dict of a format 1 or 2 ``folder`` (unpickled: trusted folders only)."""
    if version == 1:
        return torch.load(folder / STATE_FILE, map_location=map_location, weights_only=False,
                          pickle_module=_legacy_pickle)
    # a plain list of tensors (weights_only=True would read it too, ~3x slower on
    # thousands of per-series tensors; the skeleton is a pickle anyway)
    tensors = torch.load(folder / STATE_FILE, map_location=map_location, weights_only=False)
    return join_tensors(tensors, (folder / SKELETON_FILE).read_bytes())


def _tensor_at(index: int) -> Any:  # the global a skeleton names; resolved by _Joiner
    raise RuntimeError("a state skeleton must be read with join_tensors")


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
        if module in (SKELETON_MODULE, __name__) and name == "_tensor_at":
            return self._tensors.__getitem__
        return super().find_class(module, name)


def split_tensors(state: Any) -> tuple[list[torch.Tensor], bytes]:
    """``(tensors, skeleton)``: the tensors inside ``state`` and the pickled rest (the
    skeleton names this module's ``_tensor_at``; :func:`join_tensors` reads both names)."""
    buffer = io.BytesIO()
    splitter = _Splitter(buffer)
    splitter.dump(state)
    return splitter.tensors, buffer.getvalue()


def join_tensors(tensors: list[torch.Tensor], skeleton: bytes) -> Any:
    """The inverse of :func:`split_tensors`."""
    return _Joiner(io.BytesIO(skeleton), list(tensors)).load()
