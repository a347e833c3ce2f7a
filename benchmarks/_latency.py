"""Forward latency of networks on random inputs: the T1/quantization timing of
``benchmarks/throughput.py`` (a benchmark tool, not part of serving)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from recurra.forecasting.quantize import alternating_medians


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
