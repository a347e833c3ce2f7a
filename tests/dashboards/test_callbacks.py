"""The logic behind the callbacks and the read-only data access, without a browser."""

from __future__ import annotations

import re

import polars as pl
import pytest

from data.store import Store
from dashboards import callbacks
from dashboards.app import create_app
from dashboards.data_access import DashboardData, quantile_levels
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
    assert focus["series_id"] == "m0"
    assert focus["x_range"] == ["2024-01-04 18:00:00", "2024-01-06 00:00:00"]
    assert callbacks.focus_from_cell(None, rows) is None
    assert callbacks.focus_from_cell({"row": 99, "row_id": "gone"}, rows) is None


def test_range_patch_sets_every_axis():
    patch = callbacks.range_patch(["a", "b"], 3).to_plotly_json()
    targets = {tuple(op["location"]) for op in patch["operations"]}
    assert ("layout", "xaxis3", "range") in targets and ("layout", "xaxis", "range") in targets


def test_models_view_links_runs_and_marks_champion(data):
    rows, note = callbacks.model_rows(data)
    assert note == ""
    champion = next(r for r in rows if "champion" in r["aliases"])
    assert champion["version"] == "2" and champion["metrics"] == "val_mae=0.41"
    assert champion["reason"].startswith("val_mae 0.41")
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
