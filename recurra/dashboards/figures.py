"""Pure figure builders: frames in, ``plotly.graph_objects.Figure`` out (no I/O, no Dash).

The dashboard callbacks and the HTML reports draw with the same functions, so a report
shows exactly what the analyst saw. Colours are the Okabe-Ito palette (distinguishable
with the common colour-vision deficiencies); anomaly severity is also written in the trace
name and hover text, never carried by colour alone.

Trace names (tests and users rely on them):
``<channel>`` observed values, ``gap (not observed)``, ``forecast``,
``forecast interval q<lo>-q<hi>``, ``anomaly: <level>`` (low/medium/high),
``data quality event``.

Size: ~480 lines: every figure the dashboard and the reports draw, with the one shared
style (palette, trace names, axes), so both stay identical.
"""

from __future__ import annotations

import datetime as dt
import html
from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from recurra.dashboards.data_access import quantile_levels
from recurra.dashboards.downsample import MAX_POINTS, downsample_indices
from recurra.data.schema import (
    CHANNEL,
    CHANNELS,
    END,
    IS_ANOMALY,
    KIND,
    PEAK_SCORE,
    SCORE,
    SEVERITY,
    START,
    TIMESTAMP,
    VALUE,
    Y_HAT,
)

OKABE_ITO = {
    "black": "#000000", "orange": "#E69F00", "sky_blue": "#56B4E9", "green": "#009E73",
    "yellow": "#F0E442", "blue": "#0072B2", "vermillion": "#D55E00", "purple": "#CC79A7",
}
CHANNEL_COLOURS = ("#0072B2", "#CC79A7", "#009E73", "#56B4E9", "#000000", "#E69F00")
FORECAST_COLOUR = "#D55E00"
GAP_COLOUR = "rgba(120, 120, 120, 0.22)"
# severity = peak score / threshold in force (recurra.anomaly.events): > 1 for every alarm
SEVERITY_LEVELS = (("low", 0.0, "rgba(240, 228, 66, 0.60)"),      # yellow, < 2x threshold
                   ("medium", 2.0, "rgba(230, 159, 0, 0.45)"),     # orange, < 4x
                   ("high", 4.0, "rgba(213, 94, 0, 0.40)"))        # vermillion, >= 4x
DATA_QUALITY_COLOUR = "rgba(86, 180, 233, 0.30)"                   # sky blue
MAX_GAP_RECTS = 400
FONT = dict(family="DejaVu Sans, Arial, sans-serif", size=13, color="#222222")


def severity_level(severity: float | None, levels: Sequence = SEVERITY_LEVELS) -> str:
    """Name of the severity bucket: the last level whose lower bound ``severity`` reaches.

    Severity is the event's peak score over the detection threshold (``recurra.anomaly.events``;
    > 1 for an alarm): < 2 low, < 4 medium, else high.

    >>> [severity_level(s) for s in (1.1, 2.0, 9.5, None)]
    ['low', 'medium', 'high', 'low']
    """
    name = levels[0][0]
    for level, lower, _ in levels:
        if severity is not None and severity >= lower:
            name = level
    return name


def naive_utc(values: pl.Series) -> np.ndarray:
    """Datetime column -> naive UTC ``datetime64[ms]`` (what plotly draws without shifting)."""
    if isinstance(values.dtype, pl.Datetime) and values.dtype.time_zone is not None:
        values = values.dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return values.cast(pl.Datetime("ms")).to_numpy()


