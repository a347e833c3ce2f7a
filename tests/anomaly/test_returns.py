"""ReturnZScoreDetector: jumps alarm, trends do not; streaming equals one pass."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl

from recurra.anomaly.config import ThresholdConfig
from recurra.anomaly.returns import ReturnZScoreDetector, ZScoreConfig
from recurra.data.schema import validate_frame


def price_frame(n_steps: int = 300, jump_at: int | None = None, seed: int = 0) -> pl.DataFrame:
    rng = np.random.default_rng(seed)
    returns = 0.01 * rng.standard_normal(n_steps) + 0.002          # a steady up-trend
    if jump_at is not None:
        returns[jump_at] = -0.12
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    return validate_frame(pl.DataFrame({
        "series_id": "spx", "channel": "close",
        "timestamp": [start + dt.timedelta(days=i) for i in range(n_steps)],
        "value": 100 * np.exp(np.cumsum(returns)), "observed": True}))


def test_a_jump_alarms_and_the_trend_does_not():
    config = ZScoreConfig(window=20, threshold=ThresholdConfig(kind="quantile", level=0.99))
    detector = ReturnZScoreDetector(config).fit(price_frame(200))
    scores = detector.score(price_frame(300, jump_at=250).tail(100))
    flagged = scores.filter(pl.col("is_anomaly"))["timestamp"].to_list()
    jump = price_frame(300)["timestamp"][250]
    assert jump in flagged
    assert len(flagged) <= 5          # the up-trend of the levels raises no alarms


def test_streaming_equals_one_pass():
    frame = price_frame(260, jump_at=230)
    config = ZScoreConfig(window=20, threshold=ThresholdConfig(kind="quantile", level=0.99))
    train, rest = frame.head(200), frame.tail(60)
    one_pass = ReturnZScoreDetector(config).fit(train).update(rest)
    streamed = ReturnZScoreDetector(config).fit(train)
    parts = [streamed.update(rest.slice(i, 1)) for i in range(rest.height)]
    np.testing.assert_allclose(pl.concat(parts)["score"].to_numpy(),
                               one_pass["score"].to_numpy(), rtol=1e-9)
