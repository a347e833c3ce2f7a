"""The train flow on a 2-worker Dask LocalCluster (threads, no extra processes)."""

from __future__ import annotations

import polars as pl
import pytest

from recurra.pipelines import tasks
from recurra.pipelines.config import load_config
from recurra.pipelines.flows import make_task_runner, run_flow
from tests.pipelines.test_flows import synthetic, write_config


def test_task_runner_follows_the_config(tmp_path):
    from prefect.task_runners import ThreadPoolTaskRunner
    from prefect_dask import DaskTaskRunner

    groups = {"g": {"series": ["*"], "forecaster": "naive"}}
    threads = load_config(write_config(tmp_path / "a.toml", groups,
                                       runner={"kind": "threads", "max_workers": 3}))
    runner = make_task_runner(threads)
    assert isinstance(runner, ThreadPoolTaskRunner) and runner._max_workers == 3
    dask = load_config(write_config(tmp_path / "b.toml", groups,
                                    runner={"kind": "dask", "address": "tcp://10.0.0.1:8786"}))
    assert isinstance(make_task_runner(dask), DaskTaskRunner)


@pytest.mark.slow
def test_train_flow_on_a_local_dask_cluster(prefect_harness, recurra_home, tmp_path):
    config = write_config(tmp_path / "dask.toml", {
        "a": {"series": ["s0"], "forecaster": "naive"},
        "b": {"series": ["s1", "s2"], "forecaster": "naive"},
    }, runner={"kind": "dask", "n_dask_workers": 2})
    store = tasks.open_store()
    store.upsert(synthetic(n_steps=120), source="synthetic")
    result = run_flow("train", config)
    assert result["summary"]["status"] == "completed", result["summary"]["message"]
    assert set(result["groups"]) == {"a", "b"}
    assert result["summary"]["series_trained"] == 3
    trainings = store.read_table("trainings")
    assert set(trainings["model_name"]) == {"recurra-a-forecast", "recurra-b-forecast"}
    assert trainings.filter(pl.col("promoted")).height == 2


def test_local_dask_cluster_uses_processes_only_when_asked(tmp_path):
    groups = {"g": {"series": ["*"], "forecaster": "naive"}}
    threads = load_config(write_config(tmp_path / "t.toml", groups, runner={"kind": "dask"}))
    assert make_task_runner(threads).cluster_kwargs["processes"] is False
    procs = load_config(write_config(tmp_path / "p.toml", groups,
                                     runner={"kind": "dask", "dask_processes": True}))
    assert make_task_runner(procs).cluster_kwargs["processes"] is True
