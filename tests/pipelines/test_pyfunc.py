"""The pyfunc wrapper: a model logged and loaded back by URI predicts exactly as in-process."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from recurra.data.schema import (
    CHANNEL,
    IS_ANOMALY,
    ISSUED_AT,
    SCORE,
    SERIES_ID,
    STEP,
    TIMESTAMP,
    VALUE,
    Y_HAT,
    RecurraError,
    check_fitted,
    validate_frame,
)
from tests.conftest import make_frame


# Tiny estimators following the persistence protocol --------------------------------------
@dataclasses.dataclass(frozen=True)
class TinyConfig:
    horizon: int = 3
    threshold: float = 2.0


class TinyForecaster:
    """Forecasts each (series, channel) as its training mean, one step per hour."""

    def __init__(self, config: TinyConfig = TinyConfig()) -> None:
        self.config = config
        self.state_ = None

    def fit(self, frame, validation=None):
        frame = validate_frame(frame)
        means = frame.group_by([SERIES_ID, CHANNEL]).agg(pl.col(VALUE).mean().alias("mean"))
        self.state_ = {f"{sid}/{channel}": mean for sid, channel, mean in means.rows()}
        return self

    def predict(self, frame=None, horizon=None):
        check_fitted(self, "state_")
        frame = validate_frame(frame)
        horizon = horizon or self.config.horizon
        last = frame.group_by([SERIES_ID, CHANNEL]).agg(pl.col(TIMESTAMP).max())
        last = last.sort([SERIES_ID, CHANNEL])
        rows = []
        for series_id, channel, end in last.rows():
            for step in range(1, horizon + 1):
                rows.append((series_id, channel, end, end + dt.timedelta(hours=step), step,
                             self.state_[f"{series_id}/{channel}"]))
        return pl.DataFrame(rows, orient="row", schema={
            SERIES_ID: pl.Utf8, CHANNEL: pl.Utf8, ISSUED_AT: pl.Datetime("us", "UTC"),
            TIMESTAMP: pl.Datetime("us", "UTC"), STEP: pl.Int32, Y_HAT: pl.Float64})

    def _get_state(self):
        return {"means": dict(self.state_)}

    def _set_state(self, state):
        self.state_ = dict(state["means"])


class TinyDetector:
    """Scores |z| of each value against the training mean/std of all values."""

    def __init__(self, config: TinyConfig = TinyConfig()) -> None:
        self.config = config
        self.state_ = None

    def fit(self, frame):
        values = validate_frame(frame)[VALUE].drop_nulls().to_numpy()
        self.state_ = {"mean": float(values.mean()), "std": float(values.std())}
        return self

    def score(self, frame):
        check_fitted(self, "state_")
        frame = validate_frame(frame).filter(pl.col("observed"))
        z = ((pl.col(VALUE) - self.state_["mean"]) / self.state_["std"]).abs()
        return frame.group_by([SERIES_ID, TIMESTAMP], maintain_order=True).agg(
            z.max().alias(SCORE)).with_columns(
            (pl.col(SCORE) > self.config.threshold).alias(IS_ANOMALY))

    def predict(self, frame):
        scores = self.score(frame).filter(pl.col(IS_ANOMALY))
        return scores.select(SERIES_ID, pl.col(TIMESTAMP).alias("start"),
                             pl.col(TIMESTAMP).alias("end"), pl.col(SCORE).alias("peak_score"))

    def _get_state(self):
        return dict(self.state_)

    def _set_state(self, state):
        self.state_ = dict(state)


# A migrated MLflow store shared by the tests of a session --------------------------------
@contextlib.contextmanager
def mlflow_environment(home: Path):
    """RECURRA_HOME and MLFLOW_TRACKING_URI pointed at ``home`` for the block, then restored."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RECURRA_HOME", str(home))
        patch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{home / 'mlflow.db'}")
        yield home


