"""Missing-value helpers: statistics, fillers on arrays and frames, hiding and scoring."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from recurra.data.arrays import frame_to_arrays
from recurra.data.missing import (
    IMPUTED,
    channel_means,
    channel_stds,
    fill_arrays,
    fill_frame,
    hide_values,
    imputation_error,
    last_observed,
)
from recurra.data.schema import SchemaError, validate_frame


def _irregular_frame():
    """One series, one channel, at hours 0, 1, 3, 4 with values 1, -, -, 4."""
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    hours = [0, 1, 3, 4]
    return validate_frame(pl.DataFrame({
        "series_id": ["a"] * 4,
        "timestamp": [start + dt.timedelta(hours=h) for h in hours],
        "value": [1.0, None, None, 4.0],
    }))


def test_channel_means_and_stds_use_observed_values_only(multichannel_frame):
    arrays = frame_to_arrays(multichannel_frame)
    means = channel_means(arrays)
    stds = channel_stds(arrays)
    observed = multichannel_frame.filter(pl.col("observed"))
    for j, channel in enumerate(arrays[0].channels):
        values = observed.filter(pl.col("channel") == channel)["value"].to_numpy()
        assert means[j] == pytest.approx(values.mean())
        assert stds[j] == pytest.approx(values.std())


def test_channel_never_observed_gets_zero_mean_and_unit_std():
    frame = _irregular_frame().with_columns(pl.lit(None, pl.Float64).alias("value"),
                                            pl.lit(False).alias("observed"))
    arrays = frame_to_arrays(frame)
    assert channel_means(arrays).tolist() == [0.0]
    assert channel_stds(arrays).tolist() == [1.0]
    assert np.isnan(last_observed(arrays[0])).all()


def test_last_observed_and_array_fillers_on_real_timestamps():
    arrays = frame_to_arrays(_irregular_frame())[0]
    assert last_observed(arrays).tolist() == [4.0]
    assert fill_arrays(arrays, "forward")[:, 0].tolist() == [1.0, 1.0, 1.0, 4.0]
    assert fill_arrays(arrays, "mean")[:, 0].tolist() == [1.0, 2.5, 2.5, 4.0]
    # hour 1 is a quarter of the way from hour 0 to hour 4, hour 3 three quarters
    assert fill_arrays(arrays, "linear")[:, 0].tolist() == [1.0, 1.75, 3.25, 4.0]
    with pytest.raises(SchemaError, match=r"`method` \('spline'\) must be one of"):
        fill_arrays(arrays, "spline")
    with pytest.raises(SchemaError, match="`means` has shape"):
        fill_arrays(arrays, "mean", means=np.zeros(2))


def test_fill_frame_keeps_the_mask_in_imputed_column():
    frame = _irregular_frame()
    for method, expected in (("forward", [1.0, 1.0, 1.0, 4.0]),
                             ("linear", [1.0, 1.75, 3.25, 4.0]),
                             ("mean", [1.0, 2.5, 2.5, 4.0])):
        filled = fill_frame(frame, method)
        assert filled["value"].to_list() == expected
        assert filled["observed"].all()
        assert filled[IMPUTED].to_list() == [False, True, True, False]


def test_fill_frame_leading_gap_uses_given_means(gappy_frame):
    frame = gappy_frame.with_columns(
        pl.when(pl.col("timestamp") == pl.col("timestamp").min()).then(None)
        .otherwise(pl.col("value")).alias("value")).with_columns(
        pl.col("value").is_not_null().alias("observed"))
    filled = fill_frame(frame, "forward", means={"value": -7.0})
    first = filled.filter(pl.col("timestamp") == pl.col("timestamp").min())
    assert first["value"].to_list() == [-7.0, -7.0]
    assert filled["value"].null_count() == 0


def test_hide_values_random_hides_only_observed_cells(gappy_frame):
    hidden, mask = hide_values(gappy_frame, 0.3, seed=1)
    original = validate_frame(gappy_frame)
    assert mask.len() == original.height
    assert not (mask.to_numpy() & ~original["observed"].to_numpy()).any()
    assert hidden["observed"].sum() == original["observed"].sum() - mask.sum()
    share = mask.sum() / original["observed"].sum()
    assert 0.2 < share < 0.4
    again, mask_again = hide_values(gappy_frame, 0.3, seed=1)
    assert mask.equals(mask_again) and again.equals(hidden)


def test_hide_values_block_mode_hides_runs(gappy_frame):
    hidden, mask = hide_values(gappy_frame, 0.2, mode="block", block_length=10, seed=0)
    values = mask.to_numpy().astype(int)
    runs = np.diff(np.r_[0, values, 0])
    lengths = np.flatnonzero(runs == -1) - np.flatnonzero(runs == 1)
    assert lengths.max() >= 5  # runs, not isolated cells (natural gaps may cut a block)
    share = mask.sum() / validate_frame(gappy_frame)["observed"].sum()
    assert 0.15 < share < 0.35


def test_hide_values_rejects_bad_options(gappy_frame):
    with pytest.raises(SchemaError, match=r"`share` \(1.5\) must be in \[0, 1\)"):
        hide_values(gappy_frame, 1.5)
    with pytest.raises(SchemaError, match="`mode` \\('burst'\\) must be one of"):
        hide_values(gappy_frame, 0.1, mode="burst")
    with pytest.raises(SchemaError, match="`block_length` \\(0\\)"):
        hide_values(gappy_frame, 0.1, mode="block", block_length=0)


def test_imputation_error_hand_computed():
    frame = validate_frame(pl.DataFrame({
        "series_id": ["a"] * 4,
        "timestamp": [dt.datetime(2024, 1, 1, h, tzinfo=dt.UTC) for h in range(4)],
        "value": [0.0, 2.0, 4.0, 6.0],
    }))
    mask = pl.Series([False, True, True, False])
    hidden = frame.with_columns(pl.lit(None, pl.Float64).alias("value"),
                                pl.lit(False).alias("observed"))
    imputed = frame.with_columns(pl.Series("value", [0.0, 3.0, 1.0, 6.0]))
    errors = imputation_error(frame, imputed, mask)
    assert errors == {"mae": 2.0, "rmse": pytest.approx(np.sqrt(5.0)), "n_hidden": 2}
    with pytest.raises(SchemaError, match="leaves 2 hidden cell"):
        imputation_error(frame, hidden, mask)
    with pytest.raises(SchemaError, match="`hidden_mask` has 3"):
        imputation_error(frame, imputed, mask[:3])


def test_linear_beats_forward_fill_on_smooth_series(gappy_frame):
    hidden, mask = hide_values(gappy_frame, 0.3, seed=2)
    linear = imputation_error(gappy_frame, fill_frame(hidden, "linear"), mask)
    forward = imputation_error(gappy_frame, fill_frame(hidden, "forward"), mask)
    mean = imputation_error(gappy_frame, fill_frame(hidden, "mean"), mask)
    assert linear["mae"] < forward["mae"] < mean["mae"]
