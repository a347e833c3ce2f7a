"""Tiny detector configs for the tests: the same parts for every kind of detector, each
detector's own config class taking the ones it has."""

from __future__ import annotations

from dataclasses import fields, replace
from typing import Any

from recurra.anomaly import DETECTOR_TRAIN, NetworkConfig, ThresholdConfig

NETWORK = NetworkConfig(hidden_size=8, latent_size=4)
TRAIN = replace(DETECTOR_TRAIN, max_epochs=2, batch_size=32)
TINY = {"window": 8, "network": NETWORK, "train": TRAIN, "n_estimators": 20}


def config_for(cls: type, threshold: ThresholdConfig | None = None, **values: Any) -> Any:
    """``cls.config_class`` with :data:`TINY`, ``threshold`` and ``values``, left out where
    that class has no such field (the forest has no ``network``, a z-score no ``train``)."""
    config_class = cls.config_class
    values = {**TINY, "threshold": threshold or ThresholdConfig(), **values}
    names = {f.name for f in fields(config_class)}
    return config_class(**{k: v for k, v in values.items() if k in names})