def mlflow_home(tmp_path_factory, name: str) -> Path:
    """A fresh RECURRA_HOME whose mlflow.db is a copy of one migrated once per session."""
    import mlflow

    base = tmp_path_factory.getbasetemp()
    template = base / "mlflow-template" / "mlflow.db"
    if not template.exists():
        template.parent.mkdir(parents=True, exist_ok=True)
        from mlflow import MlflowClient

        MlflowClient(tracking_uri=f"sqlite:///{template}").search_experiments()
    home = tmp_path_factory.mktemp(name)
    shutil.copy(template, home / "mlflow.db")
    del mlflow
    return home


@pytest.fixture(scope="module")
def tracking_home(tmp_path_factory):
    home = mlflow_home(tmp_path_factory, "pyfunc")
    with mlflow_environment(home):
        yield home


@pytest.fixture(scope="module")
def logged(tracking_home):
    """One forecaster and one detector logged in one run and registered (module-wide)."""
    import mlflow

    from recurra.pipelines.registry import register_and_gate
    from recurra.pipelines.tracking import MLflowTracker

    frame = make_frame(n_steps=60, seed=3)
    forecaster = TinyForecaster().fit(frame)
    detector = TinyDetector(TinyConfig(threshold=1.0)).fit(frame)
    tracker = MLflowTracker(environment=False)
    with tracker.start_run("recurra/tiny/pyfunc", "logged") as run_id:
        forecaster_uri = tracker.log_model(forecaster, name="forecaster", input_example=frame)
        detector_uri = tracker.log_model(detector, name="detector", task="detect",
                                         input_example=frame)
    versions = {}
    for name, uri in (("tiny-forecast", forecaster_uri), ("tiny-detect", detector_uri)):
        versions[name] = register_and_gate(uri, name, metric="mae", value=1.0,
                                           higher_is_better=False).version
    del mlflow
    return {"frame": frame, "forecaster": forecaster, "detector": detector, "run_id": run_id,
            "versions": versions}


def test_forecaster_loaded_by_registry_uri_predicts_exactly_as_in_process(logged):
    from recurra.pipelines.pyfunc import load_model, to_model_input

    version = logged["versions"]["tiny-forecast"]
    model = load_model(f"models:/tiny-forecast/{version}")
    new = make_frame(n_steps=30, seed=9)
    expected = logged["forecaster"].predict(frame=new).to_pandas()
    result = model.predict(to_model_input(new))
    assert result.equals(expected)
    assert str(result["timestamp"].dtype) == "datetime64[us, UTC]"
    longer = model.predict(to_model_input(new), params={"horizon": 5})
    assert longer.equals(logged["forecaster"].predict(frame=new, horizon=5).to_pandas())


def test_detector_scores_and_events_match_in_process(logged):
    from recurra.pipelines.pyfunc import load_model, to_model_input

    model = load_model(f"models:/tiny-detect/{logged['versions']['tiny-detect']}")
    frame = logged["frame"]
    scores = model.predict(to_model_input(frame))
    assert scores.equals(logged["detector"].score(frame).to_pandas())
    events = model.predict(to_model_input(frame), params={"output": "events"})
    assert events.equals(logged["detector"].predict(frame).to_pandas())
    assert len(events) > 0


def test_signature_and_metadata(logged):
    from recurra.pipelines.pyfunc import load_model, unwrap_estimator

    model = load_model(f"models:/tiny-detect/{logged['versions']['tiny-detect']}")
    signature = model.metadata.signature
    assert signature.inputs.input_names() == ["series_id", "channel", "timestamp", "value",
                                              "observed"]
    assert "score" in signature.outputs.input_names()
    assert signature.params.to_dict()[0]["name"] == "output"
    assert model.metadata.metadata["recurra_task"] == "detect"
    assert isinstance(unwrap_estimator(model), TinyDetector)


