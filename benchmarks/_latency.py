"""Latency of networks on random inputs and of float vs int8 ``predict``: the timing of
``benchmarks/throughput.py``'s quantization part (a benchmark tool, not part of serving;
``recurra.forecasting.quantize`` only quantizes and compares accuracy)."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn


def alternating_medians(calls: Sequence[Callable[[], Any]], repeats: int) -> list[float]:
    """Median wall seconds of each call, timed in turn ``repeats`` times after a warm-up
    (alternating, so that load on a shared CPU hits every call alike)."""
    for call in calls:
        call()
    times: list[list[float]] = [[] for _ in calls]
    for _ in range(max(1, repeats)):
        for index, call in enumerate(calls):
            started = time.perf_counter()
            call()
            times[index].append(time.perf_counter() - started)
    return [float(np.median(t)) for t in times]


def predict_latency(forecaster: Any, quantized: Any, frame: Any = None, repeats: int = 10
                    ) -> dict[str, float]:
    """Median seconds per ``predict(frame)`` of the float forecaster and its int8 copy
    (``float_s``, ``int8_s``) and their ratio ``speedup`` (> 1: int8 is faster)."""
    float_s, int8_s = alternating_medians(
        [lambda: forecaster.predict(frame), lambda: quantized.predict(frame)], repeats)
    return {"float_s": float_s, "int8_s": int8_s,
            "speedup": float_s / int8_s if int8_s > 0 else float("nan")}


def module_latency(modules: dict[str, nn.Module], n_channels: int, lookback: int,
                   batch_sizes: Sequence[int] = (1, 256), repeats: int = 20
                   ) -> dict[str, dict[str, float]]:
    """Median milliseconds of one ``module(x, observed, delta)`` forward per batch size.

    Parameters
    ----------
    modules : name -> network taking ``(x, observed, delta)`` of shape (B, T, F) (e.g. a
        float :class:`recurra.nn.modules.ForecastNet` and its :func:`quantize_module`
        copy).
    n_channels, lookback : F and T of the random inputs (all observed).
    batch_sizes : B values to time.
    repeats : timed calls per module and batch size (after one warm-up call), alternating
        between the modules so that load on a shared CPU hits them alike.

    Returns
    -------
    {f"batch_{B}": {name: milliseconds, ...}, ...}
    """
    generator = torch.Generator().manual_seed(0)
    result = {}
    for batch_size in batch_sizes:
        x = torch.randn(batch_size, lookback, n_channels, generator=generator)
        observed = torch.ones_like(x, dtype=torch.bool)
        delta = torch.ones_like(x)
        calls = [_forward_call(module, x, observed, delta) for module in modules.values()]
        seconds = alternating_medians(calls, repeats)
        result[f"batch_{batch_size}"] = {name: 1e3 * s for name, s in
                                         zip(modules, seconds, strict=True)}
    return result


def _forward_call(module: nn.Module, x: torch.Tensor, observed: torch.Tensor,
                  delta: torch.Tensor) -> Callable[[], Any]:
    def call() -> Any:
        with torch.no_grad():
            return module(x, observed, delta)
    return call
