"""Tracking: the no-op default, MLflow runs with params/metric histories/tags, helpers."""

from __future__ import annotations

import dataclasses
import threading

import polars as pl
import pytest

from recurra.data.schema import RecurraError
from tests.conftest import make_frame
from tests.pipelines.test_pyfunc import TinyForecaster, mlflow_environment, mlflow_home


@dataclasses.dataclass(frozen=True)
class Inner:
    hidden_size: int = 8
    lags: tuple = (1, 24)


@dataclasses.dataclass(frozen=True)
class Outer:
    model: Inner = Inner()
    lr: float = 1e-3


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    home = mlflow_home(tmp_path_factory, "tracking")
    with mlflow_environment(home):
        yield home


def test_null_tracker_accepts_everything():
    from recurra.pipelines.tracking import NullTracker, Tracker, epoch_callback

    tracker = NullTracker()
    assert isinstance(tracker, Tracker)
    with tracker.start_run("recurra/x/forecast", "run") as run_id:
        assert run_id is None
        tracker.log_params({"a": 1})
        epoch_callback(tracker)("epoch_end", {"epoch": 0, "train_loss": 1.0})
        assert tracker.log_model(object()) is None


def test_flatten_params_nests_dataclasses_and_mappings():
    from recurra.pipelines.tracking import flatten_params

    flat = flatten_params({"config": Outer(), "seed": 0})
    assert flat == {"config.model.hidden_size": "8", "config.model.lags": "[1, 24]",
                    "config.lr": "0.001", "seed": "0"}
    with pytest.raises(RecurraError, match="`params` must be a mapping or a dataclass"):
        flatten_params(3)


def test_data_fingerprint_is_order_independent_and_content_sensitive():
    from recurra.pipelines.tracking import data_fingerprint

    frame = make_frame(n_series=2, n_steps=30, seed=1)
    fingerprint = data_fingerprint(frame)
    assert fingerprint["n_rows"] == 60 and fingerprint["n_series"] == 2
    assert fingerprint["series_ids"] == ["s0", "s1"]
    assert fingerprint["start"] == "2024-01-01T00:00:00+00:00"
    assert fingerprint["end"] == "2024-01-02T05:00:00+00:00"
    assert fingerprint["n_observed"] == int(frame["observed"].sum())
    shuffled = frame.sample(fraction=1.0, shuffle=True, seed=3)
    assert data_fingerprint(shuffled)["content_hash"] == fingerprint["content_hash"]
    changed = frame.with_columns(pl.when(pl.int_range(pl.len()) == 5).then(99.0)
                                 .otherwise(pl.col("value")).alias("value"))
    changed = changed.with_columns(pl.col("value").is_not_null().alias("observed"))
    assert data_fingerprint(changed)["content_hash"] != fingerprint["content_hash"]


def test_environment_tags_name_device_versions_and_commit():
    from recurra.pipelines.tracking import environment_tags

    tags = environment_tags()
    assert tags["recurra.device"] == "cpu" or tags["recurra.device"].startswith("cuda")
    assert "recurra.version.torch" in tags and "recurra.version.mlflow" in tags
    if "recurra.git_commit" in tags:
        assert len(tags["recurra.git_commit"]) == 40


def test_mlflow_run_records_params_metric_history_tags_and_artifacts(tracked, tmp_path):
    from mlflow import MlflowClient

    from recurra.pipelines.tracking import (
        MLflowTracker,
        epoch_callback,
        experiment_name,
        fingerprint_tags,
    )

    tracker = MLflowTracker()
    frame = make_frame(n_steps=30)
    with tracker.start_run(experiment_name("tiny", "forecast"), "gru",
                           tags=fingerprint_tags(frame)) as run_id:
        tracker.log_params({"config": Outer()})
        callback = epoch_callback(tracker)
        for epoch, loss in enumerate([3.0, 2.0, 1.5]):
            callback("epoch_start", {"epoch": epoch})
            callback("epoch_end", {"epoch": epoch, "train_loss": loss, "val_loss": None,
                                   "lr": 0.01, "seconds": 0.1})
        tracker.log_metrics({"val_mae": 0.5, "ignored": float("nan")})
        tracker.set_tags({"stage": "test"})
        tracker.log_text("hello", "notes/hello.txt")
        tracker.log_dict({"a": [1, 2]}, "summary.json")
        (tmp_path / "file.txt").write_text("x")
        tracker.log_artifact(tmp_path / "file.txt", "files")
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.info.run_name == "gru"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.name == "recurra/tiny/forecast"
    assert str(tracked) in experiment.artifact_location  # artifacts under RECURRA_HOME
    assert run.data.params["config.model.hidden_size"] == "8"
    history = client.get_metric_history(run_id, "train_loss")
    assert [(m.step, m.value) for m in history] == [(0, 3.0), (1, 2.0), (2, 1.5)]
    assert "val_loss" not in run.data.metrics and "ignored" not in run.data.metrics
    assert run.data.metrics["val_mae"] == 0.5
    assert run.data.tags["stage"] == "test" and "recurra.device" in run.data.tags
    assert run.data.tags["recurra.train.n_rows"] == "60"
    names = {a.path for a in client.list_artifacts(run_id)}
    assert {"notes", "summary.json", "files"} <= names