def test_bad_params_raise_clear_errors(logged):
    from recurra.pipelines.pyfunc import load_model, to_model_input

    model = load_model(f"models:/tiny-detect/{logged['versions']['tiny-detect']}")
    with pytest.raises(Exception, match="`output` \\('nope'\\) must be one of"):
        model.predict(to_model_input(logged["frame"]), params={"output": "nope"})


def test_to_model_input_gives_naive_utc_pandas():
    from recurra.pipelines.pyfunc import to_model_input

    frame = make_frame(n_steps=5)
    converted = to_model_input(frame)
    assert str(converted["timestamp"].dtype).startswith("datetime64")
    assert converted["timestamp"].dt.tz is None
    assert validate_frame(converted).equals(validate_frame(frame))


def test_task_inference_and_validation():
    from recurra.pipelines.pyfunc import RecurraModel, check_task, infer_task, requirements

    assert infer_task(TinyDetector()) == "detect"
    assert infer_task(TinyForecaster()) == "forecast"
    with pytest.raises(RecurraError, match="`task` \\('train'\\) must be one of"):
        check_task("train")
    with pytest.raises(RecurraError, match="`task`"):
        RecurraModel("classify")
    pins = requirements()
    assert any(p.startswith("torch==") and "+" not in p for p in pins)
    assert any(p.startswith("mlflow==") for p in pins)


def test_real_baseline_forecaster_round_trip(tracking_home):
    baselines = pytest.importorskip("recurra.forecasting.baselines")
    import mlflow

    from recurra.pipelines.pyfunc import load_model, log_estimator, to_model_input

    frame = make_frame(n_steps=120, seed=5, gap_share=0.0)
    forecaster = baselines.SeasonalNaiveForecaster(
        baselines.SeasonalNaiveConfig(season=24, horizon=6)).fit(frame)
    with mlflow.start_run(experiment_id=_experiment("recurra/tiny/baseline")):
        info = log_estimator(forecaster, name="model", input_example=frame)
    model = load_model(info.model_uri)
    history = make_frame(n_steps=72, seed=6, gap_share=0.0)
    expected = forecaster.predict(frame=history).to_pandas()
    assert model.predict(to_model_input(history)).equals(expected)
    assert np.isfinite(expected["y_hat"]).all()


def _experiment(name: str) -> str:
    from recurra.pipelines.mlflow_setup import ensure_experiment

    return ensure_experiment(name)


def test_model_logged_without_example_declares_params_and_accepts_aware_times(tracking_home):
    import mlflow

    from recurra.pipelines.pyfunc import load_model, log_estimator

    frame = make_frame(n_steps=30, seed=11)
    forecaster = TinyForecaster().fit(frame)
    with mlflow.start_run(experiment_id=_experiment("recurra/tiny/no-example")):
        info = log_estimator(forecaster)
    model = load_model(info.model_uri)
    assert model.metadata.signature.inputs is None
    result = model.predict(frame.to_pandas(), params={"horizon": 2})
    assert result.equals(forecaster.predict(frame=frame, horizon=2).to_pandas())


def test_real_detector_round_trip(tracking_home):
    anomaly = pytest.importorskip("recurra.anomaly")
    import mlflow

    from recurra.pipelines.pyfunc import load_model, log_estimator, to_model_input

    config = anomaly.ZScoreConfig(window=8,
                                  threshold=anomaly.ThresholdConfig(kind="quantile", level=0.95))
    detector = anomaly.RollingZScoreDetector(config).fit(make_frame(n_steps=96, seed=12))
    new = make_frame(n_steps=48, seed=13)
    with mlflow.start_run(experiment_id=_experiment("recurra/tiny/detector")):
        info = log_estimator(detector, name="model", input_example=new)
    model = load_model(info.model_uri)
    assert model.metadata.metadata["recurra_task"] == "detect"
    scores = model.predict(to_model_input(new))
    assert scores.equals(detector.score(new).to_pandas())
