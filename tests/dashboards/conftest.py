"""A small store for the dashboard tests: gaps, a multichannel series, a forecast with a
band, events of every severity, runs, quarantine rows; and a fake model registry."""

from __future__ import annotations

import datetime as dt
import math

import polars as pl
import pytest

from recurra.data.schema import EVENT_SCHEMA, FORECAST_SCHEMA, TIMESTAMP_DTYPE
from recurra.data.store import Store
from tests.conftest import make_frame

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _hours(n: float) -> dt.datetime:
    return START + dt.timedelta(hours=n)


def forecast_frame(series_id: str = "s0", channel: str = "value", n_steps: int = 24,
                   issued_hours: int = 200) -> pl.DataFrame:
    issued = _hours(issued_hours)
    y_hat = [math.sin(2 * math.pi * (issued_hours + i + 1) / 24) for i in range(n_steps)]
    return pl.DataFrame({
        "series_id": [series_id] * n_steps, "channel": [channel] * n_steps,
        "issued_at": [issued] * n_steps,
        "timestamp": [issued + dt.timedelta(hours=i + 1) for i in range(n_steps)],
        "step": list(range(1, n_steps + 1)), "y_hat": y_hat,
        "q10": [v - 0.6 for v in y_hat], "q90": [v + 0.6 for v in y_hat],
    }, schema={**FORECAST_SCHEMA, "q10": pl.Float64, "q90": pl.Float64})


def events_frame() -> pl.DataFrame:
    rows = [("s0", 30, 34, 4.1, 4.5, [], "anomaly"),          # severity = peak / threshold
            ("s0", 120, 121, 2.0, 1.2, [], "anomaly"),
            ("s1", 60, 66, 3.0, 2.5, [], "anomaly"),
            ("m0", 100, 110, 5.0, 6.0, ["c1"], "anomaly"),
            ("m0", 150, 152, 1.0, None, [], "data_quality")]
    return pl.DataFrame(
        [{"series_id": s, "start": _hours(a), "end": _hours(b), "peak_score": p,
          "severity": v, "channels": c, "kind": k} for s, a, b, p, v, c, k in rows],
        schema=EVENT_SCHEMA)


def scores_frame(series_id: str = "s1", n_steps: int = 200) -> pl.DataFrame:
    """Hourly scores, high (and flagged) over hours 60..66 where s1 has its event."""
    flagged = [60 <= i <= 66 for i in range(n_steps)]
    return pl.DataFrame({
        "series_id": [series_id] * n_steps,
        "timestamp": [_hours(i) for i in range(n_steps)],
        "score": [3.0 if f else 0.2 + 0.1 * math.sin(i) for i, f in enumerate(flagged)],
        "is_anomaly": flagged, "contribution_value": [1.0] * n_steps,
    }).with_columns(pl.col("timestamp").cast(TIMESTAMP_DTYPE))


def runs_frame() -> pl.DataFrame:
    return pl.DataFrame({
        "run_id": ["r1", "r2"], "flow": ["ingest", "detect"],
        "started_at": [_hours(200), _hours(201)], "finished_at": [_hours(200.1), None],
        "status": ["COMPLETED", "FAILED"], "rows_ingested": [600, 0],
        "rows_quarantined": [3, 0], "series_trained": [0, 0], "events_found": [0, 5],
        "message": ["", "detector crashed"],
    }).with_columns(pl.col("started_at", "finished_at").cast(TIMESTAMP_DTYPE))


def build_store(root) -> Store:
    """A store under ``root`` with series s0, s1 (gappy, univariate) and m0 (3 channels)."""
    store = Store(root)
    store.upsert(make_frame(n_series=2, n_steps=200, seed=3), source="sensors.csv")
    multi = make_frame(n_series=1, n_channels=3, n_steps=200, seed=4)
    store.upsert(multi.with_columns(pl.lit("m0").alias("series_id")), source="plant.csv")
    store.write_table("forecasts", pl.concat([
        forecast_frame("s0"), forecast_frame("s0", issued_hours=180),
        *[forecast_frame("m0", c) for c in ("c0", "c1", "c2")]]),
        key=["series_id", "channel", "issued_at", "timestamp"])
    store.write_table("events", events_frame(), key=["series_id", "start", "kind"])
    store.write_table("runs", runs_frame(), key=["run_id"])
    store.write_table("scores", scores_frame(), key=["series_id", "timestamp"])
    store.add_quarantine(pl.DataFrame({
        "source_file": ["sensors.csv"] * 3 + ["plant.csv"], "line": [5, 9, 12, 3],
        "reason": ["unparseable timestamp", "unparseable timestamp", "non-numeric value",
                   "duplicate key"], "raw": ["x,1", "y,2", "2024-01-01,abc", "..."]}))
    return store


class FakeRegistry:
    """What ``recurra.pipelines.registry`` answers (same columns), as frames written by hand."""

    def list_models(self) -> pl.DataFrame:
        return pl.DataFrame({"name": ["recurra-ett-forecast"], "n_versions": [2],
                             "champion_version": [2], "challenger_version": [1]})

    def list_versions(self, name: str) -> pl.DataFrame:
        return pl.DataFrame({
            "name": [name, name], "version": [2, 1],
            "aliases": [["champion"], ["challenger"]],
            "run_id": ["abcdef1234567890", "0123456789abcdef"],
            "experiment_id": ["7", "7"],        # not in list_versions: looked up in MLflow
            "metric": ["mse", "mse"], "value": [0.41, 0.52],
            "decision": ["promoted", "kept_champion"],
            "reason": ["mse 0.41 beats champion v1 (0.52) by more than margin 0.005",
                       "first version of the model: no champion yet"],
            "promoted_at": ["2024-01-09T10:00:00.000+00:00", None],
            "metrics": ['{"train_loss": 0.1, "val_mae": 0.5}', '{"val_mae": 0.6}'],
        })


@pytest.fixture
def store(tmp_path) -> Store:
    return build_store(tmp_path / "store")
