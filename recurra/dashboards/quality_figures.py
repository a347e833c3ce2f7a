"""Pure figure builders of the data-quality view: share observed, quarantine reasons.

Same conventions as :mod:`recurra.dashboards.figures` (Okabe-Ito / Cividis colours, readable
labels); used by the dashboard's "Data quality" tab and by the reports.
"""

from __future__ import annotations

import numpy as np
import plotly.graph_objects as go
import polars as pl

from recurra.dashboards.figures import FONT, OKABE_ITO, naive_utc, plot_text
from recurra.data.schema import SERIES_ID

PERIOD_NAMES = {"1h": "hour", "1d": "day", "1w": "week", "1mo": "month"}


def share_observed_figure(share: pl.DataFrame, *, title: str | None = None) -> go.Figure:
    """Heatmap of ``share_observed`` (0..1) per series (rows) and period (columns).

    ``share`` has columns series_id, day (period start), share_observed and optionally
    period (``"1d"``, ``"1w"``...), named in the default title.
    """
    period = share["period"][0] if "period" in share.columns and share.height else "1d"
    name = PERIOD_NAMES.get(period, period)
    title = title or f"Share observed per {name}"
    figure = go.Figure()
    if share.height:
        wide = share.pivot(on=SERIES_ID, index="day", values="share_observed").sort("day")
        series = [c for c in wide.columns if c != "day"]
        figure.add_trace(go.Heatmap(
            x=naive_utc(wide["day"]), y=[plot_text(s) for s in series],
            z=np.array([wide[s].to_numpy() for s in series], dtype=np.float64),
            zmin=0, zmax=1, colorscale="Cividis", colorbar=dict(title="share observed"),
            hovertemplate=f"%{{y}}<br>{name} of %{{x|%Y-%m-%d}}<br>share observed "
                          "%{z:.0%}<extra></extra>"))
    figure.update_layout(template="plotly_white", font=FONT, title=dict(text=title, x=0.01),
                         height=max(260, 120 + 26 * share[SERIES_ID].n_unique()),
                         margin=dict(l=120, r=30, t=60, b=40), xaxis_title=f"{name} (UTC)",
                         yaxis=dict(title="series", autorange="reversed", automargin=True))
    return figure


def quarantine_figure(by_reason: pl.DataFrame, *, title: str = "Quarantined rows by reason"
                      ) -> go.Figure:
    """Horizontal bars of quarantined row counts per reason (columns reason, n_rows)."""
    counts = by_reason["n_rows"].to_list()
    figure = go.Figure(go.Bar(
        x=counts, y=[plot_text(r) for r in by_reason["reason"]], orientation="h", text=counts,
        textposition="outside", cliponaxis=False, marker_color=OKABE_ITO["blue"],
        hovertemplate="%{y}: %{x} rows<extra></extra>"))
    figure.update_layout(template="plotly_white", font=FONT, title=dict(text=title, x=0.01),
                         height=max(220, 100 + 32 * by_reason.height),
                         margin=dict(l=220, r=40, t=60, b=40),
                         xaxis=dict(title="rows", rangemode="tozero", tickformat=",d",
                                    dtick=1 if counts and max(counts) < 10 else None),
                         yaxis=dict(autorange="reversed", automargin=True))
    return figure