def gap_runs(timestamps: np.ndarray, observed: np.ndarray, max_runs: int = MAX_GAP_RECTS
             ) -> list[tuple[np.datetime64, np.datetime64]]:
    """Runs of unobserved steps as ``(start, end)`` times: the ``max_runs`` longest.

    A run starts at its first unobserved timestamp and ends at the next observed one (or
    its own last timestamp at the end of the series). When there are more runs than
    ``max_runs`` only the longest are shaded (never merged: a shaded span is always truly
    unobserved); the shorter ones still show as breaks in the line, and zooming in
    (``recurra.dashboards.callbacks.detail_patch``) shades the longest runs of the visible window.

    >>> t = np.arange(6).astype("datetime64[h]")
    >>> [(int(a.astype(int)), int(b.astype(int))) for a, b in gap_runs(
    ...     t, np.array([1, 0, 0, 1, 0, 1], bool))]
    [(1, 3), (4, 5)]
    """
    missing = ~np.asarray(observed, dtype=bool)
    if not missing.any():
        return []
    padded = np.concatenate([[False], missing, [False]]).astype(np.int8)
    changes = np.diff(padded)
    first = np.flatnonzero(changes == 1)
    after = np.flatnonzero(changes == -1)           # index of the next observed step
    ends = np.minimum(after, len(timestamps) - 1)
    if first.size > max_runs:
        duration = timestamps[ends] - timestamps[first]
        keep = np.sort(np.argsort(-duration.astype(np.int64), kind="stable")[:max_runs])
        first, ends = first[keep], ends[keep]
    return [(timestamps[a], timestamps[b]) for a, b in zip(first, ends, strict=True)]


def rect_xy(spans: list[tuple], y_low: float, y_high: float) -> tuple[list, list]:
    """x and y of closed rectangles separated by None (one trace draws them all)."""
    xs: list = []
    ys: list = []
    for start, end in spans:
        xs += [start, start, end, end, start, None]
        ys += [y_low, y_high, y_high, y_low, y_low, None]
    return xs, ys


def plot_text(text: object) -> str:
    """Text from data (series ids, channels, reasons) for a plotly label, title or hover
    template: HTML-escaped (plotly renders a subset of HTML tags in labels) and ``%`` as
    ``&#37;`` (never a ``%{...}`` template field), so it shows literally.

    >>> plot_text("<b>a</b> 5%")
    '&lt;b&gt;a&lt;/b&gt; 5&#37;'
    """
    return html.escape(str(text), quote=False).replace("%", "&#37;")


def _rect_trace(spans: list[tuple], y_low: float, y_high: float, *, name: str, colour: str,
                texts: list[str] | None = None, legendgroup: str, showlegend: bool,
                row_axis: tuple[str, str]) -> go.Scatter:
    """One filled trace holding many rectangles (separated by None), cheap to draw."""
    xs, ys = rect_xy(spans, y_low, y_high)
    hover: list = []
    for index in range(len(spans)):
        hover += [texts[index] if texts else name] * 5 + [None]
    return go.Scatter(x=xs, y=ys, mode="lines", fill="toself", fillcolor=colour,
                      line=dict(width=0), name=name, legendgroup=legendgroup,
                      showlegend=showlegend, hoverinfo="text", hovertext=hover,
                      hoveron="fills+points", xaxis=row_axis[0], yaxis=row_axis[1],
                      zorder=-1)  # under the lines


def _event_text(event: dict, level: str) -> str:
    channels = ", ".join(map(plot_text, event.get(CHANNELS) or [])) or "all channels"
    peak = event.get(PEAK_SCORE)
    severity = event.get(SEVERITY)
    severity_text = "n/a" if severity is None else f"{severity:.2f}"
    peak_text = "n/a" if peak is None else f"{peak:.3g}"
    return (f"{event.get(KIND) or 'anomaly'} ({level})<br>{event[START]:%Y-%m-%d %H:%M} - "
            f"{event[END]:%Y-%m-%d %H:%M} UTC<br>severity {severity_text}, peak score "
            f"{peak_text}<br>driven by: {channels}")


