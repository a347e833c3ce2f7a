"""The logic behind the dashboard's callbacks, as pure functions, and their wiring.

Every callback is a thin wrapper (in :func:`register_callbacks`) around a function here that
takes a :class:`~recurra.dashboards.data_access.DashboardData` and plain values and returns plain
values or figures, so the behaviour is unit-tested without a browser. Nothing here writes
to the store or trains.

Size: ~460 lines: one small pure function per callback plus their wiring in
:func:`register_callbacks`, which must see every component id in one place.
"""

from __future__ import annotations

import datetime as dt
import weakref
from typing import Any

import numpy as np
import plotly.graph_objects as go
import polars as pl
from dash import Dash, Input, Output, Patch, State, ctx, no_update

from recurra.dashboards.data_access import DashboardData
from recurra.dashboards.downsample import MAX_POINTS
from recurra.dashboards.figures import (
    FONT,
    event_x_range,
    median_step,
    rect_xy,
    series_figure,
    severity_level,
    value_points,
    window_gap_runs,
)
from recurra.dashboards.quality_figures import quarantine_figure, share_observed_figure
from recurra.data.schema import (
    CHANNEL,
    CHANNELS,
    END,
    KIND,
    PEAK_SCORE,
    SERIES_ID,
    SEVERITY,
    START,
    TIMESTAMP,
)

TIME_FORMAT = "%Y-%m-%d %H:%M"
RECENT_STEPS = 720  # the explorer and the reports open on the last 720 steps + forecast
MAX_DEFAULT_CHANNELS = 6
ZOOM_MARGIN = 0.25  # share of a zoom window's width also read on each side (small pans)
MAX_OVERVIEWS = 32  # whole-channel overviews kept per DashboardData (see _overview)
_OVERVIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def series_options(data: DashboardData, source: str | None = None) -> list[dict[str, str]]:
    """Dropdown options ``{"label", "value"}`` of the series (of one source when given)."""
    return [{"label": s, "value": s} for s in data.series_ids(source=source)]


def source_choice(data: DashboardData, source: str | None, current: str | None
                  ) -> tuple[list[dict[str, str]], str | None]:
    """Series options of ``source`` and the series to show: the current one when it is of
    that source, else the first of the source."""
    options = series_options(data, source)
    values = [o["value"] for o in options]
    return options, current if current in values else (values[0] if values else None)


def empty_figure(message: str) -> go.Figure:
    """A blank figure carrying a centred message (no series, no data...)."""
    figure = go.Figure()
    figure.update_layout(template="plotly_white", font=FONT, height=320,
                         xaxis=dict(visible=False), yaxis=dict(visible=False),
                         annotations=[dict(text=message, showarrow=False, x=0.5, y=0.5,
                                           xref="paper", yref="paper", font=dict(size=16))])
    return figure


def explorer_figure(data: DashboardData, series_id: str | None,
                    x_range: list[str] | None = None, max_points: int = MAX_POINTS,
                    channels: list[str] | None = None) -> go.Figure:
    """The series explorer chart of ``series_id`` (values, gaps, forecast, events), of
    the given ``channels`` (default: all)."""
    if not series_id:
        return empty_figure("Pick a series above (type to search by id)")
    frame = data.series(series_id)
    if frame.is_empty():
        return empty_figure(f"No rows for series {series_id!r} in the store")
    figure = series_figure(frame, data.latest_forecast(series_id), data.events(series_id),
                           title=f"Series {series_id}", max_points=max_points,
                           x_range=x_range, channels=channels, recent_steps=RECENT_STEPS,
                           scores=data.scores(series_id))
    figure.update_layout(uirevision=series_id)
    return figure


