"""Anomaly detection: detectors (reconstruction AE, GRU-D AE, forecast error, baselines),
pure score / threshold / event functions, and evaluation metrics (NAB, F1, AUC-PR, ...).

A single detector is a :class:`BaseDetector` holding an error model
(:class:`recurra.anomaly.protocol.ErrorModel`); every detector, the ensemble included,
follows the :class:`recurra.anomaly.protocol.Detector` protocol.

Each detector names its config class (``config_class``): :class:`AutoencoderConfig`,
:class:`ForecastErrorConfig`, :class:`ForestConfig`, :class:`ZScoreConfig`, made of the
parts :class:`ThresholdConfig`, :class:`EventConfig`, :class:`NetworkConfig` and
:class:`recurra.nn.train.TrainConfig` on the common base :class:`DetectorConfig`.

>>> from recurra.anomaly import ReconstructionDetector, AutoencoderConfig  # doctest: +SKIP
"""

from recurra.anomaly.base import BaseDetector
from recurra.anomaly.baselines import IsolationForestDetector, RollingZScoreDetector
from recurra.anomaly.config import (
    DETECTOR_TRAIN,
    AutoencoderConfig,
    DetectorConfig,
    EventConfig,
    ForecastErrorConfig,
    ForestConfig,
    NetworkConfig,
    ThresholdConfig,
    ZScoreConfig,
)
from recurra.anomaly.detectors import ForecastErrorDetector, GRUDAutoencoder, ReconstructionDetector
from recurra.anomaly.ensemble import EnsembleConfig, EnsembleDetector
from recurra.anomaly.protocol import Detector, ErrorModel

DETECTORS = {
    "lstm_ae": ReconstructionDetector,
    "grud_ae": GRUDAutoencoder,
    "forecast_error": ForecastErrorDetector,
    "rolling_zscore": RollingZScoreDetector,
    "isolation_forest": IsolationForestDetector,
}

__all__ = ["DETECTORS", "DETECTOR_TRAIN", "AutoencoderConfig", "BaseDetector", "Detector",
           "DetectorConfig", "EnsembleConfig", "EnsembleDetector",
           "ErrorModel", "EventConfig", "ForecastErrorConfig", "ForecastErrorDetector",
           "ForestConfig", "GRUDAutoencoder", "IsolationForestDetector", "NetworkConfig",
           "ReconstructionDetector", "RollingZScoreDetector", "ThresholdConfig",
           "ZScoreConfig"]
