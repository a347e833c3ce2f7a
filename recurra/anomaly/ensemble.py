"""An ensemble detector: the maximum of its members' anomaly likelihoods.

Each member is a detector of :data:`recurra.anomaly.DETECTORS` with the likelihood threshold
(``threshold=ThresholdConfig(kind="likelihood")``), so
every member's score is a log-likelihood in [0, 1] judged against that member's own
history: scores on one scale that can be compared and combined without labels.  The
ensemble's score is the largest member score of each row and a row is an anomaly when any
member flags it, so a forecast-error member (sudden spikes and level changes) and an
autoencoder member (odd shapes) cover each other's blind spots.

Example::

    det = EnsembleDetector(EnsembleConfig(members=("forecast_error", "grud_ae"))).fit(train)
    det.score(new)      # series_id | timestamp | score | is_anomaly | contribution_<ch>
    det.update(more)    # streaming (the scores of `more`): every member carries its state
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recurra.anomaly import events as ev
from recurra.anomaly.base import BaseDetector
from recurra.anomaly.config import DetectorConfig
from recurra.data.config_tree import build_config
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
    contract,
    empty_like,
)
from recurra.nn.persistence import load_estimator, save_estimator


def _registry() -> dict[str, type[BaseDetector]]:
    from recurra.anomaly import DETECTORS  # the package registry (imported late: no import cycle)

    return DETECTORS


@dataclass(frozen=True)
class EnsembleConfig:
    """Members of an :class:`EnsembleDetector`.

    members : names in :data:`recurra.anomaly.DETECTORS` (at least one, no repeats).
    configs : one config per member, each of its detector's ``config_class`` with
        ``threshold.kind="likelihood"`` (a dict is built as that class, its old flat keys
        included; empty: every member's default config with the likelihood threshold).
        In a TOML file: ``configs = [{ window = 32, network = { hidden_size = 16 } }, ...]``.
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
        registry = _registry()
        configs = _member_configs(members, self.configs, "EnsembleConfig") or tuple(
            _likelihood(registry[name].config_class()) for name in members)
        if len(configs) != len(members):
            raise RecurraError(f"EnsembleConfig.configs has {len(configs)} config(s); it needs "
                               f"one per member ({len(members)})")
        for name, config in zip(members, configs, strict=True):
            expected = registry[name].config_class
            if not isinstance(config, expected) or config.threshold.kind != "likelihood":
                raise RecurraError(f"EnsembleConfig.configs: the config of {name!r} must be "
                                   f"of class {expected.__name__} with threshold.kind="
                                   f"'likelihood' (got {config!r})")
        object.__setattr__(self, "members", members)
        object.__setattr__(self, "configs", configs)

    @classmethod
    def build_parts(cls, values: Mapping[str, Any], *, where: str, warn: bool, unknown: str
                    ) -> dict[str, Any]:
        """``values`` with each member's config table built as its detector's
        ``config_class`` (:func:`recurra.data.config_tree.build_config` calls it, so a TOML
        table and a saved model's flat member configs load the same way)."""
        members = tuple(values.get("members", cls.members))
        configs = _member_configs(members, values.get("configs", ()), where, warn=warn,
                                  unknown=unknown)
        return {**values, "configs": configs} if "configs" in values else dict(values)


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
        self.last_update_path_: str | None = None

    @property
    def streaming(self) -> bool:
        return all(m.streaming for m in self._members())

    def fit(self, frame: Any) -> EnsembleDetector:
        """Fit every member on ``frame``; returns self."""
        frame = contract(frame, name="train")  # checked once for every member
        registry = _registry()
        self.members_ = [registry[name](config).fit(frame)
                         for name, config in zip(self.config.members, self.config.configs,
                                                 strict=True)]
        return self

    def score(self, frame: Any) -> pl.DataFrame:
        """Scores of every row, each series from a fresh state (``SCORE_SCHEMA``)."""
        members = self._members()
        frame = contract(frame, name="frame")  # checked once for every member
        return _combine([m.score(frame) for m in members])

    def update(self, new_rows: Any) -> pl.DataFrame:
        """Scores of new rows after those already seen (every member's state carried):
        each member's batched :meth:`recurra.anomaly.base.BaseDetector.update`, combined
        (max score, any flag, mean contributions).  ``last_update_path_`` is the members'
        path (each member's, ``"name: path"`` joined by ``" | "``, when they differ)."""
        members = self._members()
        frames = [m.update(new_rows) for m in members]
        paths = [m.last_update_path_ for m in members]
        self.last_update_path_ = paths[0] if len(set(paths)) == 1 else " | ".join(
            f"{name}: {path}" for name, path in zip(self.config.members, paths, strict=True))
        return _combine(frames)

    def _update_series(self, series_id: str, timestamps: np.ndarray, values: np.ndarray
                       ) -> tuple[np.ndarray, np.ndarray]:
        """The per-series path without frames: (n,) scores (max over members) and (n,)
        flags (any)."""
        results = [m._update_series(series_id, timestamps, values) for m in self._members()]
        scores = np.vstack([r[0] for r in results])
        with np.errstate(all="ignore"):
            combined = np.where(np.isfinite(scores).any(axis=0),
                                np.nanmax(np.where(np.isfinite(scores), scores, -np.inf),
                                          axis=0), np.nan)
        return combined, np.vstack([r[1] for r in results]).any(axis=0)

    def predict(self, frame: Any) -> pl.DataFrame:
        """Events (``EVENT_SCHEMA``): merged runs of the combined flags, plus data gaps."""
        members = self._members()
        frame = contract(frame, name="frame")  # checked once: score and the gap events
        scores = self.score(frame)
        first = members[0]
        level = min(c.threshold.likelihood_level for c in self.config.configs)
        columns = [c for c in scores.columns if c.startswith(CONTRIBUTION_PREFIX)]
        parts = []
        for (series_id,), part in scores.group_by(SERIES_ID, maintain_order=True):
            runs = ev.merge_runs(ev.runs(part[IS_ANOMALY].to_numpy()),
                                 first.config.events.min_gap)
            stamps = part[TIMESTAMP].dt.replace_time_zone(None).to_numpy()
            parts.append(ev.events_frame(
                series_id, stamps.astype("datetime64[us]"),
                part[SCORE].fill_null(np.nan).to_numpy(), runs, level,
                part.select(columns).to_numpy(), first.channels_,
                min_share=first.config.events.min_share))
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


def _likelihood(config: DetectorConfig) -> DetectorConfig:
    return replace(config, threshold=replace(config.threshold, kind="likelihood"))


def _member_configs(members: tuple[str, ...], configs: Any, where: str, *, warn: bool = True,
                    unknown: str = "raise") -> tuple[Any, ...]:
    """``configs`` with each table built as the config class of its member's detector
    (instances, and tables of unknown members, are left for ``__post_init__`` to judge)."""
    registry = _registry()
    built = []
    for index, config in enumerate(configs):
        name = members[index] if index < len(members) else None
        if isinstance(config, Mapping) and name in registry:
            config = build_config(registry[name].config_class, config,
                                  where=f"{where}.configs[{index}]", warn=warn,
                                  unknown=unknown)
        built.append(config)
    return tuple(built)


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
