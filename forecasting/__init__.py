"""Forecasters: stateful LSTM/GRU/GRU-D (``RNNForecaster``), baselines, metrics, backtests."""

from forecasting.device import choose_device, seed_everything
from forecasting.fleet import ForecasterFleet
from forecasting.rnn import ForecasterConfig, RNNForecaster
from forecasting.train import TrainConfig, TrainResult, fit_module

__all__ = [
    "ForecasterConfig",
    "ForecasterFleet",
    "RNNForecaster",
    "TrainConfig",
    "TrainResult",
    "choose_device",
    "fit_module",
    "seed_everything",
]
