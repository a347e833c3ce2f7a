"""Downsampling keeps extremes, gaps and the bound on points; small series pass through."""

from __future__ import annotations

import numpy as np
import pytest

from recurra.dashboards.downsample import downsample_indices, lttb_indices, minmax_indices
from recurra.data.schema import RecurraError


def _series(n_steps: int = 100_000, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    values = np.cumsum(rng.standard_normal(n_steps))
    values[rng.random(n_steps) < 0.01] = np.nan
    values[12_345] = 1e6      # a spike that must survive
    values[54_321] = -1e6
    return values


def test_minmax_hand_computed_bucket():
    values = np.array([0., 5., 1., 2., 3., -4., 1., 0., 2., 1., 0.])
    assert minmax_indices(values, 7).tolist() == [0, 1, 5, 10]
    gappy = np.array([0., 5., 1., np.nan, np.nan, -4., 1., 0., 2., 1.])
    assert minmax_indices(gappy, 7).tolist() == [0, 1, 2, 3, 5, 9]   # 2 and 5 frame the gap


def test_short_series_pass_through_unchanged():
    values = np.array([1.0, np.nan, 3.0])
    assert minmax_indices(values, 10).tolist() == [0, 1, 2]
    assert lttb_indices(np.arange(3.0), values, 10).tolist() == [0, 1, 2]


@pytest.mark.parametrize("method", ["minmax", "lttb"])
def test_bound_extremes_and_gaps_are_kept(method):
    values = _series()
    x = np.arange(values.size, dtype=np.float64)
    kept = downsample_indices(x, values, 5_000, method)
    assert kept.size <= 5_000
    assert np.all(np.diff(kept) > 0), "indices are sorted and unique"
    assert {12_345, 54_321} <= set(kept.tolist())
    assert np.isnan(values[kept]).any(), "gaps still break the line"
    assert kept[0] == 0


def test_minmax_keeps_global_extremes_of_every_bucket_on_a_million_points():
    values = _series(1_000_000, seed=1)
    kept = minmax_indices(values, 5_000)
    assert kept.size <= 5_000
    assert np.nanmax(values[kept]) == np.nanmax(values)
    assert np.nanmin(values[kept]) == np.nanmin(values)


def test_all_missing_series_does_not_fail():
    values = np.full(20_000, np.nan)
    kept = minmax_indices(values, 100)
    assert kept.size <= 100 and np.isnan(values[kept]).all()


def test_bad_arguments_name_the_parameter():
    with pytest.raises(RecurraError, match=r"max_points \(2\) must be an integer >= 7"):
        minmax_indices(np.zeros(10), 2)
    with pytest.raises(RecurraError, match=r"method \('mean'\) must be one of"):
        downsample_indices(np.zeros(10), np.zeros(10), 100, "mean")
