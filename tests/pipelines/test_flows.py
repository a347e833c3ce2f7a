"""Flows and their plain tasks on a tiny synthetic store (ephemeral Prefect, no server).

One module-scoped scenario keeps the Prefect and MLflow cost to a few seconds: train (one
group fails on purpose), detect with nothing new, new rows arrive (one series shifted),
detect again (scores, forecasts, live metrics, drift -> retrain), detect once more.
"""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest
import tomli_w

from recurra.pipelines import tasks
from recurra.pipelines.flows import run_flow
from tests.conftest import make_frame

N_TRAIN = 200


def write_config(path, groups: dict, **sections) -> str:
    """A tiny config: seasonal-naive forecaster + rolling z-score detector."""
    raw = {
        "groups": groups,
        "models": {
            "naive": {"class": "recurra.forecasting.baselines.SeasonalNaiveForecaster",
                      "params": {"horizon": 6, "season": 24}},
            "too_long": {"class": "recurra.forecasting.baselines.SeasonalNaiveForecaster",
                         "params": {"horizon": 6, "season": 5000}},
            "zscore": {"class": "recurra.anomaly.baselines.RollingZScoreDetector",
                       "params": {"window": 8, "threshold": {"kind": "quantile", "level": 0.99}}},
        },
        "training": {"validation_share": 0.2, "min_rows": 48, "backtest_folds": 2},
        "monitoring": {"consecutive_runs": 2, "min_drift_rows": 30},
        **sections,
    }
    path.write_bytes(tomli_w.dumps(raw).encode())
    return str(path)


def synthetic(n_steps: int = 240) -> pl.DataFrame:
    return make_frame(n_series=3, n_steps=n_steps, gap_share=0.05, seed=3)


@pytest.fixture(scope="module")
def scenario(prefect_harness, tmp_path_factory):
    """Run the whole sequence once; tests below check its pieces."""
    home = tmp_path_factory.mktemp("flows-home")
    patch = pytest.MonkeyPatch()
    patch.setenv("RECURRA_HOME", str(home))
    patch.delenv("RECURRA_STORE", raising=False)
    patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
    config = write_config(home / "recurra.toml", {
        "g": {"series": ["s0", "s1"], "forecaster": "naive", "detector": "zscore"},
        "broken": {"series": ["s2"], "forecaster": "too_long"},
    })
    store = tasks.open_store()
    frame = synthetic()
    times = frame["timestamp"].unique().sort()
    store.upsert(frame.filter(pl.col("timestamp") < times[N_TRAIN]), source="synthetic")
    steps = {"train": run_flow("train", config), "detect_empty": run_flow("detect", config)}
    late = frame.filter(pl.col("timestamp") >= times[N_TRAIN]).with_columns(
        pl.when(pl.col("series_id") == "s0").then(pl.col("value") + 25.0)
        .otherwise(pl.col("value")).alias("value"))
    store.upsert(late, source="synthetic")
    steps["detect_new"] = run_flow("detect", config)
    steps["detect_again"] = run_flow("detect", config)
    steps["backtest"] = run_flow("backtest", config)
    yield {"steps": steps, "store": store, "late": late, "home": home}
    patch.undo()


def test_train_registers_and_a_failed_group_does_not_stop_the_others(scenario):
    result = scenario["steps"]["train"]
    summary = result["summary"]
    assert summary["status"] == "partial"
    assert "group 'broken' failed: SchemaError" in summary["message"]
    models = result["groups"]["g"]["models"]
    assert models["forecaster"]["name"] == "recurra-g-forecast"
    assert models["forecaster"]["promoted"] and models["detector"]["promoted"]
    assert set(result["groups"]["g"]["validation_mae"]) == {"s0", "s1"}
    assert summary["series_trained"] == 2


def test_detect_reads_only_new_rows_and_advances_state(scenario):
    steps = scenario["steps"]
    assert steps["detect_empty"]["groups"]["g"]["new_rows"] == 0
    late = scenario["late"].filter(pl.col("series_id").is_in(["s0", "s1"]))
    assert steps["detect_new"]["groups"]["g"]["new_rows"] == late.height
    assert steps["detect_again"]["groups"]["g"]["new_rows"] == 0  # watermark moved
    store = scenario["store"]
    marks = store.read_table("watermarks")
    assert marks.filter(pl.col("group") == "g")["watermark"].max() == late["timestamp"].max()
    scores = store.read_table("scores")
    assert scores.height == late.select("series_id", "timestamp").unique().height
    forecasts = store.read_table("forecasts")
    assert forecasts["timestamp"].min() > late["timestamp"].max()  # issued after the new rows


