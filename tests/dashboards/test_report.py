"""Reports: one self-contained HTML file, plotly.js embedded, no remote scripts."""

from __future__ import annotations

import re

import polars as pl
import pytest
from typer.testing import CliRunner

from dashboards.report import write_report
from data.schema import RecurraError

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
    from pipelines.cli import app

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
