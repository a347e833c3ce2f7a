"""The analyst dashboard: a Dash app over the store and the model registry (read-only).

Four views, one tab each: the series explorer (values with gaps shaded, the latest forecast
with its interval band, anomaly events by severity, a range slider, and a sortable and
filterable events table whose rows jump the chart to the event), the registered models
(champion/challenger versions, metrics, why promoted, links to the MLflow runs), the recent
pipeline runs, and data quality (share observed per series and day, quarantine by reason).

Works offline: Dash serves its JavaScript bundles itself (``serve_locally=True``) and the
stylesheet comes from ``recurra/dashboards/assets``. Each trace carries at most ``max_points``
points (5,000 by default, see ``recurra.dashboards.downsample``).

Example::

    app = create_app(store_root=".recurra/store")
    app.run(host="127.0.0.1", port=8050)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dash import Dash, dash_table, dcc, html

from recurra.dashboards.callbacks import (
    RECENT_STEPS,
    event_rows,
    register_callbacks,
    series_options,
)
from recurra.dashboards.data_access import DashboardData, open_store
from recurra.dashboards.downsample import MAX_POINTS

ASSETS = Path(__file__).resolve().parent / "assets"
TABLE_STYLE = dict(
    style_table={"overflowX": "auto"},
    style_cell={"fontFamily": "DejaVu Sans, Arial, sans-serif", "fontSize": "13px",
                "padding": "4px 8px", "textAlign": "left", "maxWidth": "360px",
                "whiteSpace": "normal"},
    style_header={"fontWeight": "bold", "backgroundColor": "#f0f0f0"},
)
LEVEL_STYLES = [  # colour plus bold text: severity never by colour alone
    {"if": {"filter_query": '{level} = "high"', "column_id": "level"},
     "backgroundColor": "#D55E00", "color": "white", "fontWeight": "bold"},
    {"if": {"filter_query": '{level} = "medium"', "column_id": "level"},
     "backgroundColor": "#E69F00", "color": "black"},
    {"if": {"filter_query": '{level} = "low"', "column_id": "level"},
     "backgroundColor": "#F0E442", "color": "black"},
]
STATUS_STYLES = [
    {"if": {"filter_query": '{status} contains "FAIL" || {status} contains "fail"',
            "column_id": "status"}, "color": "#D55E00", "fontWeight": "bold"},
    {"if": {"filter_query": '{status} contains "COMPLET" || {status} contains "complet"',
            "column_id": "status"}, "color": "#007a5a"},
]


def create_app(store_root: str | Path | None = None, tracking_uri: str | None = None, *,
               store: Any = None, registry: Any = None, mlflow_ui_url: str | None = None,
               max_points: int = MAX_POINTS) -> Dash:
    """Build the Dash app (not started: call ``app.run(...)``).

    Parameters
    ----------
    store_root : folder of the store (Delta tables; default ``recurra.data.paths.store_root()``).
    tracking_uri : MLflow tracking URI for the models view (default: MLflow's own).
    store : an already open store (instead of ``store_root``), e.g. in tests.
    registry : object with ``list_models()``/``list_versions(name)``; None imports
        ``recurra.pipelines.registry`` lazily, False hides the registry.
    mlflow_ui_url : base URL of the MLflow UI the run links point to.
    max_points : most points per trace (downsampling limit).
    """
    data = DashboardData(store if store is not None else open_store(store_root), registry,
                         tracking_uri=tracking_uri, mlflow_ui_url=mlflow_ui_url)
    app = Dash(__name__, serve_locally=True, assets_folder=str(ASSETS),
               title="Recurra dashboard", suppress_callback_exceptions=True,
               update_title=None)
    app.layout = lambda: layout(data)
    register_callbacks(app, data, max_points)
    return app


def layout(data: DashboardData) -> html.Div:
    """The page, rebuilt at each page load (so lists reflect the store as it is now)."""
    options = series_options(data)
    first = options[0]["value"] if options else None
    return html.Div(className="recurra", children=[
        html.Header(className="recurra-header", children=[
            html.H1("Recurra: analyst dashboard"),
            html.Span(f"{len(options)} series - read-only view of the store and registry",
                      className="recurra-subtitle"),
        ]),
        dcc.Tabs(id="tabs", value="explorer", className="recurra-tabs", children=[
            dcc.Tab(label="Series explorer", value="explorer",
                    children=_explorer(data, options, first)),
            dcc.Tab(label="Models", value="models", children=_models()),
            dcc.Tab(label="Pipeline runs", value="runs", children=_runs()),
            dcc.Tab(label="Data quality", value="quality", children=_quality()),
        ]),
    ])


def _explorer(data: DashboardData, options: list[dict], first: str | None) -> html.Div:
    rows = event_rows(data.events())
    columns = [{"name": "series", "id": "series_id"},
               {"name": "start (UTC)", "id": "start", "type": "datetime"},
               {"name": "end (UTC)", "id": "end", "type": "datetime"},
               {"name": "severity", "id": "severity", "type": "numeric"},
               {"name": "level", "id": "level"},
               {"name": "peak score", "id": "peak_score", "type": "numeric"},
               {"name": "driven by", "id": "channels"},
               {"name": "kind", "id": "kind"}]
    return html.Div(className="recurra-panel", children=[
        html.Div(className="recurra-controls", children=[
            html.Label(["Source", dcc.Dropdown(
                id="source-filter", options=[{"label": s, "value": s} for s in data.sources()],
                placeholder="all sources", clearable=True)], className="control-source"),
            html.Label(["Series", dcc.Dropdown(
                id="series-select", options=options, value=first, searchable=True,
                clearable=False, placeholder="type to search by series id")],
                className="control-series"),
            html.Label(["Channels", dcc.Dropdown(
                id="channel-select", multi=True, placeholder="all channels")],
                className="control-channels"),
        ]),
        dcc.Loading(dcc.Graph(id="series-graph", config={"displaylogo": False}),
                    type="dot", delay_show=300),
        dcc.Store(id="focus"),
        dcc.Store(id="shown"),
        html.P(f"Long series open on their last {RECENT_STEPS} steps and the forecast: drag "
               "the range slider (or double-click the chart) for the full history. Zooming "
               "redraws the visible window in full detail.", className="recurra-hint"),
        html.H2("Anomaly events"),
        html.P("Click a row to show that event on the chart. Filter with the boxes under the "
               "headers (e.g. severity '>= 4', start '> 2024-01-03', series 's1'). Severity is the "
               "peak score over the detection threshold: < 2 low, < 4 medium, else high.",
               className="recurra-hint"),
        dash_table.DataTable(
            id="events-table", columns=columns, data=rows, sort_action="native",
            filter_action="native", page_size=15, sort_by=[],
            style_cell_conditional=[{"if": {"column_id": c}, "minWidth": "140px"}
                                    for c in ("start", "end")],
            style_data_conditional=LEVEL_STYLES, **TABLE_STYLE),
    ])


def _models() -> html.Div:
    columns = [{"name": "model", "id": "model"}, {"name": "version", "id": "version"},
               {"name": "aliases", "id": "aliases"},
               {"name": "validation metrics", "id": "metrics"},
               {"name": "promoted at", "id": "promoted_at"},
               {"name": "why promoted", "id": "reason"},
               {"name": "MLflow run", "id": "run_link", "presentation": "markdown"}]
    return html.Div(className="recurra-panel", children=[
        html.H2("Registered models"),
        html.P(id="models-note", className="recurra-hint"),
        dash_table.DataTable(
            id="models-table", columns=columns, data=[], sort_action="native",
            filter_action="native", markdown_options={"link_target": "_blank"},
            style_data_conditional=[
                {"if": {"filter_query": '{aliases} contains "champion"'},
                 "fontWeight": "bold"}], **TABLE_STYLE),
    ])


def _runs() -> html.Div:
    names = [("run_id", "run"), ("flow", "flow"), ("started_at", "started (UTC)"),
             ("finished_at", "finished (UTC)"), ("status", "status"),
             ("rows_ingested", "rows ingested"), ("rows_quarantined", "rows quarantined"),
             ("series_trained", "series trained"), ("events_found", "events found"),
             ("message", "message")]
    return html.Div(className="recurra-panel", children=[
        html.H2("Recent pipeline runs"),
        dash_table.DataTable(id="runs-table", columns=[{"name": label, "id": key}
                                                       for key, label in names],
                             data=[], sort_action="native", filter_action="native",
                             page_size=25, style_data_conditional=STATUS_STYLES,
                             style_cell_conditional=[
                                 {"if": {"column_id": c}, "minWidth": "140px"}
                                 for c in ("started_at", "finished_at")],
                             **TABLE_STYLE),
    ])


def _quality() -> html.Div:
    return html.Div(className="recurra-panel", children=[
        html.H2("Data quality"),
        dcc.Graph(id="share-graph", config={"displaylogo": False}),
        dcc.Graph(id="quarantine-graph", config={"displaylogo": False}),
    ])
