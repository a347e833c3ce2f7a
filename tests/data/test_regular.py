"""Frequency inference, regular grids with gap rows, duplicate resolution."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from recurra.data.regular import (
    format_every,
    infer_frequency,
    parse_every,
    regularize,
    resolve_duplicates,
)
from recurra.data.schema import SchemaError

UTC = dt.UTC


def stamps(*items) -> list[dt.datetime]:
    return [dt.datetime(*item, tzinfo=UTC) for item in items]


def frame(timestamps, values=None, series_id="s", channel="value") -> pl.DataFrame:
    values = values if values is not None else [float(i) for i in range(len(timestamps))]
    return pl.DataFrame({"series_id": [series_id] * len(timestamps),
                         "channel": [channel] * len(timestamps),
                         "timestamp": timestamps, "value": values})


@pytest.mark.parametrize("timestamps,expected", [
    ([dt.datetime(2024, 1, 1, h) for h in range(10)], "1h"),
    ([dt.datetime(2024, 1, 1, 0, 5 * m) for m in range(10)], "5m"),
    ([dt.datetime(2024, 1, d) for d in range(1, 15)], "1d"),
    ([dt.datetime(2024, 1, d) for d in range(1, 20) if dt.date(2024, 1, d).weekday() < 5],
     "business-day"),
    ([dt.datetime(2024, 1, 1, h) for h in (0, 1, 2, 5, 6, 7, 8, 9, 10)], "1h"),  # gaps
    ([dt.datetime(2024, 1, 1, 0, m) for m in (0, 7, 9, 30, 31, 50)], "irregular"),
    ([dt.datetime(2024, 1, 1)], "unknown"),
])
def test_infer_frequency(timestamps, expected):
    assert infer_frequency(timestamps) == expected


def test_infer_frequency_ignores_order_and_duplicates():
    ts = [dt.datetime(2024, 1, 1, h) for h in (3, 1, 2, 2, 0)]
    assert infer_frequency(ts) == "1h"


def test_every_round_trip_and_errors():
    assert format_every(parse_every("15m")) == "15m"
    assert format_every(parse_every("24h")) == "1d"
    for bad in ("", "h", "0h", "1 fortnight", "-1d"):
        with pytest.raises(SchemaError, match="`every`"):
            parse_every(bad)


def test_regularize_inserts_gap_rows_and_keeps_values():
    out = regularize(frame(stamps((2024, 1, 1, 0), (2024, 1, 1, 3)), [1.0, 4.0]), "1h")
    assert out["timestamp"].to_list() == stamps(*[(2024, 1, 1, h) for h in range(4)])
    assert out["value"].to_list() == [1.0, None, None, 4.0]
    assert out["observed"].to_list() == [True, False, False, True]


def test_regularize_infers_per_series_and_leaves_irregular_alone():
    hourly = frame(stamps((2024, 1, 1, 0), (2024, 1, 1, 1), (2024, 1, 1, 2), (2024, 1, 1, 4)),
                   series_id="a")
    odd = frame(stamps((2024, 1, 1, 0, 0), (2024, 1, 1, 0, 7), (2024, 1, 1, 0, 9),
                       (2024, 1, 1, 0, 30)), series_id="b")
    out = regularize(pl.concat([hourly, odd]))
    assert out.filter(pl.col("series_id") == "a").height == 5
    assert out.filter(pl.col("series_id") == "b").height == 4


def test_business_days_skip_weekends_and_holidays():
    # Friday 5th, Tuesday 9th: Monday 8th is a gap, the weekend is not
    data = frame(stamps((2024, 1, 5), (2024, 1, 9)))
    out = regularize(data, "business-day")
    assert [t.day for t in out["timestamp"]] == [5, 8, 9]
    out = regularize(data, "business-day", holidays=[dt.date(2024, 1, 8)])
    assert [t.day for t in out["timestamp"]] == [5, 9]


def test_regularize_normalises_time_zones_and_sorts():
    aware = [dt.datetime(2024, 1, 1, 3, tzinfo=dt.timezone(dt.timedelta(hours=2))),
             dt.datetime(2024, 1, 1, 0, tzinfo=UTC)]
    out = regularize(frame(aware, [2.0, 1.0]), "1h")
    assert out["timestamp"].to_list() == stamps((2024, 1, 1, 0), (2024, 1, 1, 1))
    assert out["value"].to_list() == [1.0, 2.0]


def test_resolve_duplicates_rules():
    ts = stamps((2024, 1, 1), (2024, 1, 1), (2024, 1, 2), (2024, 1, 2), (2024, 1, 3))
    data = frame(ts, [1.0, 3.0, 5.0, 5.0, None])
    last, conflicts = resolve_duplicates(data, "last")
    assert last["value"].to_list() == [3.0, 5.0, None]
    assert conflicts.height == 1 and conflicts["values"][0].to_list() == [1.0, 3.0]
    assert resolve_duplicates(data, "first")[0]["value"].to_list() == [1.0, 5.0, None]
    assert resolve_duplicates(data, "mean")[0]["value"].to_list() == [2.0, 5.0, None]
    with pytest.raises(SchemaError, match="rule 'error'"):
        resolve_duplicates(data, "error")
    with pytest.raises(SchemaError, match="`rule`"):
        resolve_duplicates(data, "median")


def test_identical_duplicates_merge_without_conflict():
    data = frame(stamps((2024, 1, 1), (2024, 1, 1)), [2.0, 2.0])
    resolved, conflicts = resolve_duplicates(data, "error")
    assert resolved.height == 1 and conflicts.is_empty()
