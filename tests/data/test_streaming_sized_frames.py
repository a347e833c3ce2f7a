"""Streaming-sized frames (a few rows: validate_frame takes a plain-Python path) give what
the general path gives, and frame_to_arrays (numpy, one pass) gives what an independent
per-series polars pivot gives: same rows, same arrays, same error messages."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from recurra.data import schema as schema_module
from recurra.data.arrays import frame_to_arrays
from recurra.data.schema import SchemaError, validate_frame


def _messy_frame(seed: int, n_rows: int = 40) -> pl.DataFrame:
    """Shuffled rows of 3 series x 3 channels with gaps, nulls and an extra column."""
    rng = np.random.default_rng(seed)
    cells = [(s, c, t) for s in ("b", "a", "c") for c in ("y", "x", "z") for t in range(12)]
    picked = [cells[i] for i in rng.choice(len(cells), size=n_rows, replace=False)]
    values = rng.normal(size=n_rows)
    values = [None if rng.random() < 0.2 else float(v) for v in values]
    return pl.DataFrame({
        "series_id": [p[0] for p in picked], "channel": [p[1] for p in picked],
        "timestamp": [dt.datetime(2024, 1, 1) + dt.timedelta(hours=3 * p[2] + p[2] % 2)
                      for p in picked],
        "value": values, "note": [str(i) for i in range(n_rows)]})


def _general(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(schema_module, "SMALL_FRAME", -1)


def _pivoted(raw: pl.DataFrame, channels: list[str] | None = None) -> list:
    """The reference: per series, a polars pivot of values and mask on the timestamps."""
    from recurra.data.arrays import _finish

    frame = validate_frame(raw)
    names = sorted(frame["channel"].unique().to_list()) if channels is None else channels
    frame = frame.filter(pl.col("channel").is_in(names))
    result = []
    for (series_id,), part in frame.group_by("series_id", maintain_order=True):
        wide = part.pivot(on="channel", index="timestamp", values="value").sort("timestamp")
        mask = part.pivot(on="channel", index="timestamp", values="observed").sort("timestamp")
        values = np.full((wide.height, len(names)), np.nan)
        observed = np.zeros((wide.height, len(names)), dtype=bool)
        for j, name in enumerate(names):
            if name in wide.columns:
                values[:, j] = wide[name].fill_null(np.nan).to_numpy()
                observed[:, j] = mask[name].fill_null(False).to_numpy()
        stamps = wide["timestamp"].dt.replace_time_zone(None).to_numpy().astype("datetime64[us]")
        result.append(_finish(str(series_id), names, stamps, values, observed, None))
    return result


@pytest.mark.parametrize("seed", range(5))
def test_a_few_rows_validate_and_convert_as_many_rows_do(seed, monkeypatch):
    raw = _messy_frame(seed)
    fast = validate_frame(raw)
    fast_arrays = frame_to_arrays(raw, channels=["z", "x"])
    fast_all = frame_to_arrays(raw)
    _general(monkeypatch)
    assert fast.equals(validate_frame(raw))
    for got, want in ((fast_arrays, _pivoted(raw, ["z", "x"])), (fast_all, _pivoted(raw)),
                      (frame_to_arrays(raw, channels=["x"]), _pivoted(raw, ["x"]))):
        assert [a.series_id for a in got] == [a.series_id for a in want]
        for a, b in zip(got, want, strict=True):
            assert a.channels == b.channels and a.time_scale == b.time_scale
            np.testing.assert_array_equal(a.timestamps, b.timestamps)
            np.testing.assert_array_equal(a.values, b.values)
            np.testing.assert_array_equal(a.observed, b.observed)
            np.testing.assert_array_equal(a.delta, b.delta)


def test_a_one_row_frame_converts_and_filters_by_channel():
    row = pl.DataFrame({"series_id": ["s"], "channel": ["q"],
                        "timestamp": [dt.datetime(2024, 1, 1)], "value": [1.5]})
    (arrays,) = frame_to_arrays(row)
    assert arrays.values.tolist() == [[1.5]] and arrays.delta.tolist() == [[0.0]]
    assert frame_to_arrays(row, channels=["other"]) == []
    assert frame_to_arrays(row.head(0)) == []


@pytest.mark.parametrize("general", [False, True])
def test_a_few_bad_rows_get_the_same_error_messages_as_many(general, monkeypatch):
    if general:
        _general(monkeypatch)
    stamp = dt.datetime(2024, 1, 1)
    dup = pl.DataFrame({"series_id": ["s", "s", "s"], "channel": ["c", "c", "c"],
                        "timestamp": [stamp + dt.timedelta(hours=1), stamp, stamp],
                        "value": [1.0, 2.0, 3.0]})
    with pytest.raises(SchemaError, match=r"new rows: 2 rows share a \(series_id, channel, "
                                          r"timestamp\) key \(first: 's'/'c' at 2024-01-01 "):
        validate_frame(dup, name="new rows")
    bad = dup.with_columns(pl.Series("value", [1.0, float("nan"), float("inf")]))
    with pytest.raises(SchemaError, match=r"frame: column 'value' has 2 NaN/inf value\(s\) "
                                          r"\(first: series 's' at 2024-01-01 00:00"):
        validate_frame(bad)
    wrong = dup.with_columns(pl.Series("value", [None, 1.0, 2.0]),
                             pl.Series("observed", [True, True, True]))
    with pytest.raises(SchemaError, match=r"'observed' must equal value.is_not_null\(\); 1 "):
        validate_frame(wrong)


def _assert_same_arrays(got: list, want: list) -> None:
    assert [a.series_id for a in got] == [a.series_id for a in want]
    for a, b in zip(got, want, strict=True):
        assert a.channels == b.channels and a.time_scale == b.time_scale
        for name in ("timestamps", "values", "observed", "delta"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)


def test_long_gappy_multichannel_series_convert_as_a_pivot_does():
    from tests.conftest import make_frame

    frame = make_frame(n_series=4, n_steps=700, n_channels=3, gap_share=0.2, seed=3)
    frame = frame.filter(~((pl.col("channel") == frame["channel"][0])
                           & (pl.col("series_id") == frame["series_id"][0])))  # a lost channel
    _assert_same_arrays(frame_to_arrays(frame), _pivoted(frame))
    names = sorted(frame["channel"].unique().to_list())[:2]
    _assert_same_arrays(frame_to_arrays(frame, channels=names), _pivoted(frame, names))


def test_one_row_for_each_of_many_series_converts_as_a_pivot_does():
    n_series = 300  # 600 rows, one timestamp per series
    rng = np.random.default_rng(7)
    raw = pl.DataFrame({
        "series_id": [f"s{i % n_series:03d}" for i in range(2 * n_series)],
        "channel": ["a"] * n_series + ["b"] * n_series,
        "timestamp": [dt.datetime(2024, 1, 1, i % 24) for i in range(2 * n_series)],
        "value": [None if v < -1 else float(v) for v in rng.normal(size=2 * n_series)]})
    fast = frame_to_arrays(raw)
    slow = _pivoted(raw)
    assert [a.series_id for a in fast] == [a.series_id for a in slow]
    for a, b in zip(fast, slow, strict=True):
        np.testing.assert_array_equal(a.timestamps, b.timestamps)
        np.testing.assert_array_equal(a.values, b.values)
        np.testing.assert_array_equal(a.observed, b.observed)
