"""Dynamic int8 quantization: which layers are quantized, closeness, latency report shape."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from recurra.data.schema import RecurraError
from recurra.forecasting.quantize import (
    DEFAULT_LAYERS,
    choose_engine,
    quantize_module,
)
from recurra.nn.heads import DistributionHead
from recurra.nn.modules import EncoderSpec, ForecastNet


def _net(cell: str) -> ForecastNet:
    torch.manual_seed(0)
    head = DistributionHead("quantile", 16, 2, (0.1, 0.5, 0.9))
    return ForecastNet(EncoderSpec(cell, 2, 16, 2), 2, 0, 6, "direct", head).eval()


def _kinds(module: nn.Module) -> set[str]:
    return {m._get_name() for m in module.modules()}


@pytest.mark.parametrize("cell", ["lstm", "gru"])
def test_default_quantizes_linear_and_gru_but_keeps_the_fused_fp32_lstm(cell):
    net = _net(cell)
    quantized = quantize_module(net)
    kinds = _kinds(quantized)
    assert "DynamicQuantizedLinear" in kinds and "Linear" not in kinds
    if cell == "lstm":
        assert "LSTM" in kinds and "DynamicQuantizedLSTM" not in kinds
    else:
        assert "DynamicQuantizedGRU" in kinds and "GRU" not in kinds
    assert "DynamicQuantizedLSTM" in _kinds(quantize_module(_net("lstm"),
                                                           ("linear", "lstm")))
    assert type(net.decoder.net[0]) is nn.Linear  # the original is left float


@pytest.mark.parametrize("layers", [DEFAULT_LAYERS, ("linear", "gru", "lstm")])
def test_quantized_output_stays_close_to_float(layers):
    net = _net("lstm")
    x = torch.randn(4, 12, 2, generator=torch.Generator().manual_seed(1))
    observed = torch.ones_like(x, dtype=torch.bool)
    with torch.no_grad():
        reference, _ = net(x, observed, torch.ones_like(x))
        approximate, _ = quantize_module(net, layers)(x, observed, torch.ones_like(x))
    assert approximate.shape == reference.shape
    assert float((approximate - reference).abs().max()) < 0.05 * (
        float(reference.abs().max()) + 1e-3) + 0.02


def test_bad_layers_and_engine():
    with pytest.raises(RecurraError, match=r"layers \(\['conv'\]\) must be a non-empty subset"):
        quantize_module(_net("gru"), ("conv",))
    assert choose_engine() in torch.backends.quantized.supported_engines
    assert torch.backends.quantized.engine == choose_engine()
