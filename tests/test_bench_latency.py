"""benchmarks/_latency.py: the latency helpers of the quantization benchmark."""

from __future__ import annotations

from pathlib import Path

import torch

from recurra.forecasting.quantize import quantize_module
from recurra.nn.heads import DistributionHead
from recurra.nn.modules import EncoderSpec, ForecastNet

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def test_module_latency_reports_every_module_and_batch(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from _latency import module_latency

    torch.manual_seed(0)
    head = DistributionHead("quantile", 16, 2, (0.1, 0.5, 0.9))
    net = ForecastNet(EncoderSpec("gru", 2, 16, 2), 2, 0, 6, "direct", head).eval()
    report = module_latency({"fp32": net, "int8": quantize_module(net)}, n_channels=2,
                            lookback=12, batch_sizes=(1, 3), repeats=2)
    assert set(report) == {"batch_1", "batch_3"}
    assert all(set(v) == {"fp32", "int8"} and min(v.values()) > 0 for v in report.values())


def test_predict_latency_times_both_in_turn_and_reports_the_ratio(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    from _latency import predict_latency

    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def predict(self, frame):
            calls.append(self.name)

    report = predict_latency(Recorder("float"), Recorder("int8"), repeats=2)
    assert set(report) == {"float_s", "int8_s", "speedup"}
    assert calls == ["float", "int8"] * 3  # a warm-up each, then alternating
