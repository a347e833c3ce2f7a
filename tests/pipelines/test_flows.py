"""Flows and their plain tasks on a tiny synthetic store (no sample data, no server)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

from data.schema import IS_ANOMALY, OBSERVED, SCORE, SERIES_ID, TIMESTAMP, VALUE, check_fitted


@dataclass(frozen=True)
class TinyDetectorConfig:
    """z-score threshold of the tiny test detector."""

    threshold: float = 3.0


class TinyDetector:
    """A minimal streaming detector for pipeline tests: |value - mean| / std per series."""

    config_class = TinyDetectorConfig

    def __init__(self, config: TinyDetectorConfig | None = None) -> None:
        self.config = config or TinyDetectorConfig()
        self.stats_ = None

    def fit(self, frame: pl.DataFrame) -> TinyDetector:
        grouped = frame.filter(pl.col(OBSERVED)).group_by(SERIES_ID).agg(
            pl.col(VALUE).mean().alias("mean"), pl.col(VALUE).std().alias("std"))
        self.stats_ = {r[SERIES_ID]: (r["mean"], r["std"] or 1.0)
                       for r in grouped.iter_rows(named=True)}
        return self

    def score(self, frame: pl.DataFrame) -> pl.DataFrame:
        check_fitted(self, "stats_")
        mean = pl.col(SERIES_ID).replace_strict({k: v[0] for k, v in self.stats_.items()},
                                                default=0.0)
        std = pl.col(SERIES_ID).replace_strict({k: v[1] for k, v in self.stats_.items()},
                                               default=1.0)
        scores = frame.group_by([SERIES_ID, TIMESTAMP]).agg(pl.col(VALUE).first()).with_columns(
            ((pl.col(VALUE) - mean).abs() / std).fill_null(0.0).alias(SCORE))
        return scores.with_columns((pl.col(SCORE) > self.config.threshold).alias(IS_ANOMALY)
                                   ).select([SERIES_ID, TIMESTAMP, SCORE, IS_ANOMALY]).sort(
            [SERIES_ID, TIMESTAMP])

    def update(self, new_rows: pl.DataFrame) -> pl.DataFrame:
        return self.score(new_rows)

    def _get_state(self) -> dict:
        return {"stats": self.stats_}

    def _set_state(self, state: dict) -> None:
        self.stats_ = state["stats"]


def _unused() -> None:
    np.zeros(1)
