"""Issue 19 items 10 and 13 through the train flow: a group with one 1e300 series still
trains the others and the run summary names the series left out; MLflow runs hold the full
effective config and per-epoch loss histories (val_loss for the forecaster, train_loss for
the detector). One module-scoped run on a real MLflow SQLite store in a temp folder."""

from __future__ import annotations

import polars as pl
import pytest
import tomli_w

from recurra.pipelines import tasks
from recurra.pipelines.flows import run_flow
from tests.conftest import make_frame

MAX_EPOCHS = 3


@pytest.fixture(scope="module")
def trained(prefect_harness, tmp_path_factory):
    home = tmp_path_factory.mktemp("train-tracking-home")
    patch = pytest.MonkeyPatch()
    patch.setenv("RECURRA_HOME", str(home))
    patch.delenv("RECURRA_STORE", raising=False)
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    raw = {
        "groups": {"g": {"series": ["s0", "s1", "s2"], "forecaster": "rnn",
                         "detector": "ae"}},
        "models": {
            "rnn": {"class": "recurra.forecasting.RNNForecaster",
                    "params": {"cell": "gru", "hidden_size": 4, "lookback": 12, "horizon": 4,
                               "max_windows_per_epoch": 64,
                               "train": {"max_epochs": MAX_EPOCHS,
                                         "early_stopping_patience": 50, "device": "cpu"}}},
            "ae": {"class": "recurra.anomaly.ReconstructionDetector",
                   "params": {"window": 8, "network": {"hidden_size": 4},
                              "train": {"max_epochs": 2, "device": "cpu"}}},
        },
        "training": {"validation_share": 0.25, "min_rows": 48, "backtest_folds": 1},
    }
    config = home / "recurra.toml"
    config.write_bytes(tomli_w.dumps(raw).encode())
    frame = make_frame(n_series=3, n_steps=160, gap_share=0.0, seed=3)
    hostile = frame.with_columns(
        pl.when(pl.col("series_id") == "s1").then((pl.col("value").abs() + 1.0) * 1e300)
        .otherwise(pl.col("value")).alias("value"))
    tasks.open_store().upsert(hostile, source="synthetic")
    result = run_flow("train", str(config))
    yield result
    patch.undo()


def _run(task: str):
    from mlflow.tracking import MlflowClient

    from recurra.pipelines.mlflow_setup import client, experiment_name

    client()  # points MLflow at the test store
    mlflow_client = MlflowClient()
    experiment = mlflow_client.get_experiment_by_name(experiment_name("g", task))
    runs = mlflow_client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return mlflow_client, runs[0]


def test_a_1e300_series_is_left_out_by_name_and_the_others_train(trained):
    summary = trained["summary"]
    assert summary["status"] == "completed", summary["message"]
    assert "series 's1' left out of training" in summary["message"]
    assert "e+300" in summary["message"]
    assert summary["series_trained"] == 2
    group = trained["groups"]["g"]
    assert sorted(group["series"]) == ["s0", "s2"]
    assert set(group["validation_mae"]) == {"s0", "s2"}
    assert set(group["models"]) == {"forecaster", "detector"}


def test_forecaster_run_logs_the_full_config_and_val_loss_per_epoch(trained):
    client, run = _run("forecast")
    params = run.data.params
    for key in ("config.decoder.kind", "config.output.kind", "config.quantiles",
                "config.stateful", "config.train.learning_rate", "config.train.seed",
                "config.encoder.hidden_size"):
        assert key in params, key
    assert params["config.encoder.hidden_size"] == "4"  # from the TOML
    assert params["config.train.learning_rate"] == "0.001"  # a default
    assert all(len(value) <= 500 for value in params.values())
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == list(range(1, MAX_EPOCHS + 1))
    assert all(m.value > 0 for m in history)
    assert len(client.get_metric_history(run.info.run_id, "train_loss")) == MAX_EPOCHS


def test_detector_run_logs_its_train_loss_per_epoch_and_full_config(trained):
    client, run = _run("detect")
    history = client.get_metric_history(run.info.run_id, "train_loss")
    assert [m.step for m in history] == [1, 2]
    params = run.data.params
    assert "config.train.learning_rate" in params and "config.train.seed" in params
    assert params["config.threshold.kind"] == "spot" and "config.network.hidden_size" in params