def event_rows(events: pl.DataFrame) -> list[dict[str, Any]]:
    """Table rows of the events: times as ``YYYY-MM-DD HH:MM`` (UTC), a unique ``id``."""
    rows = []
    for index, event in enumerate(events.to_dicts()):
        severity = event.get(SEVERITY)
        rows.append({
            "id": f"event-{index}",
            "series_id": event[SERIES_ID],
            "start": f"{event[START]:{TIME_FORMAT}}",
            "end": f"{event[END]:{TIME_FORMAT}}",
            "severity": None if severity is None else round(float(severity), 3),
            "level": ("data quality" if event.get(KIND) == "data_quality"
                      else severity_level(severity)),
            "peak_score": (None if event.get(PEAK_SCORE) is None
                           else round(float(event[PEAK_SCORE]), 3)),
            "channels": ", ".join(event.get(CHANNELS) or []) or "all",
            "kind": event.get(KIND) or "anomaly",
        })
    return rows


def focus_from_cell(active_cell: dict | None, rows: list[dict] | None) -> dict | None:
    """What a click on an events-table cell asks for: ``{"series_id", "start", "end",
    "channels", "event_id"}`` (times as the table shows them, UTC).

    The row is found by its ``row_id`` (stable under sorting, filtering and paging).
    Returns None when the click does not point at a known row.
    """
    if not active_cell or not rows:
        return None
    row_id = active_cell.get("row_id")
    row = next((r for r in rows if r.get("id") == row_id), None)
    if row is None:
        index = active_cell.get("row")
        row = rows[index] if isinstance(index, int) and 0 <= index < len(rows) else None
    if row is None:
        return None
    drivers = [] if row.get("channels") in (None, "all") else row["channels"].split(", ")
    return {"series_id": row["series_id"], "start": row["start"], "end": row["end"],
            "channels": drivers, "event_id": row.get("id")}


def focus_range(data: DashboardData, focus: dict) -> list[str]:
    """The x-range showing a focused event with context (>= 12 sampling steps each side)."""
    step = median_step(data.series(focus["series_id"]))
    return event_x_range(focus["start"], focus["end"], step)


def channel_choice(data: DashboardData, series_id: str | None,
                   max_default: int = MAX_DEFAULT_CHANNELS) -> tuple[list[dict], list[str]]:
    """Options of the channel picker and the channels shown first: all of them when there
    are at most ``max_default``, else the channels that drove events, then the others in
    order, up to ``max_default``."""
    if not series_id:
        return [], []
    catalogue = data.catalogue()
    channels = sorted(catalogue.filter(pl.col(SERIES_ID) == series_id)[CHANNEL].to_list())
    options = [{"label": c, "value": c} for c in channels]
    if len(channels) <= max_default:
        return options, channels
    drivers = [c for event_channels in data.events(series_id)[CHANNELS].to_list()
               for c in (event_channels or []) if c in channels]
    chosen = list(dict.fromkeys([*drivers, *channels]))[:max_default]
    return options, sorted(chosen)


def range_patch(x_range: list[str], n_axes: int) -> Patch:
    """A partial figure update setting the x-range of axes ``xaxis``..``xaxis<n>``."""
    patch = Patch()
    for index in range(1, n_axes + 1):
        name = "xaxis" if index == 1 else f"xaxis{index}"
        patch["layout"][name]["range"] = x_range
        patch["layout"][name]["autorange"] = False
    return patch


def relayout_x_range(relayout: dict | None) -> list[str] | str | None:
    """The x-range a plotly ``relayoutData`` asks for: ``[start, end]``, ``"auto"`` for a
    reset (double click, autoscale), None when the x-axes did not change."""
    if not relayout:
        return None
    for key, value in relayout.items():
        axis, _, prop = key.partition(".")
        if not axis.startswith("xaxis"):
            continue
        if prop == "autorange" and value:
            return "auto"
        if prop == "range" and isinstance(value, list | tuple) and len(value) == 2:
            return [str(value[0]), str(value[1])]
        if prop == "range[0]" and f"{axis}.range[1]" in relayout:
            return [str(value), str(relayout[f"{axis}.range[1]"])]
    return None


