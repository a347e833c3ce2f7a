"""Calendar features of stacked timestamps equal the per-series call, bit for bit (the
forecast path computes them for every series at once)."""

from __future__ import annotations

import numpy as np

from recurra.forecasting.windows import calendar_features


def test_calendar_features_of_stacked_series_equal_each_series_alone():
    rng = np.random.default_rng(3)
    start = np.datetime64("2023-12-30T21:17:00", "us")
    lasts = start + rng.integers(0, 10**14, size=40).astype("timedelta64[us]")
    spacings = rng.integers(1, 10**10, size=40).astype("timedelta64[us]")  # irregular steps
    futures = [last + spacing * np.arange(1, 25) for last, spacing in
               zip(lasts, spacings, strict=True)]
    stacked = calendar_features(np.stack(futures))
    assert stacked.shape == (40, 24, 6) and stacked.dtype == np.float32
    for row, future in zip(stacked, futures, strict=True):
        assert np.array_equal(row, calendar_features(future))
