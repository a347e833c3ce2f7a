"""Misconfigured services fail a flow at once, naming the setting and its value, and the
failed run (with that message) lands in the store's ``runs`` table. No server needed: the
addresses are closed ports on 127.0.0.1 and the S3 bucket check uses moto's in-process mock."""

from __future__ import annotations

import pytest
import tomli_w

from recurra.data.schema import RecurraError
from recurra.pipelines import preflight, tasks
from recurra.pipelines.flows import run_flow
from recurra.pipelines.serve import free_port


def write_config(path, **sections) -> str:
    raw = {"groups": {"g": {"series": ["s*"], "forecaster": "naive"}},
           "models": {"naive": {"class": "recurra.forecasting.baselines.SeasonalNaiveForecaster",
                                "params": {"horizon": 6, "season": 24}}}, **sections}
    path.write_bytes(tomli_w.dumps(raw).encode())
    return str(path)


def last_run() -> dict:
    runs = tasks.open_store().read_table("runs")
    return runs.sort("started_at").row(-1, named=True)


def test_dask_address_that_refuses_connections(recurra_home, tmp_path):
    address = f"tcp://127.0.0.1:{free_port()}"
    config = write_config(tmp_path / "c.toml", runner={"kind": "dask", "address": address})
    with pytest.raises(RecurraError, match=r"`runner\.address` \(" + address):
        run_flow("train", config)
    run = last_run()
    assert (run["flow"], run["status"]) == ("train", "failed")
    assert "runner.address" in run["message"] and address in run["message"]


def test_unreachable_tracking_server(recurra_home, tmp_path, monkeypatch):
    uri = f"http://127.0.0.1:{free_port()}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with pytest.raises(RecurraError, match=r"`MLFLOW_TRACKING_URI` \(" + uri):
        run_flow("train", write_config(tmp_path / "c.toml"))
    run = last_run()
    assert run["status"] == "failed" and uri in run["message"]


def test_database_uri_error_hides_the_password():
    uri = f"postgresql://recurra:s3cret@127.0.0.1:{free_port()}/mlflow"
    problem = preflight.check_tracking(uri)
    assert problem is not None and "MLFLOW_TRACKING_URI" in problem
    assert "recurra:***@127.0.0.1" in problem and "s3cret" not in problem


def test_missing_bucket(monkeypatch):
    moto = pytest.importorskip("moto")
    import boto3

    for name in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with moto.mock_aws():
        boto3.client("s3").create_bucket(Bucket="present")
        assert preflight.check_bucket("s3://present/store") is None
        problem = preflight.check_bucket("s3://absent/store")
    assert problem is not None
    assert "`RECURRA_STORE` (s3://absent/store)" in problem and "'absent' does not exist" in problem


def test_good_settings_pass(recurra_home, tmp_path):
    assert preflight.problems(write_config(tmp_path / "c.toml")) == []


def test_scheduled_runs_wait_for_a_service_that_comes_back(recurra_home, tmp_path,
                                                           monkeypatch):
    """A tracking server restarting (down, then up 1 s later) passes the wait; one that never
    answers is still reported, by name, when the wait runs out."""
    import http.server
    import threading

    port = free_port()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    config = write_config(tmp_path / "c.toml")

    class Health(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (http.server's name)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")

        def log_message(self, *args):
            pass

    servers = []

    def start() -> None:
        servers.append(http.server.HTTPServer(("127.0.0.1", port), Health))
        servers[0].serve_forever()

    assert preflight.problems(config)  # down now: connection refused
    starter = threading.Timer(1.0, start)
    starter.start()
    try:
        assert preflight.wait_for_services(config, 20.0, every_s=0.2) == []
    finally:
        starter.join(5.0) if not servers else None
        for server in servers:
            server.shutdown()
            server.server_close()
        starter.join()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    still = preflight.wait_for_services(config, 0.5, every_s=0.2)
    assert len(still) == 1 and "MLFLOW_TRACKING_URI" in still[0]
