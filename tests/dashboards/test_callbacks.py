"""The logic behind the callbacks and the read-only data access, without a browser."""

from __future__ import annotations

import re

import polars as pl
import pytest

from recurra.dashboards import callbacks
from recurra.dashboards.app import create_app
from recurra.dashboards.data_access import DashboardData, quantile_levels
from recurra.data.store import Store
from tests.dashboards.conftest import FakeRegistry


@pytest.fixture
def data(store) -> DashboardData:
    return DashboardData(store, FakeRegistry(), mlflow_ui_url="http://mlflow.local:5000/")


def test_series_list_search_and_source_filter(data):
    assert data.series_ids() == ["m0", "s0", "s1"]
    assert data.sources() == ["plant.csv", "sensors.csv"]
    assert data.series_ids(source="plant.csv") == ["m0"]
    assert data.series_ids(search="S") == ["s0", "s1"]
    assert callbacks.series_options(data, "sensors.csv") == [
        {"label": "s0", "value": "s0"}, {"label": "s1", "value": "s1"}]
    assert callbacks.source_choice(data, "sensors.csv", "s1")[1] == "s1"    # kept
    assert callbacks.source_choice(data, "sensors.csv", "m0")[1] == "s0"    # not of source
    assert callbacks.source_choice(data, "nowhere", "m0") == ([], None)


def test_latest_forecast_keeps_only_the_newest_issue(data):
    forecast = data.latest_forecast("s0")
    assert forecast["issued_at"].n_unique() == 1
    assert forecast["issued_at"][0].hour == 8          # hour 200 = Jan 9 08:00, not 180
    assert quantile_levels(forecast.columns) == [(10.0, "q10"), (90.0, "q90")]
    assert data.latest_forecast("nope").is_empty()


def test_explorer_figure_and_messages(data):
    names = [t.name for t in callbacks.explorer_figure(data, "s0").data]
    assert {"value", "forecast", "anomaly: high"} <= set(names)
    assert "Pick a series" in callbacks.explorer_figure(data, None).layout.annotations[0].text
    assert "No rows" in callbacks.explorer_figure(data, "ghost").layout.annotations[0].text
    focused = callbacks.explorer_figure(data, "m0", ["2024-01-05", "2024-01-06"])
    assert focused.layout.xaxis3.range == ("2024-01-05", "2024-01-06")


def test_event_rows_and_click_focus_survive_sorting(data):
    rows = callbacks.event_rows(data.events())
    assert [r["start"] for r in rows][:2] == ["2024-01-07 06:00", "2024-01-06 00:00"]
    assert {r["level"] for r in rows} == {"low", "medium", "high", "data quality"}
    m0 = next(r for r in rows if r["series_id"] == "m0" and r["kind"] == "anomaly")
    assert m0["channels"] == "c1"
    # the table was re-sorted in the browser: row index 0 no longer means rows[0]
    focus = callbacks.focus_from_cell({"row": 0, "column": 1, "row_id": m0["id"]}, rows)
    assert focus["series_id"] == "m0" and focus["channels"] == ["c1"]
    # 10-hour event on an hourly series: padded by max(10 h, 12 steps) each side
    assert callbacks.focus_range(data, focus) == ["2024-01-04 16:00:00",
                                                  "2024-01-06 02:00:00"]
    assert callbacks.focus_from_cell(None, rows) is None
    assert callbacks.focus_from_cell({"row": 99, "row_id": "gone"}, rows) is None


def test_range_patch_sets_every_axis():
    patch = callbacks.range_patch(["a", "b"], 3).to_plotly_json()
    targets = {tuple(op["location"]) for op in patch["operations"]}
    assert ("layout", "xaxis3", "range") in targets and ("layout", "xaxis", "range") in targets


