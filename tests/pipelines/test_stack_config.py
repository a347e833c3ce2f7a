"""``recurra stack`` without starting anything: state, config rewrite, names, status."""

from __future__ import annotations

import pytest

from recurra.data.schema import RecurraError
from recurra.pipelines import stack
from recurra.pipelines.config import load_config


def test_state_keeps_ports_and_password(tmp_path):
    root = stack.stack_root(tmp_path)
    first = stack.load_state(root)
    again = stack.load_state(root)
    assert first["ports"] == again["ports"] and first["password"] == again["password"]
    assert len(set(first["ports"].values())) == len(first["ports"])
    env = stack.environment(first)
    assert env["MLFLOW_TRACKING_URI"] == f"http://127.0.0.1:{first['ports']['mlflow']}"
    assert env["PREFECT_API_URL"].endswith(f":{first['ports']['prefect']}/api")
    assert first["password"] not in " ".join(env.values())  # clients never see it


def test_config_runs_on_the_stack_dask(tmp_path):
    root = stack.stack_root(tmp_path)
    state = stack.load_state(root)
    source = tmp_path / "mine.toml"
    source.write_text('[groups.g]\nseries = ["s*"]\nforecaster = "naive"\n\n'
                      '[models.naive]\n'
                      'class = "recurra.forecasting.baselines.SeasonalNaiveForecaster"\n'
                      '\n[runner]\nkind = "threads"\nmax_workers = 3\n\n'
                      '[schedules]\ntrain = "0 3 * * *"\n')
    config = load_config(str(stack.write_config(root, state, str(source))))
    assert (config.runner.kind, config.runner.address) == ("dask", stack.urls(state)["dask"])
    assert config.schedules == {"train": "0 3 * * *"}  # the rest of the file is kept
    assert list(config.groups) == ["g"]
    bundled = load_config(str(stack.write_config(root, state, None)))
    assert bundled.runner.kind == "dask" and bundled.groups == load_config().groups


def test_unknown_service_lists_the_valid_ones(tmp_path):
    with pytest.raises(RecurraError, match=r"\['mlfow'\] unknown: valid ones are \['postgres'"):
        stack.down(tmp_path, only=["mlfow"])


def test_status_of_a_stack_never_started(tmp_path):
    services = stack.status(tmp_path)
    assert list(services) == list(stack.SERVICES)
    assert not any(service["running"] for service in services.values())
    assert "***" in services["postgres"]["address"]
    with pytest.raises(RecurraError, match="'mlflow' is not running"):
        stack.kill(tmp_path, "mlflow")
