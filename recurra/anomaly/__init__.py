"""Anomaly detection: detectors (reconstruction AE, GRU-D AE, forecast error, baselines),
pure score / threshold / event functions, and evaluation metrics (NAB, F1, AUC-PR, ...).

A single detector is a :class:`BaseDetector` holding an error model
(:class:`recurra.anomaly.protocol.ErrorModel`); every detector, the ensemble included,
follows the :class:`recurra.anomaly.protocol.Detector` protocol.

>>> from recurra.anomaly import ReconstructionDetector, DetectorConfig    # doctest: +SKIP
"""

from recurra.anomaly.base import BaseDetector, DetectorConfig
from recurra.anomaly.baselines import IsolationForestDetector, RollingZScoreDetector
from recurra.anomaly.detectors import ForecastErrorDetector, GRUDAutoencoder, ReconstructionDetector
from recurra.anomaly.ensemble import EnsembleConfig, EnsembleDetector
from recurra.anomaly.fleet import DetectorFleet
from recurra.anomaly.protocol import Detector, ErrorModel

DETECTORS = {
    "lstm_ae": ReconstructionDetector,
    "grud_ae": GRUDAutoencoder,
    "forecast_error": ForecastErrorDetector,
    "rolling_zscore": RollingZScoreDetector,
    "isolation_forest": IsolationForestDetector,
}

__all__ = ["DETECTORS", "BaseDetector", "Detector", "DetectorConfig", "DetectorFleet",
           "EnsembleConfig", "EnsembleDetector", "ErrorModel", "ForecastErrorDetector",
           "GRUDAutoencoder", "IsolationForestDetector", "ReconstructionDetector",
           "RollingZScoreDetector"]