def test_models_view_links_runs_and_marks_champion(data):
    rows, note = callbacks.model_rows(data)
    assert note == ""
    champion = next(r for r in rows if r["aliases"] == "champion")
    assert champion["version"] == "2" and champion["model"] == "recurra-ett-forecast"
    assert champion["metrics"] == "mse=0.41 (gate), val_mae=0.5"
    assert champion["reason"].startswith("promoted: mse 0.41 beats champion v1")
    assert champion["promoted_at"] == "2024-01-09 10:00 UTC"
    challenger = next(r for r in rows if r["aliases"] == "challenger")
    assert challenger["reason"].startswith("kept champion: first version")
    assert champion["run_link"] == (
        "[abcdef12](http://mlflow.local:5000/#/experiments/7/runs/abcdef1234567890)")


def test_models_view_tolerates_a_broken_or_absent_registry(store):
    class Broken:
        def list_models(self):
            raise ConnectionError("tracking server down")

    frame, note = DashboardData(store, Broken()).models()
    assert frame.is_empty() and "tracking server down" in note
    frame, note = DashboardData(store, registry=False).models()
    assert frame.is_empty() and "not available" in note


def test_runs_newest_first_and_quality(data):
    assert [r["run_id"] for r in callbacks.run_rows(data)] == ["r2", "r1"]
    assert callbacks.run_rows(data)[1]["finished_at"] == "2024-01-09 08:06"
    reasons = data.quarantine_by_reason()
    assert reasons.row(0) == ("unparseable timestamp", 2)
    share = data.share_observed_by_day()
    assert share.filter(pl.col("share_observed") > 1).is_empty()
    assert set(share["series_id"]) == {"m0", "s0", "s1"}
    share_figure, reason_figure = callbacks.quality_figures(data)
    assert share_figure.data[0].type == "heatmap" and reason_figure.data[0].type == "bar"


def test_empty_store_reads_as_empty_views(tmp_path):
    data = DashboardData(Store(tmp_path / "empty"), registry=False)
    assert data.series_ids() == [] and data.events().is_empty() and data.runs().is_empty()
    assert callbacks.event_rows(data.events()) == []
    share_figure, reason_figure = callbacks.quality_figures(data)
    assert "No series" in share_figure.layout.annotations[0].text
    assert "No quarantined" in reason_figure.layout.annotations[0].text


def test_app_serves_its_own_bundles_and_lays_out_every_view(store):
    app = create_app(store=store, registry=FakeRegistry())
    client = app.server.test_client()
    page = client.get("/").get_data(as_text=True)
    assert not re.search(r"<script[^>]+src=[\"']https?://", page), "no CDN scripts"
    assert app.config.serve_locally is True
    layout = client.get("/_dash-layout").get_data(as_text=True)
    for component_id in ("series-select", "source-filter", "series-graph", "events-table",
                         "models-table", "runs-table", "share-graph", "quarantine-graph"):
        assert f'"{component_id}"' in layout
    assert '"value":"m0"' in layout.replace(" ", "")      # first series preselected


def test_create_app_from_a_store_folder(tmp_path, store):
    app = create_app(store.root, registry=False)
    assert "series-select" in app.server.test_client().get("/_dash-layout").get_data(
        as_text=True)


def test_relayout_parsing():
    assert callbacks.relayout_x_range(None) is None
    assert callbacks.relayout_x_range({"yaxis.range[0]": 1, "yaxis.range[1]": 2}) is None
    assert callbacks.relayout_x_range({"xaxis.range[0]": "2024-01-01 00:00",
                                       "xaxis.range[1]": "2024-01-02"}) == [
        "2024-01-01 00:00", "2024-01-02"]
    assert callbacks.relayout_x_range({"xaxis3.range": ["a", "b"]}) == ["a", "b"]
    assert callbacks.relayout_x_range({"xaxis.autorange": True}) == "auto"


