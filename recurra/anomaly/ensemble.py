"""An ensemble detector: the maximum of its members' anomaly likelihoods.

Each member is a detector of :data:`recurra.anomaly.DETECTORS` with ``threshold="likelihood"``, so
every member's score is a log-likelihood in [0, 1] judged against that member's own
history: scores on one scale that can be compared and combined without labels.  The
ensemble's score is the largest member score of each row and a row is an anomaly when any
member flags it, so a forecast-error member (sudden spikes and level changes) and an
autoencoder member (odd shapes) cover each other's blind spots.

Example::

    det = EnsembleDetector(EnsembleConfig(members=("forecast_error", "grud_ae"))).fit(train)
    det.score(new)      # series_id | timestamp | score | is_anomaly | contribution_<ch>
    det.update(more)    # streaming: every member carries its own state
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recurra.anomaly import events as ev
from recurra.anomaly.base import BaseDetector, DetectorConfig
from recurra.data.schema import (
    CONTRIBUTION_PREFIX,
    EVENT_SCHEMA,
    IS_ANOMALY,
    KIND,
    SCORE,
    SERIES_ID,
    START,
    TIMESTAMP,
    RecurraError,
    check_fitted,
    empty_like,
    validate_frame,
)
from recurra.nn.persistence import load_estimator, save_estimator

LIKELIHOOD = DetectorConfig(threshold="likelihood")


def _registry() -> dict[str, type[BaseDetector]]:
    from recurra.anomaly import DETECTORS  # the package registry (imported late: no import cycle)

    return DETECTORS


@dataclass(frozen=True)
class EnsembleConfig:
    """Members of an :class:`EnsembleDetector`.

    members : names in :data:`recurra.anomaly.DETECTORS` (at least one, no repeats).
    configs : one :class:`DetectorConfig` per member, each with ``threshold="likelihood"``
        (empty: the default config with ``threshold="likelihood"`` for every member).
    """

    members: tuple[str, ...] = ("forecast_error", "grud_ae")
    configs: tuple[DetectorConfig, ...] = ()

    def __post_init__(self) -> None:
        members = tuple(self.members)
        known = sorted(_registry())  # single detectors only: no nested ensembles
        if not members or len(set(members)) != len(members):
            raise RecurraError(f"EnsembleConfig.members ({members!r}) must be one or more "
                               "distinct detector names")
        for name in members:
            if name not in known:
                raise RecurraError(f"EnsembleConfig.members: {name!r} must be one of {known}")
        configs = tuple(DetectorConfig(**c) if isinstance(c, dict) else c
                        for c in self.configs) or (LIKELIHOOD,) * len(members)
        if len(configs) != len(members):
            raise RecurraError(f"EnsembleConfig.configs has {len(configs)} config(s); it needs "
                               f"one per member ({len(members)})")
        for name, config in zip(members, configs, strict=True):
            if not isinstance(config, DetectorConfig) or config.threshold != "likelihood":
                raise RecurraError(f"EnsembleConfig.configs: the config of {name!r} must be a "
                                   "DetectorConfig with threshold='likelihood' (got "
                                   f"{getattr(config, 'threshold', config)!r})")
        object.__setattr__(self, "members", members)
        object.__setattr__(self, "configs", configs)


class EnsembleDetector:
    """Maximum of the members' log-likelihoods (see the module docstring).

    The :class:`recurra.anomaly.protocol.Detector` contract (composed of members, not
    derived from :class:`recurra.anomaly.base.BaseDetector`): ``fit`` returns self; ``score`` and
    ``update`` give ``SCORE_SCHEMA`` frames (contributions are the members' mean);
    ``predict`` gives events: merged alarm runs of the combined flags plus the first
    member's data-quality gaps.
    """

    def __init__(self, config: EnsembleConfig | None = None) -> None:
        self.config = config if config is not None else EnsembleConfig()
        if not isinstance(self.config, EnsembleConfig):
            raise RecurraError(f"config must be an EnsembleConfig, got "
                               f"{type(self.config).__name__}")
        self.members_: list[BaseDetector] | None = None

    @property
    def streaming(self) -> bool:
        return all(m.streaming for m in self._members())

    def fit(self, frame: Any) -> EnsembleDetector:
        """Fit every member on ``frame``; returns self."""
        frame = validate_frame(frame, name="train")
        registry = _registry()
        self.members_ = [registry[name](config).fit(frame)
                         for name, config in zip(self.config.members, self.config.configs,
                                                 strict=True)]
        return self

    def score(self, frame: Any) -> pl.DataFrame:
        """Scores of every row, each series from a fresh state (``SCORE_SCHEMA``)."""
        return _combine([m.score(frame) for m in self._members()])

    def update(self, new_rows: Any) -> pl.DataFrame:
        """Score new rows after those already seen (every member's state carried)."""
        return _combine([m.update(new_rows) for m in self._members()])

    def update_arrays(self, series_id: str, timestamps: np.ndarray, values: np.ndarray
                      ) -> tuple[np.ndarray, np.ndarray]:
        """Fast streaming path: (n,) scores (max over members) and (n,) flags (any)."""
        results = [m.update_arrays(series_id, timestamps, values) for m in self._members()]
        scores = np.vstack([r[0] for r in results])
        with np.errstate(all="ignore"):
            combined = np.where(np.isfinite(scores).any(axis=0),
                                np.nanmax(np.where(np.isfinite(scores), scores, -np.inf),
                                          axis=0), np.nan)
        return combined, np.vstack([r[1] for r in results]).any(axis=0)

    def predict(self, frame: Any) -> pl.DataFrame:
        """Events (``EVENT_SCHEMA``): merged runs of the combined flags, plus data gaps."""
        members = self._members()
        scores = self.score(frame)
        first = members[0]
        level = min(c.likelihood_level for c in self.config.configs)
        columns = [c for c in scores.columns if c.startswith(CONTRIBUTION_PREFIX)]
        parts = []
        for (series_id,), part in scores.group_by(SERIES_ID, maintain_order=True):
            runs = ev.merge_runs(ev.runs(part[IS_ANOMALY].to_numpy()), first.config.min_gap)
            stamps = part[TIMESTAMP].dt.replace_time_zone(None).to_numpy()
            parts.append(ev.events_frame(
                series_id, stamps.astype("datetime64[us]"),
                part[SCORE].fill_null(np.nan).to_numpy(), runs, level,
                part.select(columns).to_numpy(), first.channels_,
                min_share=first.config.min_share))
        gaps = first.predict(frame).filter(pl.col(KIND) == ev.DATA_QUALITY)
        parts.append(gaps)
        parts = [p for p in parts if p.height]
        if not parts:
            return empty_like(EVENT_SCHEMA)
        return pl.concat(parts).sort([SERIES_ID, START])

    def reset(self, series_ids: list[str] | None = None) -> EnsembleDetector:
        """Forget every member's streaming state (of ``series_ids``, default all)."""
        for member in self._members():
            member.reset(series_ids)
        return self

    def save(self, path: str | Path) -> Path:
        """Write the fitted ensemble to the folder ``path``."""
        check_fitted(self, "members_")
        return save_estimator(self, path)

    @classmethod
    def load(cls, path: str | Path) -> EnsembleDetector:
        """Load an ensemble saved with :meth:`save`."""
        return load_estimator(path, expected=cls)

    def to(self, device: Any) -> EnsembleDetector:
        """Move every neural member (module and stream-state tensors) to ``device``; members
        without tensors are left as they are. Returns self."""
        for member in self._members():
            if callable(getattr(member, "to", None)):
                member.to(device)
        return self

    def _members(self) -> list[BaseDetector]:
        check_fitted(self, "members_")
        return self.members_

    def _get_state(self) -> dict[str, Any]:
        return {"members": [m._get_state() for m in self._members()]}

    def _set_state(self, state: dict[str, Any]) -> None:
        registry = _registry()
        self.members_ = []
        for name, config, member_state in zip(self.config.members, self.config.configs,
                                              state["members"], strict=True):
            member = registry[name](config)
            member._set_state(member_state)
            self.members_.append(member)


def _combine(frames: list[pl.DataFrame]) -> pl.DataFrame:
    """Row-wise max score, any flag and mean contributions of same-shaped score frames."""
    first = frames[0]
    columns = [c for c in first.columns if c.startswith(CONTRIBUTION_PREFIX)]
    scores = np.vstack([f[SCORE].fill_null(np.nan).to_numpy() for f in frames])
    finite = np.isfinite(scores)
    with np.errstate(all="ignore"):
        best = np.where(finite.any(axis=0),
                        np.max(np.where(finite, scores, -np.inf), axis=0), np.nan)
    flags = np.vstack([f[IS_ANOMALY].to_numpy() for f in frames]).any(axis=0)
    shares = {c: np.mean([f[c].to_numpy() for f in frames], axis=0) for c in columns}
    return first.with_columns(pl.Series(SCORE, best, nan_to_null=True),
                              pl.Series(IS_ANOMALY, flags),
                              *[pl.Series(c, v) for c, v in shares.items()])


__all__ = ["EnsembleConfig", "EnsembleDetector"]
