"""`recurra demo` end to end on the bundled sample data, with a tiny config."""

from __future__ import annotations

import pytest
import tomli_w
from typer.testing import CliRunner

from tests.pipelines.conftest import prefect_harness  # noqa: F401 - the ephemeral Prefect

TINY = {
    "sources": [{"name": "sample", "kind": "sample"}],
    "groups": {"prices": {"series": ["market/*"], "forecaster": "naive",
                          "detector": "zscore"}},
    "models": {
        "naive": {"class": "recurra.forecasting.baselines.SeasonalNaiveForecaster",
                  "params": {"horizon": 5, "season": 5}},
        "zscore": {"class": "recurra.anomaly.baselines.RollingZScoreDetector",
                   "params": {"window": 10, "threshold": {"kind": "quantile", "level": 0.99}}},
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
    from recurra.pipelines.cli import app

    result = CliRunner().invoke(app, ["demo", "--home", str(home), "--config", str(config),
                                      "--holdout", "100"])
    assert result.exit_code == 0, result.output
    assert (home / "store" / "catalogue" / "_delta_log").is_dir()
    assert (home / "mlflow.db").is_file()
    reports = list((home / "reports").glob("*.html"))
    assert reports and reports[0].stat().st_size > 1000
    assert "recurra-prices-forecast" in result.output
    assert "Where the results are" in result.output and str(home) in result.output

    from recurra.data.store import Store
    from recurra.pipelines import registry

    assert registry.champion_version("recurra-prices-forecast") == "1"
    store = Store(home / "store")
    assert {"runs", "forecasts", "scores", "watermarks"} <= set(store.tables())
    assert set(store.read_table("runs")["flow"]) == {"ingest", "train", "detect", "report"}
    assert store.read_table("forecasts").height > 0


def test_fresh_clears_only_a_folder_made_by_the_demo(tmp_path, monkeypatch):
    from recurra.pipelines.demo import DEMO_MARKER, prepare_home

    for name in ("RECURRA_HOME", "PREFECT_HOME", "RECURRA_STORE", "PREFECT_API_URL"):
        monkeypatch.delenv(name, raising=False)
    mine = tmp_path / "mine"
    (mine / "store").mkdir(parents=True)
    prepare_home(mine, fresh=True)  # not made by the demo: kept, then marked
    assert (mine / "store").is_dir() and (mine / DEMO_MARKER).is_file()
    prepare_home(mine, fresh=True)  # marked now: cleared
    assert not (mine / "store").exists()
    import os

    assert os.environ["RECURRA_HOME"] == str(mine.resolve())
    assert os.environ["PREFECT_HOME"] == str(mine.resolve() / "prefect")
