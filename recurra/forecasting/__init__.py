"""Forecasters: stateful LSTM/GRU/GRU-D (``RNNForecaster``), baselines, intervals, metrics,
backtests."""

from recurra.forecasting.config import (
    DecoderConfig,
    EncoderConfig,
    OutputConfig,
    TBPTTConfig,
    WindowConfig,
)
from recurra.forecasting.intervals import IntervalCalibrator, IntervalConfig
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster
from recurra.nn.device import choose_device, seed_everything
from recurra.nn.train import TrainConfig, TrainResult, fit_module

__all__ = [
    "DecoderConfig",
    "EncoderConfig",
    "ForecasterConfig",
    "IntervalCalibrator",
    "IntervalConfig",
    "OutputConfig",
    "RNNForecaster",
    "TBPTTConfig",
    "TrainConfig",
    "TrainResult",
    "WindowConfig",
    "choose_device",
    "fit_module",
    "seed_everything",
]
