"""Reports: one self-contained HTML file, plotly.js embedded, no remote scripts."""

from __future__ import annotations

import re

import polars as pl
import pytest
from typer.testing import CliRunner

from recurra.dashboards.report import write_report
from recurra.data.schema import RecurraError

SCRIPT_SRC = re.compile(r"<script[^>]*\bsrc\s*=\s*[\"']?\s*(?:https?:)?//", re.IGNORECASE)


def test_report_is_self_contained_with_the_run_and_its_charts(store, tmp_path):
    path = write_report(store, tmp_path / "out" / "run.html", run_id="r1", title="Run <r1>")
    html = path.read_text(encoding="utf-8")
    assert path.name == "run.html"
    assert not SCRIPT_SRC.search(html), "no http(s) script src: plotly.js is embedded"
    assert html.count("Plotly.newPlot") >= 3 and len(html) > 3_000_000   # plotly.js inline
    assert html.count("plotly.js v") == 1, "plotly.js embedded exactly once"
    assert not re.search(r"<link[^>]+href=[\"']https?://", html), "no remote stylesheet"
    assert "<title>Run &lt;r1&gt;</title>" in html                       # escaped
    assert "ingest" in html and "COMPLETED" in html                      # run summary
    for name in ("Series m0", "Series s0", "Series s1", "anomaly: high", "forecast",
                 "anomaly score", "flagged",
                 "gap (not observed)", "unparseable timestamp"):
        assert name in html


def test_report_of_chosen_series_into_a_folder(store, tmp_path):
    path = write_report(store, tmp_path, series_ids=["s1"], run_id="r/9")
    assert path.parent == tmp_path and path.name == "report-r_9.html"
    html = path.read_text(encoding="utf-8")
    assert "Series s1" in html and "Series s0" not in html
    assert "not in the store's runs table" in html


def test_report_picks_the_series_of_a_run_when_results_carry_run_ids(store, tmp_path):
    store.write_table("scores", pl.DataFrame({"series_id": ["s1"], "run_id": ["r7"]}))
    html = write_report(store, tmp_path / "r7.html", run_id="r7").read_text(encoding="utf-8")
    assert "Series s1" in html and "Series s0" not in html


def test_report_caps_series_and_checks_arguments(store, tmp_path):
    html = write_report(store, tmp_path / "a.html", max_series=1).read_text(encoding="utf-8")
    assert "3 series matched; the first 1 are charted." in html
    with pytest.raises(RecurraError, match=r"max_series \(0\) must be >= 1"):
        write_report(store, tmp_path / "b.html", max_series=0)


def test_cli_report_and_dashboard_help(store, tmp_path):
    from recurra.pipelines.cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["report", "--store", str(store.root), "--out",
                                 str(tmp_path / "cli.html"), "--series", "s0"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "cli.html").is_file() and result.output.strip().endswith("cli.html")
    result = runner.invoke(app, ["dashboard", "--help"])
    assert result.exit_code == 0 and "--port" in result.output and "--store" in result.output
    result = runner.invoke(app, ["dashboard", "--port", "0", "--store", str(store.root)])
    assert result.exit_code != 0 and "--port (0) must be between 1 and 65535" in result.output
    missing = tmp_path / "no-such-store"
    result = runner.invoke(app, ["report", "--store", str(missing), "--out", str(tmp_path)])
    assert result.exit_code == 2 and "must be an existing store folder" in result.output
    assert not missing.exists(), "a typo must not create a store"


class _CountingStore:
    """A store counting the rows its reads and collected table scans hand to Python."""

    def __init__(self, store) -> None:
        self.store, self.rows = store, 0

    def __getattr__(self, name):
        return getattr(self.store, name)

    def read(self, *args, **kwargs):
        frame = self.store.read(*args, **kwargs)
        self.rows += frame.height
        return frame

    def scan_table(self, name):
        lazy = self.store.scan_table(name)
        return None if lazy is None else _CountedScan(lazy, self)


class _CountedScan:
    def __init__(self, inner, owner) -> None:
        self.inner, self.owner = inner, owner

    def __getattr__(self, attr):
        target = getattr(self.inner, attr)

        def call(*args, **kwargs):
            result = target(*args, **kwargs)
            if isinstance(result, pl.DataFrame):
                self.owner.rows += result.height
            return _CountedScan(result, self.owner) if isinstance(result, pl.LazyFrame) \
                else result
        return call if callable(target) else target


def _long_store(root, n_steps: int):
    """One hourly series of ``n_steps`` with a 24-step forecast issued every 24 hours and a
    score per hour: the tables grow with the history, as months of scheduled runs make."""
    from recurra.data.store import Store
    from tests.conftest import make_frame
    from tests.dashboards.conftest import forecast_frame, scores_frame

    store = Store(root)
    store.upsert(make_frame(n_series=1, n_steps=n_steps, seed=3), source="long.csv")
    store.write_table("forecasts", pl.concat(
        [forecast_frame("s0", issued_hours=h) for h in range(24, n_steps, 24)]),
        key=["series_id", "channel", "issued_at", "timestamp"])
    store.write_table("scores", scores_frame("s0", n_steps), key=["series_id", "timestamp"])
    return store


def test_report_reads_a_bounded_span_however_long_the_history(tmp_path):
    counts = {}
    for n_steps in (1_200, 4_800):
        counting = _CountingStore(_long_store(tmp_path / f"h{n_steps}", n_steps))
        page = write_report(counting, tmp_path / f"r{n_steps}.html", history_steps=300)
        assert "Series s0" in page.read_text(encoding="utf-8")
        counts[n_steps] = counting.rows
    whole = _CountingStore(_long_store(tmp_path / "whole", 4_800))
    write_report(whole, tmp_path / "whole.html", history_steps=None)
    assert abs(counts[4_800] - counts[1_200]) <= 30  # the same span, not 4x the rows
    assert whole.rows > 4 * counts[4_800]