def series_figure(frame: pl.DataFrame, forecast: pl.DataFrame | None = None,
                  events: pl.DataFrame | None = None, *, title: str | None = None,
                  max_points: int = MAX_POINTS, method: str = "minmax",
                  x_range: Sequence | None = None,
                  channels: Sequence[str] | None = None,
                  recent_steps: int | None = None,
                  scores: pl.DataFrame | None = None) -> go.Figure:
    """Values with gaps shaded, the latest forecast with its band, anomaly events, and the
    anomaly score in a last subplot when ``scores`` are given.

    Parameters
    ----------
    frame : contract frame of ONE series (any number of channels; one subplot each).
    forecast : forecast rows (FORECAST_SCHEMA + q-columns) of that series, or None.
    events : events (EVENT_SCHEMA) of that series, or None. An event is drawn on the
        subplots of the channels that drove it (``channels``), on all when that is empty,
        widened by half a sampling step each side (so an instant event stays visible).
    max_points : at most this many points per trace (see ``recurra.dashboards.downsample``).
    x_range : optional ``[start, end]`` of the visible x-range.
    channels : the channels to draw (default: all, sorted).
    recent_steps : without ``x_range``, open on the last ``recent_steps`` sampling steps
        and the forecast (when the series is longer); the range slider shows it all.
    scores : score rows (SCORE_SCHEMA) of that series: drawn as ``anomaly score`` with the
        flagged points (``is_anomaly``) as ``flagged`` markers and every event shaded.

    Returns
    -------
    A Figure with shared x-axes, a range slider under the last subplot and a legend.
    """
    present = sorted(frame[CHANNEL].unique().to_list()) if frame.height else []
    channels = [c for c in channels or () if c in present] or present
    step = median_step(frame)
    has_scores = scores is not None and scores.height > 0
    n_rows = max(1, len(channels)) + has_scores
    multichannel = n_rows > 1
    titles = [*map(plot_text, channels), *(["anomaly score"] if has_scores else [])]
    figure = make_subplots(rows=n_rows, cols=1, shared_xaxes=True, vertical_spacing=0.05,
                           subplot_titles=titles if multichannel else None,
                           row_heights=[1.0] * len(channels) + [0.6] * has_scores or None)
    shown_legend: set[str] = set()
    for row, channel in enumerate(channels, start=1):
        part = frame.filter(pl.col(CHANNEL) == channel).sort(TIMESTAMP)
        axes = ("x" if row == 1 else f"x{row}", "y" if row == 1 else f"y{row}")
        colour = CHANNEL_COLOURS[(row - 1) % len(CHANNEL_COLOURS)]
        y_low, y_high = _add_values(figure, part, channel, colour, axes, row, max_points,
                                    method, shown_legend)
        if forecast is not None and forecast.height:
            y_low, y_high = _add_forecast(figure, forecast.filter(pl.col(CHANNEL) == channel),
                                          axes, row, (y_low, y_high), shown_legend)
        if events is not None and events.height:
            _add_events(figure, events, channel, axes, row, (y_low, y_high), shown_legend,
                        step)
        figure.update_yaxes(title_text=plot_text(channel) if not multichannel else None,
                            row=row, col=1)
    if has_scores:
        _add_scores(figure, scores, events, n_rows, max_points, method, shown_legend, step)
    if x_range is None and recent_steps:
        x_range = recent_x_range(frame, forecast, recent_steps)
    _style(figure, n_rows, title, x_range)
    return figure


