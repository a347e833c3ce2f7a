"""Self-contained HTML reports: one file per run, readable without a server or network.

The report draws the same charts as the dashboard (``recurra.dashboards.figures``) for the series
of a run: values with gaps shaded, the latest forecast with its interval band, anomaly
events by severity, plus the events table, the run's summary and data quality. plotly.js is
embedded once in the file (``include_plotlyjs=True``, never a CDN), so the file opens from
a USB stick on an offline machine. Nothing is trained or written except the report file.

Example::

    from recurra.data.store import Store
    write_report(Store(), ".recurra/reports/run-42.html", run_id="42")
"""

from __future__ import annotations

import datetime as dt
import html
import os
import tempfile
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import polars as pl

from recurra.dashboards.callbacks import RECENT_STEPS, TIME_FORMAT, event_rows
from recurra.dashboards.data_access import DashboardData, open_store
from recurra.dashboards.downsample import MAX_POINTS
from recurra.dashboards.figures import series_figure
from recurra.dashboards.quality_figures import quarantine_figure, share_observed_figure
from recurra.data.schema import SERIES_ID, RecurraError

MAX_SERIES = 20
HISTORY_STEPS = 5_000  # steps of each series a report reads (bounded per-run cost)
STYLE = """
body { font-family: "DejaVu Sans", Arial, sans-serif; color: #222; margin: 0 auto;
       max-width: 1300px; padding: 16px 24px 48px; background: #fff; }
h1 { font-size: 24px; margin-bottom: 4px; } h2 { font-size: 19px; margin-top: 32px; }
.meta { color: #555; font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin: 8px 0 16px; }
th, td { border: 1px solid #ccc; padding: 3px 8px; text-align: left; }
th { background: #f0f0f0; }
td.level-high { background: #D55E00; color: #fff; font-weight: bold; }
td.level-medium { background: #E69F00; } td.level-low { background: #F0E442; }
.note { color: #555; font-style: italic; }
"""
EVENT_HEADERS = (("series_id", "series"), ("start", "start (UTC)"), ("end", "end (UTC)"),
                 ("severity", "severity"), ("level", "level"), ("peak_score", "peak score"),
                 ("channels", "driven by"), ("kind", "kind"))


def write_report(store: Any, path: str | Path, *, series_ids: list[str] | None = None,
                 run_id: str | None = None, title: str = "Recurra report",
                 max_series: int = MAX_SERIES, max_points: int = MAX_POINTS,
                 history_steps: int | None = HISTORY_STEPS) -> Path:
    """Write one self-contained HTML report and return its path.

    Parameters
    ----------
    store : a ``recurra.data.store.Store``, a store folder, a ``DashboardData``, or None (the
        default store).
    path : the ``.html`` file to write, or a folder (the file is then named
        ``report-<run_id or UTC time>.html``). Parent folders are created.
    series_ids : the series to chart; default: the series of ``run_id`` (rows of the
        ``forecasts``/``events``/``scores`` tables carrying that ``run_id``), else every
        series with a forecast or an event, else every series; at most ``max_series``.
    run_id : the pipeline run the report is about (its row of the ``runs`` table is shown).
    title : heading and ``<title>`` of the page.
    history_steps : the last steps of each series the report reads and charts (with the
        forecasts, scores and events of that span), so a report costs the same after a
        year of runs as after a day; None reads the whole history.

    Returns
    -------
    Path of the written file (written atomically: temporary file, then rename).
    """
    if max_series < 1:
        raise RecurraError(f"max_series ({max_series}) must be >= 1")
    if history_steps is not None and history_steps < 1:
        raise RecurraError(f"history_steps ({history_steps}) must be >= 1 or None")
    data = store if isinstance(store, DashboardData) else DashboardData(
        open_store(store) if store is None or isinstance(store, str | Path) else store,
        registry=False)
    target = _target(Path(path), run_id)
    chosen = _choose_series(data, series_ids, run_id)
    notes = []
    if len(chosen) > max_series:
        notes.append(f"{len(chosen)} series matched; the first {max_series} are charted.")
        chosen = chosen[:max_series]
    page = _page(data, chosen, run_id, title, notes, max_points, history_steps)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".report-", suffix=".html", dir=target.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(page)
    os.replace(tmp, target)
    return target


def _target(path: Path, run_id: str | None) -> Path:
    if path.suffix.lower() in (".html", ".htm"):
        return path
    stamp = run_id or dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in str(stamp))
    return path / f"report-{safe}.html"


