"""Shared fixtures: small seeded contract frames with gaps, and an isolated state folder."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import polars as pl
import pytest

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DO_NOT_TRACK", "true")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# Tiny CPU tests run on one torch thread: on a shared, oversubscribed CPU two threads spin
# against each other (measured ~20x slower per GRU-D training step than one thread).
try:
    import torch

    torch.set_num_threads(1)
except ImportError:  # pragma: no cover - torch is a dependency
    torch = None


@pytest.fixture(params=["nodes", "columns"])
def tree_layout(request, monkeypatch):
    """Save format-3 states as the writer does for a few series (one node per object) and
    as it does for many (every mapping or list of same-shaped objects as columns)."""
    if request.param == "columns":
        monkeypatch.setattr("recurra.nn.state_columns.MIN_ROWS", 1)
    return request.param


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """Put torch back on one thread after every test (code under test may change it)."""
    yield
    if torch is not None and torch.get_num_threads() != 1:
        torch.set_num_threads(1)


def make_frame(n_series: int = 2, n_steps: int = 200, n_channels: int = 1,
               gap_share: float = 0.1, seed: int = 0, freq_hours: int = 1) -> pl.DataFrame:
    """Sine + noise series on an hourly grid with a seeded share of missing values."""
    rng = np.random.default_rng(seed)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    timestamps = [start + dt.timedelta(hours=freq_hours * i) for i in range(n_steps)]
    rows = []
    for s in range(n_series):
        for c in range(n_channels):
            phase = rng.uniform(0, 2 * np.pi)
            values = (np.sin(np.arange(n_steps) * 2 * np.pi / 24 + phase) * (1 + c)
                      + 0.1 * rng.standard_normal(n_steps) + s)
            hidden = rng.random(n_steps) < gap_share
            channel = "value" if n_channels == 1 else f"c{c}"
            rows.append(pl.DataFrame({
                "series_id": [f"s{s}"] * n_steps,
                "channel": [channel] * n_steps,
                "timestamp": timestamps,
                "value": [None if h else float(v) for v, h in zip(values, hidden, strict=True)],
            }))
    frame = pl.concat(rows).with_columns(pl.col("value").is_not_null().alias("observed"))
    return frame.with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))


@pytest.fixture
def contract_checks(monkeypatch) -> list[str]:
    """The names of the frames the contract checks in full while the test runs (one entry
    per call of the checker behind ``validate_frame`` / ``contract``; a ``ContractFrame``
    passes without one)."""
    from recurra.data import schema

    calls: list[str] = []
    checker = schema._validated

    def counted(df, name):
        calls.append(name)
        return checker(df, name)

    monkeypatch.setattr(schema, "_validated", counted)
    return calls


@pytest.fixture
def gappy_frame() -> pl.DataFrame:
    return make_frame()


@pytest.fixture
def multichannel_frame() -> pl.DataFrame:
    return make_frame(n_series=2, n_channels=3, n_steps=240, seed=1)


@pytest.fixture
def recurra_home(tmp_path, monkeypatch) -> Path:
    """An isolated RECURRA_HOME (store, MLflow, reports) under the test's temp folder."""
    home = tmp_path / "home"
    monkeypatch.setenv("RECURRA_HOME", str(home))
    monkeypatch.delenv("RECURRA_STORE", raising=False)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    return home


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"shared data folder {SHARED_DATA} is absent")
    return SHARED_DATA


def flat_config(**values):
    """A ``ForecasterConfig`` from flat keyword values (``hidden_size=8``, the form configs had
    before they were split into parts), without the ``FutureWarning``: for tests that vary a
    few fields of a base config through ``**kwargs``."""
    from recurra.data.config_tree import build_config
    from recurra.forecasting.config import ForecasterConfig

    return build_config(ForecasterConfig, values, where="test config", warn=False)