def shown_state(figure: go.Figure, series_id: str | None) -> dict[str, Any]:
    """What the browser shows: series, number of x-axes, value traces (index per channel)
    and the longest channel (``n_points``), read from the traces' ``meta``."""
    traces: dict[str, int] = {}
    axes: dict[str, str] = {}
    gaps = {}
    n_points = 0
    for index, trace in enumerate(figure.data):
        meta = trace.meta if isinstance(trace.meta, dict) else {}
        if meta.get("role") == "values":
            traces[meta["channel"]] = index
            axes[meta["channel"]] = "yaxis" + (trace.yaxis or "y")[1:]
            n_points = max(n_points, int(meta.get("n_points", 0)))
        elif meta.get("role") == "gaps":
            gaps[meta["channel"]] = [index, *meta["y"]]
    return {"series_id": series_id, "n_axes": len(list(figure.select_xaxes())),
            "value_traces": traces, "value_axes": axes, "gap_traces": gaps,
            "n_points": n_points}


def detail_updates(data: DashboardData, shown: dict, x_range: list[str] | None,
                   max_points: int = MAX_POINTS) -> dict[int, dict[str, list]]:
    """New ``x``/``y`` (and gap ``hovertext``) per trace index for the visible window.

    The value traces get full detail inside ``x_range``: three quarters of ``max_points``
    for the window plus :data:`ZOOM_MARGIN` of its width on each side, the only rows read
    (``data.series(start=, end=)``), the rest for an overview of the whole series outside
    (computed once per drawn series, :func:`_overview`), so the range slider still shows
    everything.  The gap shading gets the longest gaps of the window.  ``x_range`` None
    means the whole series.
    """
    bounds = _read_bounds(x_range) if x_range else None
    frame = (data.series(shown["series_id"]) if bounds is None else
             data.series(shown["series_id"], start=bounds[0].astype(dt.datetime),
                         end=bounds[1].astype(dt.datetime)))
    updates: dict[int, dict[str, list]] = {}
    for channel, index in shown["value_traces"].items():
        part = frame.filter(pl.col(CHANNEL) == channel).sort(TIMESTAMP)
        if bounds is None:
            times, values = value_points(part, max_points)
        else:
            times, values = _zoomed_points(data, shown, channel, part, bounds, max_points)
        updates[index] = {"x": [str(t) for t in times],
                          "y": [None if v != v else float(v) for v in values]}
        if channel in shown.get("gap_traces", {}):
            gap_index, y_low, y_high = shown["gap_traces"][channel]
            xs, ys = rect_xy(window_gap_runs(part, x_range), y_low, y_high)
            updates[gap_index] = {
                "x": [None if x is None else str(x) for x in xs], "y": ys,
                "hovertext": [None if x is None else "gap (not observed)" for x in xs]}
    return updates


def _read_bounds(x_range: list[str]) -> tuple[np.datetime64, np.datetime64]:
    """The rows to read for a zoom window: the window plus ZOOM_MARGIN of its width each
    side (naive UTC ``datetime64[ms]``)."""
    low, high = (np.datetime64(_iso(bound), "ms") for bound in x_range)
    margin = (high - low) * ZOOM_MARGIN
    return low - margin, high + margin


