"""Recurrent state as data: pick or stack the per-series entries of an encoder state (a
tensor, a tuple or a NamedTuple of tensors such as ``(h, c)``), and move it between devices.

Shapes follow ``torch.nn.modules.rnn``: 3-d states are (L*D, B, H) with the batch on dim 1;
2-d ones (summaries) are (B, E).
"""

from __future__ import annotations

from typing import Any

import torch


def select_state(state: Any, index: int) -> Any:
    """Batch entry ``index`` of a recurrent state (3-d tensors: dim 1; 2-d: dim 0)."""
    if isinstance(state, torch.Tensor):
        return state[:, index:index + 1] if state.dim() == 3 else state[index:index + 1]
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(select_state(s, index) for s in state))
    return type(state)(select_state(s, index) for s in state)


def split_state(state: Any) -> list[Any]:
    """Every batch entry of a recurrent state, in order: ``[select_state(state, i) for i in
    range(batch)]`` in one split per tensor (views, as :func:`select_state` gives)."""
    if isinstance(state, torch.Tensor):
        return list(state.split(1, dim=1 if state.dim() == 3 else 0))
    parts = [split_state(s) for s in state]
    if hasattr(state, "_fields"):
        return [type(state)(*entry) for entry in zip(*parts, strict=True)]
    return [type(state)(entry) for entry in zip(*parts, strict=True)]


def cat_states(states: list[Any]) -> Any:
    """Stack per-series states along the batch dimension (inverse of :func:`select_state`)."""
    first = states[0]
    if isinstance(first, torch.Tensor):
        return torch.cat(states, dim=1 if first.dim() == 3 else 0)
    parts = [cat_states([s[i] for s in states]) for i in range(len(first))]
    return type(first)(*parts) if hasattr(first, "_fields") else type(first)(parts)


def module_device(module: Any) -> torch.device:
    """The device of ``module``'s parameters (CPU for a module without any)."""
    parameter = next(iter(module.parameters()), None)
    return parameter.device if parameter is not None else torch.device("cpu")


def tensors_to(value: Any, device: torch.device | str) -> Any:
    """``value`` with every torch tensor inside (dicts, lists, tuples, NamedTuples) moved to
    ``device``; anything else (numpy arrays, numbers, timestamps) is returned as is."""
    if isinstance(value, torch.Tensor):
        return value.to(device)
    if isinstance(value, dict):
        return {key: tensors_to(item, device) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(tensors_to(item, device) for item in value))
    if isinstance(value, tuple | list):
        return type(value)(tensors_to(item, device) for item in value)
    return value