def test_zooming_a_long_series_redraws_the_window_in_full_detail(tmp_path):
    import datetime as dt

    import numpy as np

    store = Store(tmp_path / "long")
    n_steps = 30_000
    start = dt.datetime(2024, 1, 1)
    store.upsert(pl.DataFrame({
        "series_id": ["long"] * n_steps,
        "timestamp": pl.datetime_range(start, start + dt.timedelta(minutes=n_steps - 1), "1m",
                                       eager=True),
        "value": np.sin(np.arange(n_steps) / 30.0)}), source="gen")
    data = DashboardData(store, registry=False)
    figure = callbacks.explorer_figure(data, "long", max_points=1_000)
    shown = callbacks.shown_state(figure, "long")
    assert shown["n_points"] == n_steps and shown["value_traces"] == {"value": 0}
    assert len(figure.data[0].x) <= 1_000
    window = ["2024-01-02 00:00:00", "2024-01-02 06:00:00"]          # 361 minutes
    patch = callbacks.detail_patch(data, shown, window, 1_000).to_plotly_json()
    x_values = next(op["params"]["value"] for op in patch["operations"]
                    if op["location"] == ["data", 0, "x"])
    low, high = (np.datetime64(w.replace(" ", "T")) for w in window)
    inside = [x for x in x_values if low <= np.datetime64(x) <= high]
    assert len(inside) == 361 and len(x_values) <= 1_000           # every minute inside
    y_range = next(op["params"]["value"] for op in patch["operations"]
                   if op["location"] == ["layout", "yaxis", "range"])
    assert -1.3 < y_range[0] < -0.9 and 0.9 < y_range[1] < 1.3    # fitted to the window
    # short series need no patch unless the range moves
    short = {"series_id": "s0", "n_axes": 1, "value_traces": {"value": 1}, "n_points": 200}
    assert callbacks.detail_patch(data, short, window, 1_000) is None
    assert callbacks.detail_patch(data, short, window, 1_000, set_range=True) is not None


def test_channel_picker_defaults_to_all_or_to_the_drivers_first(data):
    options, chosen = callbacks.channel_choice(data, "m0")
    assert [o["value"] for o in options] == ["c0", "c1", "c2"] and chosen == ["c0", "c1", "c2"]
    _, chosen = callbacks.channel_choice(data, "m0", max_default=1)
    assert chosen == ["c1"]                                     # drove the m0 event
    assert callbacks.channel_choice(data, None) == ([], [])
    figure = callbacks.explorer_figure(data, "m0", channels=["c2"])
    assert "c2" in [t.name for t in figure.data] and "c0" not in [t.name for t in figure.data]


def test_share_observed_period_grows_with_the_span(tmp_path):
    import datetime as dt

    store = Store(tmp_path / "span")
    start = dt.datetime(2010, 1, 1)
    days = pl.datetime_range(start, start + dt.timedelta(days=1000), "1d", eager=True)
    store.upsert(pl.DataFrame({"series_id": "long", "timestamp": days,
                               "value": [None if i % 2 else 1.0 for i in range(len(days))]}),
                 source="gen")
    share = DashboardData(store, registry=False).share_observed_by_day()
    assert share["period"][0] == "1w" and share.height <= 145
    assert share["share_observed"].mean() == pytest.approx(0.5, abs=0.05)
    from recurra.dashboards.quality_figures import share_observed_figure

    assert share_observed_figure(share).layout.title.text == "Share observed per week"


def test_the_dashboard_only_reads(store):
    import hashlib

    def snapshot():
        return {p: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in sorted(store.root.rglob("*")) if p.is_file()}

    before = snapshot()
    data = DashboardData(store, FakeRegistry())
    for series_id in data.series_ids():
        callbacks.explorer_figure(data, series_id)
    callbacks.model_rows(data), callbacks.run_rows(data), callbacks.quality_figures(data)
    create_app(store=store, registry=FakeRegistry()).server.test_client().get("/_dash-layout")
    assert snapshot() == before


