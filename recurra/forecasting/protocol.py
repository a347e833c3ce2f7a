"""The public contract of a forecaster, as a ``typing.Protocol`` (runtime checkable).

:class:`~recurra.forecasting.rnn.RNNForecaster`, the baselines of
:mod:`recurra.forecasting.baselines` and :class:`~recurra.forecasting.garch.GarchForecaster`
follow it (tests/forecasting/test_estimator_battery.py checks every one).  The detectors'
counterpart is :class:`recurra.anomaly.protocol.Detector`.

>>> from recurra.forecasting.baselines import NaiveConfig, NaiveForecaster
>>> isinstance(NaiveForecaster(NaiveConfig(horizon=4)), Forecaster)
True
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import polars as pl


@runtime_checkable
class Forecaster(Protocol):
    """A forecaster fitted on a long frame (ARCHITECTURE.md, "Estimators").

    ``fit(frame, validation=None)`` returns self; ``predict(frame=None, horizon=None)``
    gives a ``FORECAST_SCHEMA`` frame (``frame=None``: from the state after the training
    data or the last ``update``); ``update(new_rows, horizon=None)`` advances the state and
    returns the forecast from the end of the new rows (the frame ``predict(horizon=horizon)``
    gives right after); ``save`` / ``load`` round-trip through :mod:`recurra.nn.persistence`
    (``_get_state`` / ``_set_state``).  Before ``fit``, ``predict`` and ``update`` raise
    ``NotFittedError`` naming the class.

    Why ``update`` returns the forecast and not self: a streaming caller's next step is
    always that output, and one call per arrival keeps a scheduled run to one pass; the
    detectors' ``update`` returns the scores of the new rows by the same rule
    (:class:`recurra.anomaly.protocol.Detector`).  ``fit`` still returns self.
    """

    config: Any

    def fit(self, frame: Any, validation: Any = None) -> Forecaster:
        """Learn from a long frame; returns self."""

    def predict(self, frame: Any = None, horizon: int | None = None) -> pl.DataFrame:
        """A ``FORECAST_SCHEMA`` frame of the next ``horizon`` steps."""

    def update(self, new_rows: Any, horizon: int | None = None) -> pl.DataFrame:
        """Advance the state past ``new_rows``; the ``FORECAST_SCHEMA`` frame from there."""

    def save(self, path: str | Path) -> Path:
        """Write the fitted forecaster to the folder ``path``."""

    @classmethod
    def load(cls, path: str | Path) -> Forecaster:
        """A forecaster saved with ``save``."""

    def _get_state(self) -> dict[str, Any]: ...

    def _set_state(self, state: dict[str, Any]) -> None: ...
