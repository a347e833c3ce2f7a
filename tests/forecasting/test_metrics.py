"""Forecast metrics on tiny hand-computed arrays, and the per-series evaluator."""

from __future__ import annotations

import datetime as dt
import math

import numpy as np
import polars as pl
import pytest

from recurra.data.schema import SchemaError
from recurra.forecasting.metrics import (
    coverage,
    crps_from_quantiles,
    evaluate,
    mae,
    mase,
    mse,
    pinball,
    rmse,
    seasonal_scale,
    skill,
    smape,
)

Y = np.array([1.0, 2.0, 3.0, 4.0])
P = np.array([2.0, 2.0, 1.0, 4.0])  # errors 1, 0, -2, 0


def test_point_metrics_by_hand():
    assert mae(Y, P) == pytest.approx(3 / 4)
    assert mse(Y, P) == pytest.approx(5 / 4)
    assert rmse(Y, P) == pytest.approx(math.sqrt(5 / 4))
    # 200 * |e| / (|y| + |p|): 200/3, 0, 200*2/4, 0
    assert smape(Y, P) == pytest.approx((200 / 3 + 100) / 4)


def test_masks_and_nan_targets_are_left_out():
    mask = np.array([True, True, False, True])
    assert mae(Y, P, mask) == pytest.approx(1 / 3)
    assert mse(np.array([1.0, np.nan]), np.array([3.0, 0.0])) == pytest.approx(4.0)
    assert math.isnan(mae(Y, P, np.zeros(4, bool)))
    assert smape(np.zeros(2), np.zeros(2)) == 0.0


def test_broadcasting_over_windows_steps_channels():
    y = np.zeros((2, 3, 4))
    p = np.ones((2, 3, 4))
    mask = np.ones((2, 3, 1), bool)
    assert mse(y, p, mask) == 1.0


def test_mase_uses_the_in_sample_seasonal_naive_scale():
    history = np.array([0.0, 2.0, 4.0, 6.0, np.nan, 10.0])
    assert seasonal_scale(history, season=1) == pytest.approx(2.0)  # pairs with NaN dropped
    assert seasonal_scale(history, season=2) == pytest.approx(4.0)
    assert mase(Y, P, history, season=1) == pytest.approx((3 / 4) / 2.0)
    with pytest.raises(SchemaError, match=r"`season` \(0\) must be an integer >= 1"):
        seasonal_scale(history, season=0)


def test_pinball_and_crps_by_hand():
    # y=1, q=0 at level 0.9: 0.9 * 1; y=0, q=1: (0.9 - 1) * -1 = 0.1
    assert pinball(np.array([1.0, 0.0]), np.array([0.0, 1.0]), 0.9) == pytest.approx(0.5)
    # median forecast: CRPS from the single 0.5 quantile = 2 * 0.5 * |e| = |e| (MAE)
    quantiles = P[:, None]
    assert crps_from_quantiles(Y, quantiles, [0.5]) == pytest.approx(mae(Y, P))
    with pytest.raises(SchemaError, match="`level`"):
        pinball(Y, P, 1.0)
    with pytest.raises(SchemaError, match="must match `levels`"):
        crps_from_quantiles(Y, quantiles, [0.1, 0.9])


def test_crps_of_a_point_forecast_equals_mae_for_any_quantile_grid():
    levels = [0.1, 0.3, 0.5, 0.7, 0.9]
    quantiles = np.repeat(P[:, None], len(levels), axis=1)
    # sum of levels pinballs of a point forecast: |e| * mean over q of (q or 1-q) * 2 = |e|
    assert crps_from_quantiles(Y, quantiles, levels) == pytest.approx(mae(Y, P))


def test_coverage_and_skill():
    assert coverage(Y, Y - 0.5, Y + 0.5) == 1.0
    assert coverage(Y, P - 0.5, P + 0.5) == pytest.approx(0.5)
    assert coverage(Y, P - 0.5, P + 0.5, np.array([False, True, True, True])) == pytest.approx(
        2 / 3)
    assert skill(0.5, 1.0) == pytest.approx(0.5)
    assert math.isnan(skill(0.5, 0.0))


def _hours(n, start=0):
    base = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    return [base + dt.timedelta(hours=start + i) for i in range(n)]


def test_evaluate_per_series_and_channel():
    actuals = pl.DataFrame({"series_id": ["a"] * 4 + ["b"] * 4,
                            "timestamp": _hours(4, 10) * 2,
                            "value": [1.0, 2.0, 3.0, None, 0.0, 0.0, 0.0, 0.0]})
    forecasts = pl.DataFrame({
        "series_id": ["a"] * 4 + ["b"] * 2, "channel": ["value"] * 6,
        "issued_at": [_hours(1, 9)[0]] * 6, "timestamp": _hours(4, 10) + _hours(2, 10),
        "step": [1, 2, 3, 4, 1, 2], "y_hat": [2.0, 2.0, 2.0, 2.0, 1.0, -1.0],
        "q10": [0.0] * 6, "q90": [2.5, 2.5, 2.5, 2.5, 0.5, 0.5],
    })
    history = pl.DataFrame({"series_id": ["a"] * 3, "timestamp": _hours(3),
                            "value": [0.0, 1.0, 3.0]})
    result = evaluate(forecasts, actuals, history=history)
    a = result.filter(pl.col("series_id") == "a").row(0, named=True)
    assert a["n"] == 3  # the unobserved target is left out
    assert a["mae"] == pytest.approx(2 / 3)
    assert a["mse"] == pytest.approx(2 / 3)
    assert a["coverage"] == pytest.approx(2 / 3)  # 3.0 > q90 = 2.5
    assert a["mase"] == pytest.approx((2 / 3) / 1.5)
    b = result.filter(pl.col("series_id") == "b").row(0, named=True)
    assert b["n"] == 2 and b["mae"] == pytest.approx(1.0)
    assert math.isnan(b["mase"])
    # CRPS from q10/q90 = (2/2) * (pinball_0.1 + pinball_0.9)
    y, q10, q90 = np.zeros(2), np.zeros(2), np.full(2, 0.5)
    assert b["crps"] == pytest.approx(pinball(y, q10, 0.1) + pinball(y, q90, 0.9))


def test_evaluate_rejects_a_frame_that_is_not_a_forecast():
    actuals = pl.DataFrame({"series_id": ["a"], "timestamp": _hours(1), "value": [1.0]})
    with pytest.raises(SchemaError, match=r"forecasts: missing column\(s\) \['y_hat'\]"):
        evaluate(actuals.with_columns(pl.lit("value").alias("channel")), actuals)
    with pytest.raises(SchemaError, match="`by`"):
        evaluate(pl.DataFrame({"series_id": [], "channel": [], "timestamp": [], "y_hat": []}),
                 actuals, by=("step",))