def test_live_metrics_and_drift_trigger_a_retrain(scenario):
    detect = scenario["steps"]["detect_new"]
    live = detect["groups"]["g"]["live"]
    assert set(live) == {"s0", "s1"} and live["s0"] > live["s1"]  # s0 was shifted by +25
    reasons = detect["groups"]["g"]["reasons"]
    assert any("series 's0' channel 'value': input drift (mean_variance test" in reason
               for reason in reasons), reasons
    assert not any("series 's1'" in reason and "drift" in reason for reason in reasons)
    assert "retrain 'g'" in detect["summary"]["message"]
    retrained = detect["retrained"]["groups"]["g"]
    assert retrained["reason"].startswith("monitor: ")
    assert retrained["models"]["forecaster"]["version"] == "2"  # the gate then decides
    table = scenario["store"].read_table("live_metrics")
    assert set(table["series_id"]) == {"s0", "s1"}


def test_runs_table_has_one_summary_per_flow_run(scenario):
    runs = scenario["store"].read_table("runs")
    assert runs["flow"].to_list().count("detect") == 3
    assert runs["flow"].to_list().count("train") == 2  # scheduled + monitor-triggered
    assert runs["flow"].to_list().count("backtest") == 1
    assert set(tasks.RUN_COLUMNS) <= set(runs.columns)
    assert runs.filter(pl.col("flow") == "detect")["status"].to_list() == ["completed"] * 3


def test_backtest_flow_summarises_per_series(scenario):
    result = scenario["steps"]["backtest"]
    assert result["summary"]["status"] == "partial"  # the broken group fails again
    assert set(result["groups"]["g"]["mae"]) == {"s0", "s1"}
    table = scenario["store"].read_table("backtests")
    assert set(table["series_id"]) == {"s0", "s1"} and (table["mae"] >= 0).all()


def test_split_by_time_and_events_from_scores():
    train, rest = tasks.split_by_time(make_frame(n_series=2, n_steps=10, gap_share=0.0), 0.2)
    assert train.height == 16 and rest.height == 4
    assert train["timestamp"].max() < rest["timestamp"].min()
    t = [dt.datetime(2024, 1, 1, hour, tzinfo=dt.UTC) for hour in range(5)]
    scores = pl.DataFrame({"series_id": ["a"] * 5, "timestamp": t,
                           "score": [0.0, 5.0, 7.0, 0.0, 9.0],
                           "is_anomaly": [False, True, True, False, True]})
    events = tasks.events_from_scores(scores)
    assert events["start"].to_list() == [t[1], t[4]]
    assert events["end"].to_list() == [t[2], t[4]]
    assert events["peak_score"].to_list() == [7.0, 9.0]
    assert events["kind"].to_list() == ["anomaly", "anomaly"]


def test_unknown_flow_name():
    from recurra.data.schema import RecurraError

    with pytest.raises(RecurraError, match=r"flow \('nightly'\) must be one of"):
        run_flow("nightly")


def test_a_run_that_raises_is_recorded_as_failed(recurra_home):
    store = tasks.open_store()
    with pytest.raises(RuntimeError, match="disk full"):
        with tasks.recorded(store, tasks.RunSummary("report")):
            raise RuntimeError("disk full")
    row = store.read_table("runs").row(0, named=True)
    assert row["flow"] == "report" and row["status"] == "failed"
    assert row["message"] == "RuntimeError: disk full" and row["finished_at"] is not None


def test_training_runs_record_the_series_version_they_read(scenario):
    import mlflow

    runs = mlflow.search_runs(search_all_experiments=True, output_format="list",
                              filter_string="tags.mlflow.runName = 'recurra-g-forecast'")
    first = min(runs, key=lambda run: run.info.start_time)  # later ones: drift retrains
    version = int(first.data.tags["recurra.train.series_version"])
    store = scenario["store"]
    assert version == 0 and store.version() > version  # trained before the late rows came
    seen = store.read(series_ids=["s0", "s1"], version=version)
    assert seen["timestamp"].max() < scenario["late"]["timestamp"].min()  # what it saw


def test_detect_says_which_groups_have_no_champion(scenario):
    message = scenario["steps"]["detect_empty"]["summary"]["message"]
    assert "no champion registered yet for group(s) ['broken']" in message
    assert "recurra train" in message


def test_train_with_an_unknown_group_names_the_valid_ones(scenario):
    from recurra.pipelines.config import ConfigError

    config = str(scenario["home"] / "recurra.toml")
    with pytest.raises(ConfigError, match=r"--group \['nosuchgroup'\] not in the config; "
                                          r"groups: \['broken', 'g'\]"):
        run_flow("train", config, groups=["nosuchgroup"])
