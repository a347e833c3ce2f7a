"""A smoke run on one real NAB series (skipped without ../shared/data)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest
import torch

from recurra.anomaly import RollingZScoreDetector, ThresholdConfig, ZScoreConfig
from recurra.anomaly import metrics as m

pytestmark = pytest.mark.shared_data


def test_rolling_zscore_on_a_nab_series(shared_data):
    torch.set_num_threads(1)
    key = "realTraffic/speed_6005.csv"
    raw = pl.read_csv(shared_data / "nab" / "data" / key, try_parse_dates=True)
    frame = raw.select(pl.lit(key).alias("series_id"),
                       pl.col("timestamp").cast(pl.Datetime("us")),
                       pl.col("value").cast(pl.Float64))
    n_train = m.probationary_length(frame.height)
    config = ZScoreConfig(window=64, threshold=ThresholdConfig(risk=1e-4))
    detector = RollingZScoreDetector(config).fit(
        frame.head(n_train))
    scores = detector.update(frame.slice(n_train))
    assert scores.height == frame.height - n_train
    windows_json = json.loads((shared_data / "nab" / "labels" /
                               "combined_windows.json").read_text())[key]
    stamps = frame["timestamp"].to_numpy()
    windows = []
    for start, end in windows_json:
        first = int(np.searchsorted(stamps, np.datetime64(start.replace(" ", "T"))))
        last = int(np.searchsorted(stamps, np.datetime64(end.replace(" ", "T")), "right")) - 1
        windows.append((first, last))
    flags = np.concatenate([np.zeros(n_train, bool), scores["is_anomaly"].to_numpy()])
    null, perfect = m.nab_baselines(frame.height, windows)
    raw_score = m.nab_score(flags, windows)
    assert null == -len(windows) and perfect == pytest.approx(len(windows))
    assert np.isfinite(m.nab_normalise(raw_score, null, perfect))
