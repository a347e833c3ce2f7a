"""The "your own data" walkthrough of docs/own-data.md, end to end, and its two helpers.

`recurra init` -> `recurra ingest` -> `recurra train` -> (new rows arrive, `ingest`) ->
`recurra detect` -> `recurra report`, in-process through the typer app, on a CSV the test
writes, with a temp RECURRA_HOME and the real MLflow SQLite store; budgets are cut to the
minimum in the written config.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
import tomllib

import pytest
from typer.testing import CliRunner

from recurra.pipelines.cli import app
from recurra.pipelines.init_config import horizon_and_lookback, inspect_data, render_config

runner = CliRunner()


def write_sensor_csv(path, n_rows: int, gap_every: int | None = 7) -> None:
    """Hourly wide CSV, two channels; every ``gap_every``-th temperature is empty."""
    start = dt.datetime(2024, 1, 1)
    with path.open("w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["timestamp", "temperature", "pressure"])
        for i in range(n_rows):
            gap = gap_every is not None and i % gap_every == 0
            temperature = "" if gap else f"{20 + 5 * math.sin(2 * math.pi * i / 24):.3f}"
            spike = 25.0 if i == n_rows - 20 else 0.0
            writer.writerow([(start + dt.timedelta(hours=i)).isoformat(), temperature,
                             f"{1000 + (i % 24) * 0.5 + spike:.2f}"])


def invoke(*args: str):
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, f"recurra {' '.join(args)} -> {result.exit_code}:\n" \
                                  f"{result.output}\n{result.exception!r}"
    return result


def tiny(text: str) -> str:
    """The written config with the smallest budgets (same keys: it must still parse)."""
    for key, value in (("max_epochs", 1), ("hidden_size", 4), ("max_windows_per_epoch", 32)):
        text = re.sub(rf"{key} = \d+", f"{key} = {value}", text)
    return text


def test_own_data_walkthrough_end_to_end(prefect_harness, tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("RECURRA_HOME", str(home))
    monkeypatch.delenv("RECURRA_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    data = tmp_path / "plant.csv"
    write_sensor_csv(data, 300)

    result = invoke("init", str(data))
    assert "1 series, 2 channel(s), frequency 1h" in result.output
    assert "recurra ingest" in result.output and "recurra train --config" in result.output
    config = tmp_path / "recurra.toml"
    parsed = tomllib.loads(config.read_text())
    assert 'cell = "grud"' in config.read_text()           # 1 in 7 temperatures is missing
    assert parsed["models"]["detector"]["class"] == "recurra.anomaly.GRUDAutoencoder"
    assert runner.invoke(app, ["init", str(data)]).exit_code == 1   # no silent overwrite
    config.write_text(tiny(config.read_text()))

    invoke("ingest", str(data), "--kind", "sensor")
    invoke("train", "--config", str(config))
    write_sensor_csv(data, 360)                              # 60 new hours arrive
    invoke("ingest", str(data), "--kind", "sensor")
    detect = invoke("detect", "--config", str(config), "--no-retrain")
    assert '"status": "completed"' in detect.output
    invoke("report")

    from recurra.data.store import Store
    from recurra.pipelines.tasks import registry_backend

    store = Store(home / "store")
    assert store.read().height == 720
    assert store.read_table("scores").height > 0
    aliases = registry_backend().aliases()
    assert aliases["recurra-main-forecast"]["champion"] is not None
    assert aliases["recurra-main-detect"]["champion"] is not None
    assert list((home / "reports").glob("*.html"))


def test_init_picks_lstm_for_complete_data_and_fits_windows_to_short_series(tmp_path):
    data = tmp_path / "complete.csv"
    write_sensor_csv(data, 120, gap_every=None)
    profile = inspect_data(data)
    assert (profile.n_series, profile.channels, profile.frequency) == (
        1, ("pressure", "temperature"), "1h")
    assert profile.gap_share == 0.0 and not profile.gappy
    horizon, lookback = horizon_and_lookback(profile)
    assert horizon + lookback <= 120 * 0.8                  # fits the training part
    text = render_config(profile)
    assert 'cell = "lstm"' in text and "recurra.anomaly.ReconstructionDetector" in text


def test_init_counts_missing_timestamps_as_gaps(tmp_path):
    data = tmp_path / "holes.csv"
    write_sensor_csv(data, 200, gap_every=None)
    lines = data.read_text().splitlines()
    data.write_text("\n".join(lines[:50] + lines[80:]) + "\n")   # 30 hours never arrive
    profile = inspect_data(data)
    assert profile.gap_share == pytest.approx(30 / 200)
    assert profile.gappy


def test_init_errors_name_the_path_and_the_kind(tmp_path):
    result = runner.invoke(app, ["init", str(tmp_path / "missing.csv")])
    assert result.exit_code == 2 and "missing.csv" in result.output
    (tmp_path / "a.csv").write_text("timestamp,value\n2024-01-01,1\n")
    result = runner.invoke(app, ["init", str(tmp_path / "a.csv"), "--kind", "spreadsheet"])
    assert result.exit_code == 2 and "--kind ('spreadsheet')" in result.output


def test_doctor_passes_here_and_fails_with_the_fix(tmp_path, monkeypatch):
    monkeypatch.setenv("RECURRA_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("RECURRA_STORE", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 0, result.output
    assert "python" in result.output and "ready" in result.output

    blocker = tmp_path / "a-file"
    blocker.write_text("")
    monkeypatch.setenv("RECURRA_STORE", str(blocker / "store"))   # under a file: unwritable
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens
    result = runner.invoke(app, ["doctor"])
    assert result.exit_code == 1
    assert "FAIL  store" in result.output and "FAIL  mlflow" in result.output
    assert "unreachable" in result.output and "fix:" in result.output
