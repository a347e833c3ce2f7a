"""Torch building blocks shared by the forecasters and the detectors: recurrent encoders
and decoders (``modules``), GRU-D and its time loop (``grud``, ``grud_kernel``), output
heads (``heads``), the one training loop (``train``), device choice (``device``), the
float32 range check (``value_range``) and model save/load (``persistence``).

Nothing here knows about forecasting or anomaly detection: ``recurra.forecasting`` and
``recurra.anomaly`` both build on it, and it imports only ``recurra.data``.
"""

from recurra.nn.device import choose_device, seed_everything
from recurra.nn.train import TrainConfig, TrainResult, fit_module

__all__ = ["TrainConfig", "TrainResult", "choose_device", "fit_module", "seed_everything"]
