"""`recurra demo` end to end on the bundled sample data, with a tiny config."""

from __future__ import annotations

import pytest
import tomli_w
from typer.testing import CliRunner

from tests.pipelines.conftest import prefect_harness  # noqa: F401 - the ephemeral Prefect

TINY = {
    "sources": [{"name": "sample", "kind": "sample"}],
    "groups": {"prices": {"series": ["synthetic/*"], "forecaster": "naive",
                          "detector": "zscore"}},
    "models": {
        "naive": {"class": "forecasting.baselines.SeasonalNaiveForecaster",
                  "params": {"horizon": 5, "season": 5}},
        "zscore": {"class": "anomaly.baselines.RollingZScoreDetector",
                   "params": {"window": 10, "threshold": "quantile", "level": 0.99}},
    },
}


@pytest.mark.slow
@pytest.mark.usefixtures("prefect_harness")
def test_demo_builds_store_registry_and_report(tmp_path, monkeypatch):
    home = tmp_path / "demo-home"
    for name in ("RECURRA_HOME", "PREFECT_HOME", "MLFLOW_TRACKING_URI", "RECURRA_STORE",
                 "PREFECT_API_URL", "PREFECT_LOGGING_LEVEL"):
        monkeypatch.delenv(name, raising=False)  # restored after the test
    monkeypatch.setenv("RECURRA_HOME", str(tmp_path / "elsewhere"))
    config = tmp_path / "tiny.toml"
    config.write_bytes(tomli_w.dumps(TINY).encode())
    from pipelines.cli import app

    result = CliRunner().invoke(app, ["demo", "--home", str(home), "--config", str(config),
                                      "--holdout", "100"])
    assert result.exit_code == 0, result.output
    assert (home / "store" / "catalogue.parquet").is_file()
    assert (home / "mlflow.db").is_file()
    reports = list((home / "reports").glob("*.html"))
    assert reports and reports[0].stat().st_size > 1000
    assert "recurra-prices-forecast" in result.output
    assert "Where the results are" in result.output and str(home) in result.output

    from data.store import Store
    from pipelines import registry

    assert registry.champion_version("recurra-prices-forecast") == "1"
    store = Store(home / "store")
    assert {"runs", "forecasts", "scores", "watermarks"} <= set(store.tables())
    assert set(store.read_table("runs")["flow"]) == {"ingest", "train", "detect", "report"}
    # a second demo with --fresh starts from a clean folder
    again = CliRunner().invoke(app, ["demo", "--home", str(home), "--config", str(config),
                                     "--holdout", "100"])
    assert again.exit_code == 0, again.output
    assert registry.champion_version("recurra-prices-forecast") == "1"
