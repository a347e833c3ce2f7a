"""Dynamic int8 quantization of a fitted forecaster for CPU serving.

``nn.LSTM``, ``nn.GRU`` and ``nn.Linear`` weights become int8 (activations are quantized on
the fly), with :func:`torch.ao.quantization.quantize_dynamic`.  The custom-cell encoder
(layer norm / recurrent dropout) gets its linear maps quantized; GRU-D's time loop and the
seq2seq ``GRUCell`` stay in float.

>>> fast = quantize_forecaster(fitted)          # a copy; ``fitted`` is unchanged
>>> fast.predict()                              # same frame, int8 matmuls
>>> compare_quantized(fitted)                   # {"max_abs_diff": ..., "speedup": ...}
"""

from __future__ import annotations

import copy
import time
import warnings
from typing import Any

import numpy as np
import torch
from torch import nn

from data.schema import Y_HAT, RecurraError, check_fitted


def quantize_module(module: nn.Module) -> nn.Module:
    """A dynamically int8-quantized copy of ``module`` (on CPU, in eval mode)."""
    from torch.ao.quantization import quantize_dynamic

    float_copy = copy.deepcopy(module).cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(float_copy, {nn.LSTM, nn.GRU, nn.Linear}, dtype=torch.qint8)


def quantize_forecaster(forecaster: Any) -> Any:
    """A copy of a fitted forecaster whose ``module_`` is int8-quantized (CPU only).

    The copy shares the stream state with the original until either is updated; it cannot
    be saved (save the float model and quantize after loading).
    """
    check_fitted(forecaster)
    if "qnnpack" not in torch.backends.quantized.supported_engines and \
            "fbgemm" not in torch.backends.quantized.supported_engines:
        raise RecurraError("this torch build has no quantized CPU engine (fbgemm/qnnpack)")
    quantized = copy.copy(forecaster)
    quantized.module_ = quantize_module(forecaster.module_)
    quantized.quantized_ = True
    return quantized


def compare_quantized(forecaster: Any, repeats: int = 10, frame: Any = None) -> dict[str, float]:
    """Accuracy and latency of the int8 copy against the float forecaster.

    Returns ``max_abs_diff`` and ``mean_abs_diff`` between the two ``y_hat`` columns
    (original units), ``relative_diff`` (mean abs diff / mean abs forecast), and the median
    seconds per ``predict`` call of each (``float_s``, ``int8_s``) and their ratio.
    """
    quantized = quantize_forecaster(forecaster)
    reference = forecaster.predict(frame)
    approximate = quantized.predict(frame)
    diff = np.abs(reference[Y_HAT].to_numpy() - approximate[Y_HAT].to_numpy())
    scale = float(np.mean(np.abs(reference[Y_HAT].to_numpy()))) or 1.0
    float_s = _median_seconds(lambda: forecaster.predict(frame), repeats)
    int8_s = _median_seconds(lambda: quantized.predict(frame), repeats)
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "relative_diff": float(diff.mean()) / scale, "float_s": float_s,
            "int8_s": int8_s, "speedup": float_s / int8_s if int8_s > 0 else float("nan")}


def _median_seconds(call: Any, repeats: int) -> float:
    times = []
    for _ in range(max(1, repeats)):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return float(np.median(times))