def _zoomed_points(data: DashboardData, shown: dict, channel: str, part: pl.DataFrame,
                   bounds: tuple[np.datetime64, np.datetime64], max_points: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """(K,) times and values of one channel: ``part`` (the rows inside ``bounds``) in
    detail, the cached whole-series overview outside ``bounds``; K <= ``max_points``."""
    budget_out = max(7, max_points // 4)
    near_times, near_values = value_points(part, max(7, max_points - budget_out))
    far_times, far_values = _overview(data, shown, channel, budget_out, max_points)
    outside = (far_times < bounds[0]) | (far_times > bounds[1])
    times = np.concatenate([far_times[outside], near_times])
    values = np.concatenate([far_values[outside], near_values])
    order = np.argsort(times, kind="stable")
    return times[order], values[order]


def _overview(data: DashboardData, shown: dict, channel: str, budget: int, max_points: int
              ) -> tuple[np.ndarray, np.ndarray]:
    """A ``budget``-point downsample of one whole channel (every point when it has at most
    ``max_points``), read once per drawn series (keyed by its ``n_points``) and kept."""
    cache = _OVERVIEWS.setdefault(data, {})
    key = (shown["series_id"], channel, shown.get("n_points", 0), budget, max_points)
    if key not in cache:
        frame = data.series(shown["series_id"])
        part = frame.filter(pl.col(CHANNEL) == channel).sort(TIMESTAMP)
        cache[key] = value_points(part, budget if part.height > max_points else max_points)
        while len(cache) > MAX_OVERVIEWS:
            cache.pop(next(iter(cache)))
    return cache[key]


def detail_patch(data: DashboardData, shown: dict | None, x_range: list[str] | None,
                 max_points: int = MAX_POINTS, *, set_range: bool = False) -> Patch | None:
    """A partial figure update re-downsampling a long series for the visible window.

    Only series longer than ``max_points`` need new points; returns None when nothing
    changes. With ``set_range`` the x-axes are also moved to ``x_range``.
    """
    if not shown or not shown.get("series_id"):
        return None
    long_series = shown.get("n_points", 0) > max_points
    if not long_series and not set_range:
        return None
    patch = range_patch(x_range, shown["n_axes"]) if set_range and x_range else Patch()
    if long_series:
        updates = detail_updates(data, shown, x_range, max_points)
        for index, update in updates.items():
            for key, value in update.items():
                patch["data"][index][key] = value
        for axis, y_range in window_y_ranges(shown, updates, x_range).items():
            if y_range is None:  # reset: let plotly fit the y-axis
                patch["layout"][axis]["autorange"] = True
            else:
                patch["layout"][axis]["range"] = y_range
                patch["layout"][axis]["autorange"] = False
    return patch


def window_y_ranges(shown: dict, updates: dict[int, dict[str, list]],
                    x_range: list[str] | None) -> dict[str, list[float] | None]:
    """Per y-axis, the range fitting the values drawn inside ``x_range`` (not the whole
    series); None (autorange) without a window."""
    low, high = ((np.datetime64(_iso(bound)) for bound in x_range) if x_range
                 else (None, None))
    ranges = {}
    for channel, axis in shown.get("value_axes", {}).items():
        update = updates[shown["value_traces"][channel]]
        if low is None:
            ranges[axis] = None
            continue
        inside = [y for x, y in zip(update["x"], update["y"], strict=True)
                  if low <= np.datetime64(_iso(x)) <= high]
        ranges[axis] = _padded_range(inside)
    return ranges


def _iso(text: str) -> str:
    return str(text).strip().replace(" ", "T").removesuffix("Z")[:23]


def _padded_range(values: list[float | None]) -> list[float] | None:
    finite = [v for v in values if v is not None]
    if not finite:
        return None
    low, high = min(finite), max(finite)
    pad = 0.08 * (high - low or abs(high) or 1.0)
    return [low - pad, high + pad]


def model_rows(data: DashboardData) -> tuple[list[dict[str, str]], str]:
    """Rows of the models table (run links as Markdown) and a note for the page."""
    models, note = data.models()
    rows = []
    for record in models.to_dicts():
        link = record.get("run_url")
        record["run_link"] = f"[{record['run_id'][:8]}]({link})" if link else ""
        rows.append(record)
    return rows, note


def run_rows(data: DashboardData, limit: int = 100) -> list[dict[str, Any]]:
    """Rows of the pipeline runs table, newest first, times as text."""
    runs = data.runs(limit)
    return [{k: (f"{v:{TIME_FORMAT}}" if hasattr(v, "strftime") else v) for k, v in r.items()}
            for r in runs.to_dicts()]


def quality_figures(data: DashboardData) -> tuple[go.Figure, go.Figure]:
    """The data-quality view: share observed per series and day; quarantine by reason."""
    share = data.share_observed_by_day()
    by_reason = data.quarantine_by_reason()
    share_figure = (share_observed_figure(share) if share.height
                    else empty_figure("No series in the store yet"))
    reason_figure = (quarantine_figure(by_reason) if by_reason.height
                     else empty_figure("No quarantined rows"))
    return share_figure, reason_figure


def draw_explorer(data: DashboardData, series_id: str | None, channels: list[str] | None,
                  focus: dict | None, shown: dict | None, max_points: int = MAX_POINTS
                  ) -> tuple[go.Figure | Patch, dict | None]:
    """What the explorer chart becomes: a new figure and its state, or, for a click on an
    event of the series already shown, a Patch moving the x-range (state None: unchanged).

    ``focus`` is the clicked event (None unless the click triggered this redraw); its
    driving channels are drawn even when not picked.
    """
    wanted = focus if focus and focus.get("series_id") == series_id else None
    x_range = focus_range(data, wanted) if wanted else None
    drivers = wanted.get("channels", []) if wanted else []
    if (wanted and shown and shown.get("series_id") == series_id
            and set(drivers) <= set(shown.get("value_traces", {}))):
        return detail_patch(data, shown, x_range, max_points, set_range=True), None
    chosen = list(dict.fromkeys([*(channels or []), *drivers])) or None
    figure = explorer_figure(data, series_id, x_range, max_points, chosen)
    state = shown_state(figure, series_id)
    x_range = x_range or _figure_range(figure)
    if x_range and state["n_points"] > max_points:  # a window of a long series
        updates = detail_updates(data, state, x_range, max_points)
        for index, update in updates.items():
            figure.data[index].update(**update)
        for axis, y_range in window_y_ranges(state, updates, x_range).items():
            if y_range is not None:
                figure.layout[axis].update(range=y_range, autorange=False)
    return figure, state


def _figure_range(figure: go.Figure) -> list[str] | None:
    axis = figure.layout.xaxis
    return list(axis.range) if axis is not None and axis.range is not None else None


def register_callbacks(app: Dash, data: DashboardData, max_points: int = MAX_POINTS) -> None:
    """Wire the pure functions above to the components of :func:`recurra.dashboards.app.layout`."""

    @app.callback(Output("series-select", "options"),
                  Output("series-select", "value", allow_duplicate=True),
                  Input("source-filter", "value"), State("series-select", "value"),
                  prevent_initial_call=True)
    def _filter_series(source, current):
        return source_choice(data, source, current)

    @app.callback(Output("series-select", "value"), Output("focus", "data"),
                  Input("events-table", "active_cell"), State("events-table", "data"),
                  prevent_initial_call=True)
    def _jump_to_event(active_cell, rows):
        focus = focus_from_cell(active_cell, rows)
        if focus is None:
            return no_update, no_update
        return focus["series_id"], focus

    @app.callback(Output("channel-select", "options"), Output("channel-select", "value"),
                  Input("series-select", "value"))
    def _channels(series_id):
        return channel_choice(data, series_id)

    @app.callback(Output("series-graph", "figure"), Output("shown", "data"),
                  Input("series-select", "value"), Input("channel-select", "value"),
                  Input("focus", "data"), State("shown", "data"))
    def _draw(series_id, channels, focus, shown):
        focused = "focus.data" in ctx.triggered_prop_ids
        figure, state = draw_explorer(data, series_id, channels, focus if focused else None,
                                      shown, max_points)
        return figure, no_update if state is None else state

    @app.callback(Output("series-graph", "figure", allow_duplicate=True),
                  Input("series-graph", "relayoutData"), State("shown", "data"),
                  prevent_initial_call=True)
    def _zoom(relayout, shown):
        x_range = relayout_x_range(relayout)
        if x_range is None:
            return no_update
        patch = detail_patch(data, shown, None if x_range == "auto" else x_range, max_points)
        return no_update if patch is None else patch

    @app.callback(Output("models-table", "data"), Output("models-note", "children"),
                  Input("tabs", "value"))
    def _models(tab):
        if tab != "models":
            return no_update, no_update
        return model_rows(data)

    @app.callback(Output("runs-table", "data"), Input("tabs", "value"))
    def _runs(tab):
        return run_rows(data) if tab == "runs" else no_update

    @app.callback(Output("share-graph", "figure"), Output("quarantine-graph", "figure"),
                  Input("tabs", "value"))
    def _quality(tab):
        return quality_figures(data) if tab == "quality" else (no_update, no_update)
