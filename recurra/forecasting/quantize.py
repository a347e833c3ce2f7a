"""Dynamic int8 quantization of a fitted forecaster for CPU serving.

Weights become int8 and activations are quantized on the fly
(:func:`torch.ao.quantization.quantize_dynamic`).  *What* to quantize matters more than
whether to (measured on x86 with the ``x86``/``fbgemm`` engine, hidden 128, 2 layers, 96
steps; ``benchmarks/throughput.py`` records the figures):

* ``nn.Linear`` pays: the direct decoder's 256 -> horizon x outputs x params map is the
  largest matmul of a forecast, and int8 ``fbgemm`` GEMMs beat fp32 at every batch size.
* ``nn.GRU`` pays: the fp32 CPU GRU is PyTorch's generic kernel, the dynamic-quantized GRU
  a fused int8 one.
* ``nn.LSTM`` does *not*: the fp32 CPU LSTM runs oneDNN's fused kernel, which beats the
  dynamic-quantized LSTM (about 1.5x slower at batch 256).  Quantizing it (as this module
  did before) made the whole model slower than fp32.

So :data:`DEFAULT_LAYERS` is ``("linear", "gru")``; pass ``layers=("linear", "gru",
"lstm")`` to quantize everything.  The custom-cell encoder (layer norm / recurrent dropout)
gets its linear maps quantized; GRU-D's time loop and the seq2seq ``GRUCell`` stay in
float.  The engine is ``x86`` (or ``fbgemm``) when this torch build has it: ``qnnpack`` is
meant for ARM and is slower than fp32 on x86.

>>> fast = quantize_forecaster(fitted)          # a copy; ``fitted`` is unchanged
>>> fast.predict()                              # same frame, int8 matmuls
>>> compare_quantized(fitted)                   # {"max_abs_diff": ..., "relative_diff": ...}

Latency is measured by the benchmarks, not here: ``benchmarks/_latency.py`` times the bare
networks (``module_latency``) and ``predict`` of the float and int8 copies
(``predict_latency``).
"""

from __future__ import annotations

import copy
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from recurra.data.schema import Y_HAT, RecurraError, check_fitted

LAYER_TYPES: dict[str, type[nn.Module]] = {"linear": nn.Linear, "gru": nn.GRU,
                                           "lstm": nn.LSTM}
DEFAULT_LAYERS = ("linear", "gru")
ENGINES = ("x86", "fbgemm", "qnnpack")


def choose_engine() -> str:
    """Set and return the quantized engine: the first of :data:`ENGINES` this build has.

    The engine is a process-wide torch setting (``torch.backends.quantized.engine``); packed
    int8 weights are tied to the engine they were packed with.
    """
    supported = torch.backends.quantized.supported_engines
    for engine in ENGINES:
        if engine in supported:
            if torch.backends.quantized.engine != engine:
                torch.backends.quantized.engine = engine
            return engine
    raise RecurraError(f"this torch build has no quantized CPU engine (one of {list(ENGINES)}; "
                       f"it has {list(supported)})")


def quantize_module(module: nn.Module, layers: Sequence[str] = DEFAULT_LAYERS) -> nn.Module:
    """A dynamically int8-quantized copy of ``module`` (on CPU, in eval mode).

    Parameters
    ----------
    module : any torch module (left unchanged).
    layers : which layer types to quantize, names from :data:`LAYER_TYPES`.
    """
    unknown = [name for name in layers if name not in LAYER_TYPES]
    if unknown or not layers:
        raise RecurraError(f"layers ({list(layers)!r}) must be a non-empty subset of "
                           f"{list(LAYER_TYPES)}")
    from torch.ao.quantization import quantize_dynamic

    choose_engine()
    float_copy = copy.deepcopy(module).cpu().eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return quantize_dynamic(float_copy, {LAYER_TYPES[name] for name in layers},
                                dtype=torch.qint8)


def quantize_forecaster(forecaster: Any, layers: Sequence[str] = DEFAULT_LAYERS) -> Any:
    """A copy of a fitted forecaster whose ``module_`` is int8-quantized (CPU only).

    The copy shares the stream state with the original until either is updated; it cannot
    be saved (save the float model and quantize after loading).
    """
    check_fitted(forecaster)
    quantized = copy.copy(forecaster)
    quantized.module_ = quantize_module(forecaster.module_, layers)
    quantized.quantized_ = True
    return quantized


def compare_quantized(forecaster: Any, frame: Any = None,
                      layers: Sequence[str] = DEFAULT_LAYERS) -> dict[str, float]:
    """Accuracy of the int8 copy against the float forecaster.

    Returns ``max_abs_diff`` and ``mean_abs_diff`` between the two ``y_hat`` columns of
    ``predict(frame)`` (original units) and ``relative_diff`` (mean abs diff / mean abs
    forecast).  Their latency: ``benchmarks/_latency.py`` (``predict_latency``).
    """
    quantized = quantize_forecaster(forecaster, layers)
    reference = forecaster.predict(frame)
    approximate = quantized.predict(frame)
    diff = np.abs(reference[Y_HAT].to_numpy() - approximate[Y_HAT].to_numpy())
    scale = float(np.mean(np.abs(reference[Y_HAT].to_numpy()))) or 1.0
    return {"max_abs_diff": float(diff.max()), "mean_abs_diff": float(diff.mean()),
            "relative_diff": float(diff.mean()) / scale}
