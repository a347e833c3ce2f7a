"""The contracts of the anomaly package, as ``typing.Protocol`` classes (runtime checkable).

* :class:`Detector` - what every public detector offers (the single detectors of
  :data:`recurra.anomaly.DETECTORS`, :class:`~recurra.anomaly.returns.ReturnZScoreDetector`
  and :class:`~recurra.anomaly.ensemble.EnsembleDetector`).
* :class:`ErrorModel` - the one model-specific part of a pipeline detector
  (:class:`recurra.anomaly.base.BaseDetector` holds one): it turns prepared rows of a series
  into per-channel errors; everything after that (point error, EWMA, normalisation,
  threshold, events, streaming state) is shared.

``isinstance(x, Detector)`` checks that the names exist, not their signatures; the detector
battery (tests/anomaly/test_battery.py) checks the behaviour.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import numpy as np
    import polars as pl

    from recurra.anomaly.stream import Chunk


@runtime_checkable
class Detector(Protocol):
    """A fitted-on-a-frame anomaly detector (ARCHITECTURE.md, "Estimators").

    ``fit`` returns self; ``score`` / ``update`` give ``SCORE_SCHEMA`` frames (``score``
    from a fresh state per series, ``update`` after the rows already seen); ``predict``
    gives ``EVENT_SCHEMA`` events; ``reset`` forgets the streaming state; ``save`` / ``load``
    round-trip through :mod:`recurra.nn.persistence` (``_get_state`` / ``_set_state``).

    ``update(new_rows)`` is the one streaming path, batched over every series at once, and
    returns the frame the new rows produce: their scores.  A streaming caller's next step is
    always that output, so one call per arrival keeps a scheduled run to one pass; the
    forecasters' ``update`` returns their forecast by the same rule
    (:class:`recurra.forecasting.protocol.Forecaster`).  After it, ``last_update_path_``
    says how the rows went (``"fleet: S series x K steps"``, ``"update: M series (why)"``).
    """

    config: Any

    def fit(self, frame: Any) -> Detector:
        """Learn from a long frame; returns self."""

    def score(self, frame: Any) -> pl.DataFrame:
        """``SCORE_SCHEMA`` scores, each series from a fresh state."""

    def predict(self, frame: Any) -> pl.DataFrame:
        """``EVENT_SCHEMA`` events: merged alarm runs and data gaps."""

    def update(self, new_rows: Any) -> pl.DataFrame:
        """Scores of ``new_rows``, after the rows already seen (state carried)."""

    def reset(self, series_ids: list[str] | None = None) -> Detector:
        """Forget the streaming state (of ``series_ids``, default all); returns self."""

    def save(self, path: str | Path) -> Path:
        """Write the fitted detector to the folder ``path``."""

    @classmethod
    def load(cls, path: str | Path) -> Detector:
        """A detector saved with ``save``."""

    def _get_state(self) -> dict[str, Any]: ...

    def _set_state(self, state: dict[str, Any]) -> None: ...


@runtime_checkable
class ErrorModel(Protocol):
    """Per-channel errors of a series' rows; held by :class:`recurra.anomaly.base.BaseDetector`.

    Attributes
    ----------
    tail_length : rows of context a series carries between chunks (the chunk passed to
        ``errors`` starts with up to this many earlier rows).
    streaming : whether a row's error depends only on it and earlier rows.
    float32_inputs : whether ``fit`` must leave out series overflowing float32 (neural).

    Methods
    -------
    fit(chunks, series_ids) : learn from one prepared :class:`Chunk` per training series.
    errors(chunk, n_new, model_state) -> (errors (n_new, F), model_state) : errors of the
        last ``n_new`` rows of ``chunk`` (the carried tail comes first), given the state the
        previous call returned for this series (None at the start).
    get_state() -> dict ; set_state(state, n_channels) : what ``fit`` learned, as plain
        dicts / numpy arrays / tensors (the layout saved models hold under ``"model"``).
    """

    tail_length: int
    streaming: bool
    float32_inputs: bool

    def fit(self, chunks: list[Chunk], series_ids: list[str]) -> None:
        """Learn from one prepared chunk per training series."""

    def errors(self, chunk: Chunk, n_new: int, model_state: Any) -> tuple[np.ndarray, Any]:
        """(n_new, F) errors of the last ``n_new`` rows and the model state to carry."""

    def get_state(self) -> dict[str, Any]:
        """What ``fit`` learned (plain dicts / arrays / tensors)."""

    def set_state(self, state: dict[str, Any], n_channels: int) -> None:
        """Restore what ``get_state`` returned."""