def _add_scores(figure: go.Figure, scores: pl.DataFrame, events: pl.DataFrame | None,
                row: int, max_points: int, method: str, shown_legend: set[str],
                step: dt.timedelta | None) -> None:
    scores = scores.filter(pl.col(TIMESTAMP).is_not_null()).sort(TIMESTAMP)
    times = naive_utc(scores[TIMESTAMP])
    values = scores[SCORE].cast(pl.Float64).fill_null(np.nan).to_numpy()
    seconds = (times - times[0]).astype("timedelta64[ms]").astype(np.float64)
    keep = downsample_indices(seconds, values, max_points, method)
    figure.add_trace(go.Scatter(
        x=times[keep], y=values[keep], mode="lines", name="anomaly score",
        line=dict(color=OKABE_ITO["black"], width=1.2), connectgaps=False,
        meta={"role": "score"},
        hovertemplate="score %{y:.3g}<br>%{x|%Y-%m-%d %H:%M} UTC<extra></extra>"),
        row=row, col=1)
    flagged = np.flatnonzero(scores[IS_ANOMALY].fill_null(False).to_numpy())
    if flagged.size:
        flagged = flagged[:: max(1, flagged.size // (max_points // 2))]
        figure.add_trace(go.Scatter(
            x=times[flagged], y=values[flagged], mode="markers", name="flagged",
            marker=dict(color=OKABE_ITO["vermillion"], symbol="x", size=7),
            hovertemplate="flagged: score %{y:.3g}<extra></extra>"), row=row, col=1)
    finite = values[np.isfinite(values)]
    if events is not None and events.height and finite.size:
        pad = 0.05 * (float(finite.max() - finite.min()) or 1.0)
        span = (float(finite.min()) - pad, float(finite.max()) + pad)
        axes = (f"x{row}", f"y{row}")
        _add_events(figure, events, None, axes, row, span, shown_legend, step)


def recent_x_range(frame: pl.DataFrame, forecast: pl.DataFrame | None, recent_steps: int
                   ) -> list[str] | None:
    """``[start, end]`` covering the last ``recent_steps`` steps of ``frame`` and the
    forecast after it; None when the series is not longer than that."""
    step = median_step(frame)
    times = frame[TIMESTAMP].unique()
    if step is None or times.len() <= recent_steps:
        return None
    last = _to_naive(times.max())
    end = last
    if forecast is not None and forecast.height:
        end = max(end, _to_naive(forecast[TIMESTAMP].max()))
    start = last - step * recent_steps
    return [f"{start:%Y-%m-%d %H:%M:%S}", f"{end + step / 2:%Y-%m-%d %H:%M:%S}"]


def value_points(part: pl.DataFrame, max_points: int = MAX_POINTS, method: str = "minmax",
                 window: Sequence | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The (times, values) drawn for one channel: at most ``max_points`` points.

    With ``window = [start, end]`` (what the user zoomed to), three quarters of the budget
    go to the points inside the window and the rest to an overview of the others, so the
    zoomed view shows full detail while the range slider still shows the whole series.

    Parameters
    ----------
    part : contract-frame rows of one channel, sorted by time.
    window : optional ``[start, end]`` (datetimes or ISO text, UTC).

    Returns
    -------
    times (K,) ``datetime64[ms]`` naive UTC, values (K,) float with NaN at gaps.
    """
    times = naive_utc(part[TIMESTAMP])
    values = part[VALUE].cast(pl.Float64).fill_null(np.nan).to_numpy()
    seconds = (times - times[0]).astype("timedelta64[ms]").astype(np.float64) if times.size \
        else times.astype(np.float64)
    if window is None or times.size <= max_points:
        keep = downsample_indices(seconds, values, max_points, method)
        return times[keep], values[keep]
    low, high = (_datetime64(bound) for bound in window)
    inside = (times >= low) & (times <= high)
    chosen = []
    budget_out = max(7, max_points // 4)
    for mask, budget in ((~inside, budget_out), (inside, max(7, max_points - budget_out))):
        index = np.flatnonzero(mask)
        if index.size:
            chosen.append(index[downsample_indices(seconds[index], values[index], budget,
                                                   method)])
    keep = np.unique(np.concatenate(chosen)) if chosen else np.arange(0)
    return times[keep], values[keep]


def window_gap_runs(part: pl.DataFrame, window: Sequence | None,
                    max_runs: int = MAX_GAP_RECTS) -> list[tuple]:
    """:func:`gap_runs` of one channel's rows, restricted to ``window`` when given."""
    times = naive_utc(part[TIMESTAMP])
    observed = part[VALUE].is_not_null().to_numpy()
    if window is not None:
        low, high = (_datetime64(bound) for bound in window)
        inside = (times >= low) & (times <= high)
        times, observed = times[inside], observed[inside]
    return gap_runs(times, observed, max_runs) if times.size else []


def _datetime64(value: dt.datetime | str) -> np.datetime64:
    """A time bound as naive UTC ``datetime64[ms]``; accepts plotly's range text
    (``"2024-01-02 02:00:00.1234"``)."""
    if isinstance(value, dt.datetime):
        return np.datetime64(_to_naive(value), "ms")
    text = str(value).strip().replace(" ", "T").removesuffix("Z").removesuffix("+00:00")
    return np.datetime64(text[:23], "ms")


def _add_values(figure: go.Figure, part: pl.DataFrame, channel: str, colour: str,
                axes: tuple[str, str], row: int, max_points: int, method: str,
                shown_legend: set[str]) -> tuple[float, float]:
    times = naive_utc(part[TIMESTAMP])
    values = part[VALUE].cast(pl.Float64).fill_null(np.nan).to_numpy()
    observed = ~np.isnan(values)
    drawn_times, drawn_values = value_points(part, max_points, method)
    y_low = float(np.nanmin(values)) if observed.any() else 0.0
    y_high = float(np.nanmax(values)) if observed.any() else 1.0
    pad = 0.05 * (y_high - y_low or 1.0)
    y_low, y_high = y_low - pad, y_high + pad
    runs = gap_runs(times, observed)
    if runs:
        trace = _rect_trace(runs, y_low, y_high, name="gap (not observed)",
                            colour=GAP_COLOUR, legendgroup="gap",
                            showlegend="gap" not in shown_legend, row_axis=axes)
        trace.meta = {"role": "gaps", "channel": channel, "y": [y_low, y_high]}
        figure.add_trace(trace, row=row, col=1)
        shown_legend.add("gap")
    figure.add_trace(go.Scatter(
        x=drawn_times, y=drawn_values, mode="lines", name=plot_text(channel),
        connectgaps=False,
        line=dict(color=colour, width=1.6),
        meta={"role": "values", "channel": channel, "n_points": int(times.size)},
        hovertemplate=f"{plot_text(channel)}: %{{y:.4g}}<br>%{{x|%Y-%m-%d %H:%M}} UTC"
                      "<extra></extra>"),
        row=row, col=1)
    return y_low, y_high


def _add_forecast(figure: go.Figure, forecast: pl.DataFrame, axes: tuple[str, str], row: int,
                  y_span: tuple[float, float], shown_legend: set[str]) -> tuple[float, float]:
    if forecast.is_empty():
        return y_span
    forecast = forecast.sort(TIMESTAMP)
    times = naive_utc(forecast[TIMESTAMP])
    levels = quantile_levels(forecast.columns)
    y_low, y_high = y_span
    if len(levels) >= 2:
        (_, low), (_, high) = levels[0], levels[-1]
        lower = forecast[low].cast(pl.Float64).to_numpy()
        upper = forecast[high].cast(pl.Float64).to_numpy()
        name = f"forecast interval {low}-{high}"
        figure.add_trace(go.Scatter(x=times, y=lower, mode="lines", line=dict(width=0),
                                    showlegend=False, legendgroup="band", hoverinfo="skip",
                                    name=f"{name} (lower)"), row=row, col=1)
        figure.add_trace(go.Scatter(
            x=times, y=upper, mode="lines", line=dict(width=0), fill="tonexty",
            fillcolor="rgba(213, 94, 0, 0.18)", name=name, legendgroup="band",
            showlegend="band" not in shown_legend,
            hovertemplate=f"{high}: %{{y:.4g}}<extra></extra>"), row=row, col=1)
        shown_legend.add("band")
        y_low = min(y_low, float(np.nanmin(lower)))
        y_high = max(y_high, float(np.nanmax(upper)))
    y_hat = forecast[Y_HAT].cast(pl.Float64).to_numpy()
    figure.add_trace(go.Scatter(
        x=times, y=y_hat, mode="lines", name="forecast", legendgroup="forecast",
        showlegend="forecast" not in shown_legend,
        line=dict(color=FORECAST_COLOUR, width=2, dash="dash"),
        hovertemplate="forecast: %{y:.4g}<br>%{x|%Y-%m-%d %H:%M} UTC<extra></extra>"),
        row=row, col=1)
    shown_legend.add("forecast")
    return min(y_low, float(np.nanmin(y_hat))), max(y_high, float(np.nanmax(y_hat)))


def _add_events(figure: go.Figure, events: pl.DataFrame, channel: str | None,
                axes: tuple[str, str],
                row: int, y_span: tuple[float, float], shown_legend: set[str],
                step: dt.timedelta | None) -> None:
    half = step / 2 if step else dt.timedelta(0)
    groups: dict[str, tuple[list, list, str]] = {}
    for event in events.to_dicts():
        drivers = event.get(CHANNELS) or []
        if drivers and channel is not None and channel not in drivers:
            continue
        if event.get(KIND) == "data_quality":
            name, colour = "data quality event", DATA_QUALITY_COLOUR
            level = "data quality"
        else:
            level = severity_level(event.get(SEVERITY))
            name = f"anomaly: {level}"
            colour = next(c for n, _, c in SEVERITY_LEVELS if n == level)
        spans, texts, _ = groups.setdefault(name, ([], [], colour))
        spans.append((_to_naive(event[START]) - half, _to_naive(event[END]) + half))
        texts.append(_event_text(event, level))
    order = [f"anomaly: {n}" for n, _, _ in SEVERITY_LEVELS] + ["data quality event"]
    for name in sorted(groups, key=order.index):
        spans, texts, colour = groups[name]
        figure.add_trace(_rect_trace(spans, *y_span, name=name, colour=colour, texts=texts,
                                     legendgroup=name, showlegend=name not in shown_legend,
                                     row_axis=axes), row=row, col=1)
        shown_legend.add(name)


def _to_naive(value: dt.datetime) -> dt.datetime:
    return value.astimezone(dt.UTC).replace(tzinfo=None) if value.tzinfo else value


def _style(figure: go.Figure, n_rows: int, title: str | None, x_range: Sequence | None
           ) -> None:
    figure.update_layout(
        template="plotly_white", font=FONT, title=dict(text=plot_text(title or ""), x=0.01),
        height=260 + 190 * n_rows, margin=dict(l=70, r=20, t=60 if title else 30, b=40),
        legend=dict(orientation="v", yanchor="top", y=1.0, xanchor="left", x=1.01,
                    title=dict(text="click to hide/show"), font=dict(size=12),
                    bgcolor="rgba(255,255,255,0.9)", bordercolor="#dddddd", borderwidth=1),
        hovermode="closest", uirevision="series")
    figure.update_xaxes(showgrid=True, gridcolor="#e5e5e5")
    figure.update_yaxes(showgrid=True, gridcolor="#e5e5e5")
    figure.update_xaxes(title_text="time (UTC)", rangeslider=dict(visible=True, thickness=0.07),
                        row=n_rows, col=1)
    if x_range is not None:
        set_x_range(figure, x_range)


def set_x_range(figure: go.Figure, x_range: Sequence) -> go.Figure:
    """Show ``[start, end]`` on every (shared) x-axis of ``figure``; returns it."""
    for axis in figure.select_xaxes():
        axis.update(range=list(x_range), autorange=False)
    return figure


def event_x_range(start: dt.datetime | str, end: dt.datetime | str,
                  step: dt.timedelta | None = None, min_steps: int = 12) -> list[str]:
    """The x-range that centres an event: padded each side by its duration, and by at
    least ``min_steps`` sampling steps (``step``; one hour when unknown) for context.

    >>> event_x_range("2024-01-02T00:00:00", "2024-01-02T02:00:00")
    ['2024-01-01 22:00:00', '2024-01-02 04:00:00']
    >>> event_x_range("2024-01-02", "2024-01-02", step=dt.timedelta(days=1), min_steps=5)
    ['2023-12-28 00:00:00', '2024-01-07 00:00:00']
    """
    start_time = _to_naive(_parse(start))
    end_time = _to_naive(_parse(end))
    pad = max(end_time - start_time, (step or dt.timedelta(hours=1)) * (min_steps if step
                                                                          else 1))
    return [f"{start_time - pad:%Y-%m-%d %H:%M:%S}", f"{end_time + pad:%Y-%m-%d %H:%M:%S}"]


def median_step(frame: pl.DataFrame) -> dt.timedelta | None:
    """Median spacing of a frame's distinct timestamps (None with fewer than two)."""
    if frame.height < 2:
        return None
    times = frame[TIMESTAMP].unique().sort()
    if times.len() < 2:
        return None
    median = times.diff().drop_nulls().median()
    return median if isinstance(median, dt.timedelta) else None


def _parse(value: dt.datetime | str) -> dt.datetime:
    if isinstance(value, dt.datetime):
        return value
    return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00").replace(" UTC", ""))
