"""Figure builders: trace names, gap shading, forecast band, events on their channels."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from recurra.dashboards.figures import (
    event_x_range,
    gap_runs,
    recent_x_range,
    series_figure,
    set_x_range,
    severity_level,
)
from recurra.dashboards.quality_figures import quarantine_figure, share_observed_figure
from recurra.data.schema import validate_frame
from tests.conftest import make_frame
from tests.dashboards.conftest import events_frame, forecast_frame, scores_frame


def _names(figure) -> list[str]:
    return [trace.name for trace in figure.data]


def test_severity_levels_hand_computed():
    assert [severity_level(s) for s in (0.5, 1.99, 2.0, 3.99, 4.0, 30.0, None)] == [
        "low", "low", "medium", "medium", "high", "high", "low"]


def test_gap_runs_end_at_the_next_observation_and_keep_the_longest_over_the_cap():
    times = np.arange(10).astype("datetime64[h]")
    observed = np.array([1, 0, 0, 1, 0, 1, 1, 0, 1, 0], bool)
    hours = [(int(a.astype(int)), int(b.astype(int))) for a, b in gap_runs(times, observed)]
    assert hours == [(1, 3), (4, 5), (7, 8), (9, 9)]
    longest = gap_runs(times, observed, max_runs=2)
    assert [(int(a.astype(int)), int(b.astype(int))) for a, b in longest] == [(1, 3), (4, 5)]
    assert gap_runs(times, np.ones(10, bool)) == []


def test_univariate_figure_has_values_gaps_forecast_band_and_events():
    frame = make_frame(n_series=1, n_steps=200, seed=3)
    events = events_frame().filter(pl.col("series_id") == "s0")
    figure = series_figure(frame, forecast_frame("s0"), events, title="Series s0")
    names = _names(figure)
    for expected in ("value", "gap (not observed)", "forecast", "forecast interval q10-q90",
                     "anomaly: high", "anomaly: low"):
        assert expected in names
    assert figure.layout.xaxis.rangeslider.visible is True
    assert figure.layout.xaxis.title.text == "time (UTC)"
    assert figure.layout.title.text == "Series s0"
    # legend shows each kind once
    shown = [t.name for t in figure.data if t.showlegend is not False]
    assert len(shown) == len(set(shown))
    # gap rectangles start at unobserved timestamps
    missing = frame.filter(~pl.col("observed"))["timestamp"][0].replace(tzinfo=None)
    gap = next(t for t in figure.data if t.name == "gap (not observed)")
    assert np.datetime64(missing, "ms") == np.datetime64(gap.x[0], "ms")


def test_multichannel_events_are_drawn_on_the_channels_that_drove_them():
    frame = make_frame(n_series=1, n_channels=3, n_steps=200, seed=4).with_columns(
        pl.lit("m0").alias("series_id"))
    events = events_frame().filter(pl.col("series_id") == "m0")
    figure = series_figure(frame, None, events)
    by_axis: dict[str, list[str]] = {}
    for trace in figure.data:
        by_axis.setdefault(trace.yaxis or "y", []).append(trace.name)
    assert "anomaly: high" in by_axis["y2"]                      # driven by c1
    assert "anomaly: high" not in by_axis["y"] and "anomaly: high" not in by_axis["y3"]
    assert all("data quality event" in names for names in by_axis.values())  # no drivers
    titles = [a.text for a in figure.layout.annotations]
    assert titles == ["c0", "c1", "c2"]


def test_long_series_is_downsampled_to_the_limit():
    n_steps = 50_000
    start = dt.datetime(2020, 1, 1)
    frame = validate_frame(pl.DataFrame({
        "series_id": ["long"] * n_steps,
        "timestamp": pl.datetime_range(start, start + dt.timedelta(minutes=n_steps - 1),
                                       "1m", eager=True),
        "value": np.sin(np.arange(n_steps) / 50.0)}))
    figure = series_figure(frame, max_points=1_000)
    values = next(t for t in figure.data if t.name == "value")
    assert len(values.x) <= 1_000


def test_x_range_helpers():
    assert event_x_range("2024-01-02 06:00", "2024-01-02 10:00") == [
        "2024-01-02 02:00:00", "2024-01-02 14:00:00"]
    assert event_x_range(dt.datetime(2024, 1, 1, tzinfo=dt.UTC),
                         dt.datetime(2024, 1, 1, tzinfo=dt.UTC)) == [
        "2023-12-31 23:00:00", "2024-01-01 01:00:00"]
    hourly = dt.timedelta(hours=1)
    assert event_x_range("2024-01-02 06:00", "2024-01-02 10:00", hourly) == [
        "2024-01-01 18:00:00", "2024-01-02 22:00:00"]
    frame = make_frame(n_series=1, n_channels=2)
    figure = set_x_range(series_figure(frame), ["2024-01-02", "2024-01-03"])
    assert figure.layout.xaxis.range == ("2024-01-02", "2024-01-03")
    assert figure.layout.xaxis2.range == ("2024-01-02", "2024-01-03")


def test_quality_figures():
    share = pl.DataFrame({"series_id": ["a", "a", "b"],
                          "day": [dt.datetime(2024, 1, d, tzinfo=dt.UTC) for d in (1, 2, 1)],
                          "share_observed": [1.0, 0.5, 0.25]})
    heatmap = share_observed_figure(share).data[0]
    assert list(heatmap.y) == ["a", "b"]
    assert heatmap.z[1][0] == pytest.approx(0.25) and np.isnan(heatmap.z[1][1])
    bars = quarantine_figure(pl.DataFrame({"reason": ["x", "y"], "n_rows": [3, 1]})).data[0]
    assert list(bars.x) == [3, 1] and list(bars.y) == ["x", "y"]


def test_long_series_open_on_the_recent_steps_and_the_forecast():
    frame = make_frame(n_series=1, n_steps=200, seed=3)             # hourly, ends Jan 9 07:00
    forecast = forecast_frame("s0", n_steps=24, issued_hours=199)    # Jan 9 08:00 .. Jan 10 07:00
    assert recent_x_range(frame, forecast, 200) is None              # not longer: all of it
    assert recent_x_range(frame, forecast, 48) == ["2024-01-07 07:00:00", "2024-01-10 07:30:00"]
    figure = series_figure(frame, forecast, recent_steps=48)
    assert figure.layout.xaxis.range == ("2024-01-07 07:00:00", "2024-01-10 07:30:00")


def test_scores_get_their_own_subplot_with_flags_and_events():
    frame = make_frame(n_series=2, n_steps=200, seed=3).filter(pl.col("series_id") == "s1")
    events = events_frame().filter(pl.col("series_id") == "s1")
    figure = series_figure(frame, None, events, scores=scores_frame("s1"))
    by_axis: dict[str, list[str]] = {}
    for trace in figure.data:
        by_axis.setdefault(trace.yaxis or "y", []).append(trace.name)
    assert {"anomaly score", "flagged", "anomaly: medium"} <= set(by_axis["y2"])
    assert "value" in by_axis["y"] and "anomaly score" not in by_axis["y"]
    flagged = next(t for t in figure.data if t.name == "flagged")
    assert len(flagged.x) == 7 and set(flagged.y) == {3.0}
    assert [a.text for a in figure.layout.annotations] == ["value", "anomaly score"]
    assert figure.layout.xaxis2.rangeslider.visible is True        # under the last row