def test_latest_forecast_per_channel_and_quality_caps_series(store):
    import datetime as dt

    from tests.dashboards.conftest import forecast_frame

    later = forecast_frame("m0", "c0", issued_hours=210)           # only c0 re-forecast
    store.write_table("forecasts", later, key=["series_id", "channel", "issued_at", "timestamp"])
    data = DashboardData(store, registry=False)
    latest = data.latest_forecast("m0")
    issued = dict(latest.group_by("channel").agg(pl.col("issued_at").first()).iter_rows())
    assert issued["c0"].day == 9 and issued["c0"].hour == 18          # hour 210
    assert issued["c1"] == issued["c2"] == dt.datetime(2024, 1, 9, 8, tzinfo=dt.UTC)
    share = data.share_observed_by_day(max_series=1)
    worst = data.catalogue().group_by("series_id").agg(pl.col("share_observed").mean()).sort(
        "share_observed")["series_id"][0]
    assert share["series_id"].unique().to_list() == [worst]


def test_draw_explorer_patches_the_shown_series_and_redraws_another(data):
    figure, state = callbacks.draw_explorer(data, "s0", ["value"], None, None)
    assert state["series_id"] == "s0" and figure.layout.xaxis.range is None   # 200 steps
    rows = callbacks.event_rows(data.events())
    s0_event = next(r for r in rows if r["series_id"] == "s0" and r["level"] == "high")
    focus = callbacks.focus_from_cell({"row_id": s0_event["id"]}, rows)
    patch, unchanged = callbacks.draw_explorer(data, "s0", ["value"], focus, state)
    assert unchanged is None
    ops = {tuple(op["location"]): op["params"]["value"]
           for op in patch.to_plotly_json()["operations"]}
    assert ops[("layout", "xaxis", "range")] == ["2024-01-01 18:00:00", "2024-01-02 22:00:00"]
    # an event of m0 driven by c1 while only c0 is picked: redrawn with c1 and the range
    m0_event = next(r for r in rows if r["series_id"] == "m0" and r["kind"] == "anomaly")
    focus = callbacks.focus_from_cell({"row_id": m0_event["id"]}, rows)
    figure, state = callbacks.draw_explorer(data, "m0", ["c0"], focus, state)
    assert set(state["value_traces"]) == {"c0", "c1"}
    assert figure.layout.xaxis.range == ("2024-01-04 16:00:00", "2024-01-06 02:00:00")


def test_zoom_reads_only_the_window_plus_margin_and_keeps_the_overview(tmp_path):
    import datetime as dt

    import numpy as np

    store = Store(tmp_path / "zoom")
    n_steps = 20_000
    start = dt.datetime(2024, 1, 1)
    store.upsert(pl.DataFrame({
        "series_id": ["long"] * n_steps,
        "timestamp": pl.datetime_range(start, start + dt.timedelta(minutes=n_steps - 1), "1m",
                                       eager=True),
        "value": np.cos(np.arange(n_steps) / 50.0)}), source="gen")
    data = DashboardData(store, registry=False)
    shown = callbacks.shown_state(callbacks.explorer_figure(data, "long", max_points=800),
                                  "long")
    reads = []
    original = data.series

    def counting(series_id, **window):
        reads.append(window)
        return original(series_id, **window)

    data.series = counting
    window = ["2024-01-05 00:00:00", "2024-01-05 04:00:00"]           # 241 minutes
    for _ in range(2):  # the first zoom also builds the overview (one whole read), not the second
        reads.clear()
        updates = callbacks.detail_updates(data, shown, window, 800)
    assert reads == [{"start": dt.datetime(2024, 1, 4, 23), "end": dt.datetime(2024, 1, 5, 5)}]
    x = np.array(updates[0]["x"], dtype="datetime64[ms]")
    low, high = (np.datetime64(w.replace(" ", "T")) for w in window)
    assert ((x >= low) & (x <= high)).sum() == 241 and len(x) <= 800   # every minute inside
    assert (x < low - np.timedelta64(1, "h")).sum() > 10                # overview before ...
    assert (x > high + np.timedelta64(1, "h")).sum() > 10               # ... and after
    assert np.all(np.diff(x) > np.timedelta64(0, "ms"))                 # sorted, no repeats