def _choose_series(data: DashboardData, series_ids: list[str] | None, run_id: str | None
                   ) -> list[str]:
    if series_ids:
        return list(dict.fromkeys(str(s) for s in series_ids))
    if run_id is not None:
        of_run = data.series_with_results(run_id)
        if of_run:
            return of_run
    return data.series_with_results() or data.series_ids()


class _Figures:
    """Renders figures as HTML fragments; plotly.js goes into the first one only."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, figure: go.Figure) -> str:
        self.count += 1
        return figure.to_html(full_html=False, include_plotlyjs=self.count == 1,
                              div_id=f"figure-{self.count}",
                              config={"displaylogo": False, "responsive": True})


def _page(data: DashboardData, series_ids: list[str], run_id: str | None, title: str,
          notes: list[str], max_points: int, history_steps: int | None) -> str:
    render = _Figures()
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    parts = [f"<h1>{html.escape(title)}</h1>",
             f"<p class='meta'>Generated {generated} from store "
             f"{html.escape(str(getattr(data.store, 'root', data.store)))}"
             f"{' for run ' + html.escape(str(run_id)) if run_id else ''}. "
             "Self-contained: opens without a server or network. Charts open on the last "
             f"{RECENT_STEPS} steps and the forecast; drag the range slider under each chart "
             f"for up to the last {history_steps or 'all'} steps (the dashboard shows the "
             "whole history).</p>"]
    parts += [f"<p class='note'>{html.escape(n)}</p>" for n in notes]
    parts.append(_run_section(data, run_id))
    starts = {s: data.history_start(s, history_steps) for s in series_ids}
    since = min((t for t in starts.values() if t is not None), default=None) \
        if starts and all(t is not None for t in starts.values()) else None
    events = data.events(since=since)
    events = events.filter(pl.col(SERIES_ID).is_in(series_ids)) if series_ids else events
    parts.append("<h2>Anomaly events</h2>")
    parts.append(_events_table(event_rows(events)))
    for series_id in series_ids:
        parts.append(f"<h2>Series {html.escape(series_id)}</h2>")
        start = starts[series_id]
        frame = data.series(series_id, start=start)
        if frame.is_empty():
            parts.append("<p class='note'>No rows for this series in the store.</p>")
            continue
        figure = series_figure(frame, data.latest_forecast(series_id, since=start),
                               data.events(series_id, since=start), max_points=max_points,
                               recent_steps=RECENT_STEPS,
                               scores=data.scores(series_id, start=start))
        parts.append(render(figure))
    parts.append("<h2>Data quality</h2>")
    share = data.share_observed_by_day(series_ids or None, since=since)
    parts.append(render(share_observed_figure(share)) if share.height
                 else "<p class='note'>No series.</p>")
    by_reason = data.quarantine_by_reason()
    parts.append(render(quarantine_figure(by_reason)) if by_reason.height
                 else "<p class='note'>No quarantined rows.</p>")
    if render.count == 0:  # keep the promise: plotly.js is in every report
        parts.append(render(go.Figure()))
    body = "\n".join(parts)
    return (f"<!DOCTYPE html>\n<html lang='en'>\n<head>\n<meta charset='utf-8'>\n"
            f"<title>{html.escape(title)}</title>\n<style>{STYLE}</style>\n</head>\n"
            f"<body>\n{body}\n</body>\n</html>\n")


def _run_section(data: DashboardData, run_id: str | None) -> str:
    if run_id is None:
        return ""
    rows = [{k: (f"{v:{TIME_FORMAT}}" if hasattr(v, "strftime") else v) for k, v in r.items()}
            for r in data.run(str(run_id)).to_dicts()]
    if not rows:
        return (f"<h2>Run {html.escape(str(run_id))}</h2>"
                "<p class='note'>This run is not in the store's runs table.</p>")
    return f"<h2>Run {html.escape(str(run_id))}</h2>" + _table(
        [(k, k.replace("_", " ")) for k in rows[0]], rows)


def _events_table(rows: list[dict]) -> str:
    if not rows:
        return "<p class='note'>No events.</p>"
    return _table(list(EVENT_HEADERS), rows, level_column="level")


def _table(headers: list[tuple[str, str]], rows: list[dict], level_column: str | None = None
           ) -> str:
    head = "".join(f"<th>{html.escape(label)}</th>" for _, label in headers)
    body = []
    for row in rows:
        cells = []
        for key, _ in headers:
            value = "" if row.get(key) is None else str(row.get(key))
            css = (f" class='level-{html.escape(value)}'"
                   if key == level_column and value in ("low", "medium", "high") else "")
            cells.append(f"<td{css}>{html.escape(value)}</td>")
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"
