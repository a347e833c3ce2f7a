"""`recurra serve` against a real local Prefect server: deploy, trigger, check Completed.

Starts `prefect server start` on a free port (PREFECT_HOME in tmp, analytics off), serves
the `report` deployment of a tiny config in a subprocess (`python -m recurra.pipelines.serve`),
triggers it with `run_deployment` and waits for the Completed state; then stops both.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recurra.pipelines.serve import (
    QUIET_ENV,
    build_deployments,
    free_port,
    start_server,
    stop_server,
)
from tests.conftest import make_frame
from tests.pipelines.test_flows import write_config

ROOT = Path(__file__).resolve().parents[2]


def test_build_deployments_reads_cron_from_config(tmp_path):
    config = write_config(tmp_path / "c.toml", {"g": {"series": ["*"], "forecaster": "naive"}},
                          schedules={"detect": "10 * * * *", "train": "30 2 * * *"})
    deployments = build_deployments(config)
    assert [d.name for d in deployments] == ["recurra-detect", "recurra-train"]
    assert deployments[0].schedules[0].schedule.cron == "10 * * * *"
    assert deployments[0].parameters == {"config_path": config}
    only = build_deployments(config, only=["train"])
    assert [d.name for d in only] == ["recurra-train"]
    from recurra.data.schema import RecurraError

    with pytest.raises(RecurraError, match=r"--only \['hourly'\]: valid schedules are"):
        build_deployments(config, only=["hourly"])


@pytest.mark.slow
def test_served_deployment_runs_to_completed(tmp_path):
    home = tmp_path / "home"
    env = {**os.environ, **QUIET_ENV, "RECURRA_HOME": str(home),
           "PREFECT_HOME": str(tmp_path / "prefect-serve"), "PREFECT_LOGGING_LEVEL": "WARNING",
           "MLFLOW_TRACKING_URI": f"sqlite:///{home / 'mlflow.db'}"}
    env.pop("RECURRA_STORE", None)
    from recurra.data.store import Store

    Store(home / "store").upsert(make_frame(n_series=1, n_steps=48), source="synthetic")
    config = write_config(tmp_path / "serve.toml", {"g": {"series": ["*"]}},
                          schedules={"report": "0 3 * * *"})
    server, api_url = start_server(free_port(), tmp_path / "prefect-server")
    served = None
    try:
        env["PREFECT_API_URL"] = api_url
        served = subprocess.Popen([sys.executable, "-m", "recurra.pipelines.serve", config,
                                   "report"],
                                  cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, start_new_session=True)
        state = _trigger(api_url, "report/recurra-report", served)
        assert state.is_completed(), state
        assert list((home / "reports").glob("*.html"))
    finally:
        if served is not None:
            stop_server(served)
        stop_server(server)


def _trigger(api_url: str, name: str, served: subprocess.Popen, timeout: float = 120.0):
    """Wait for the deployment to exist, run it, return the final state."""
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: api_url}):
        deadline = time.monotonic() + timeout
        while not _exists(name):
            if served.poll() is not None or time.monotonic() > deadline:
                output = served.stdout.read().decode() if served.stdout else ""
                pytest.fail(f"deployment {name} never appeared; serve output:\n{output}")
            time.sleep(1.0)
        flow_run = run_deployment(name, timeout=timeout, poll_interval=1)
        return flow_run.state


def _exists(name: str) -> bool:
    from prefect import get_client

    with get_client(sync_client=True) as client:
        try:
            client.read_deployment_by_name(name)
        except Exception:  # noqa: BLE001 - not registered yet
            return False
        return True