def test_failed_block_marks_run_failed_and_errors_propagate(tracked):
    from mlflow import MlflowClient

    from recurra.pipelines.tracking import MLflowTracker

    tracker = MLflowTracker(environment=False)
    with pytest.raises(ZeroDivisionError):
        with tracker.start_run("recurra/tiny/forecast", "broken") as run_id:
            raise ZeroDivisionError("boom")
    assert MlflowClient().get_run(run_id).info.status == "FAILED"
    with pytest.raises(RecurraError, match="outside `with tracker.start_run"):
        tracker.log_metrics({"a": 1.0})


def test_log_model_from_another_thread_attaches_to_the_run(tracked):
    from mlflow import MlflowClient

    from recurra.pipelines.tracking import MLflowTracker

    tracker = MLflowTracker(environment=False)
    uris = []
    with tracker.start_run("recurra/tiny/forecast", "threaded") as run_id:
        model = TinyForecaster().fit(make_frame(n_steps=24))
        worker = threading.Thread(target=lambda: uris.append(tracker.log_model(model)))
        worker.start()
        worker.join()
        tracker.log_metrics({"after": 1.0})
    client = MlflowClient()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["after"] == 1.0
    assert uris and uris[0].startswith("models:/")
    logged = client.search_logged_models(experiment_ids=[run.info.experiment_id])
    assert any(m.source_run_id == run_id for m in logged)


def test_experiment_names_are_checked():
    from recurra.pipelines.tracking import experiment_name

    assert experiment_name("ett", "detect") == "recurra/ett/detect"
    with pytest.raises(RecurraError, match="`task` \\(''\\) must be a non-empty name"):
        experiment_name("ett", "")


def test_long_param_values_and_odd_keys_are_logged_within_mlflow_rules(tracked):
    from mlflow import MlflowClient

    from recurra.pipelines.tracking import MAX_PARAM_LENGTH, MLflowTracker, experiment_name

    tracker = MLflowTracker(environment=False)
    with tracker.start_run(experiment_name("tiny", "forecast"), "long") as run_id:
        tracker.log_params({"config": {"quantiles": list(range(400)), "odd:key?": 1}})
    params = MlflowClient().get_run(run_id).data.params
    assert MAX_PARAM_LENGTH == 500
    assert len(params["config.quantiles"]) == 500 and params["config.quantiles"].endswith("...")
    assert params["config.odd_key_"] == "1"


def test_scheduled_monitor_metrics_go_to_one_run_a_day(tracked):
    from mlflow import MlflowClient

    from recurra.pipelines.mlflow_registry import MlflowRegistry
    from recurra.pipelines.mlflow_setup import configure

    registry = MlflowRegistry()
    for value in (1.0, 2.0, float("nan")):
        registry.log_metrics("daily-g", "monitor", {"live_mae": value, "skipped": None})
    client = MlflowClient(tracking_uri=configure())
    experiment = client.get_experiment_by_name("recurra/daily-g/monitor")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    assert runs[0].info.run_name.startswith("monitor 20")
    history = client.get_metric_history(runs[0].info.run_id, "live_mae")
    assert sorted(m.value for m in history) == [1.0, 2.0]  # NaN and None are not logged
    assert all(m.step == m.timestamp // 60_000 for m in history)
