"""Issue 19 item 14: one explicit device for a loaded model; module and state move together.

No GPU here: (a) after loading every tensor (module parameters/buffers and state_) is on the
requested device, none on "meta"; (b) a model whose state was saved and loaded with
map_location predicts and updates identically; (c) a ``gpu``-marked test (skipped without
CUDA) loads onto CUDA and runs predict/update there.
"""

from __future__ import annotations

import types
from dataclasses import replace

import polars as pl
import pytest
import torch

from recurra.anomaly import (
    DETECTOR_TRAIN,
    ForecastErrorConfig,
    ForecastErrorDetector,
    NetworkConfig,
    ThresholdConfig,
    ZScoreConfig,
)
from recurra.forecasting import ForecasterConfig, RNNForecaster
from recurra.forecasting.config import EncoderConfig, TBPTTConfig
from recurra.nn.persistence import load_estimator
from recurra.nn.train import TrainConfig
from tests.conftest import make_frame

torch.set_num_threads(1)
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def _tensors(value):
    if isinstance(value, torch.Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, tuple | list):
        for item in value:
            yield from _tensors(item)


def _devices(estimator) -> set[str]:
    module = [*estimator.module_.parameters(), *estimator.module_.buffers()]
    state = list(_tensors(estimator.state_ if isinstance(estimator, RNNForecaster) else
                          [s.model_state for s in estimator.state_.values()]))
    assert state, "the test needs state tensors"
    return {t.device.type for t in module + state}


@pytest.fixture(scope="module")
def frames():
    frame = make_frame(n_series=2, n_steps=120, gap_share=0.05, seed=4)
    times = frame["timestamp"].unique().sort()
    return (frame.filter(pl.col("timestamp") < times[100]),
            frame.filter(pl.col("timestamp") >= times[100]))


@pytest.fixture(scope="module")
def saved(frames, tmp_path_factory):
    train, _ = frames
    folder = tmp_path_factory.mktemp("device")
    forecaster = RNNForecaster(ForecasterConfig(lookback=8, horizon=4, stateful=True,
                                                train=TrainConfig(max_epochs=1, batch_size=4,
                                                                  device="cpu"),
                                                encoder=EncoderConfig(cell="lstm", hidden_size=4),
                                                tbptt=TBPTTConfig(length=20))).fit(train)
    detector = ForecastErrorDetector(ForecastErrorConfig(
        window=8, network=NetworkConfig(hidden_size=4),
        train=replace(DETECTOR_TRAIN, max_epochs=1))).fit(train)
    return {"forecaster": (forecaster, forecaster.save(folder / "f")),
            "detector": (detector, detector.save(folder / "d"))}


@pytest.mark.parametrize("role", ["forecaster", "detector"])
def test_loaded_model_has_every_tensor_on_the_requested_device(saved, role):
    _, path = saved[role]
    loaded = load_estimator(path, map_location="cpu")
    assert _devices(loaded) == {"cpu"}
    assert loaded.device_.type == "cpu"


def test_a_stateful_forecaster_predicts_and_updates_identically_after_map_location(
        saved, frames):
    original, path = saved["forecaster"]
    _, new = frames
    loaded = load_estimator(path, map_location=torch.device("cpu"))
    assert loaded.predict().equals(original.predict())
    fresh = RNNForecaster.load(path)
    assert fresh.update(new).equals(loaded.update(new))


def test_to_moves_module_and_state_together_and_predict_still_works(saved, frames):
    _, path = saved["forecaster"]
    loaded = load_estimator(path).to("cpu")
    assert _devices(loaded) == {"cpu"}
    assert loaded.update(frames[1]).height > 0


def test_the_pyfunc_wrapper_loads_onto_the_asked_device(saved, monkeypatch):
    from recurra.pipelines.pyfunc import ESTIMATOR_ARTIFACT, RecurraModel, serving_device

    _, path = saved["forecaster"]
    monkeypatch.delenv("RECURRA_SERVE_DEVICE", raising=False)
    assert serving_device(None).type == "cpu"             # CPU unless asked
    monkeypatch.setenv("RECURRA_SERVE_DEVICE", "cpu")
    assert serving_device({"device": "auto"}).type == (
        "cuda" if torch.cuda.is_available() else "cpu")  # model_config wins
    model = RecurraModel("forecast")
    model.load_context(types.SimpleNamespace(artifacts={ESTIMATOR_ARTIFACT: str(path)},
                                             model_config={"device": "cpu"}))
    assert _devices(model.estimator_) == {"cpu"}
    from recurra.data.schema import RecurraError
    with pytest.raises(RecurraError, match="device"):
        serving_device({"device": "tpu"})


@pytest.mark.gpu
@needs_cuda
@pytest.mark.parametrize("role", ["forecaster", "detector"])
def test_load_onto_cuda_then_predict_and_update(saved, frames, role):
    original, path = saved[role]
    _, new = frames
    loaded = load_estimator(path, map_location="cuda")
    assert _devices(loaded) == {"cuda"}
    if role == "forecaster":
        forecast = loaded.predict()
        expected = original.predict()
        assert forecast["y_hat"].to_numpy() == pytest.approx(expected["y_hat"].to_numpy(),
                                                              rel=1e-4, abs=1e-4)
        assert loaded.update(new)["y_hat"].is_finite().all()
        assert _devices(loaded) == {"cuda"}
    else:
        scores = loaded.update(new)
        assert scores.height == new.height and scores["score"].is_finite().all()
        assert _devices(loaded) == {"cuda"}


def test_an_ensemble_loads_every_neural_member_onto_the_device(frames, tmp_path):
    from recurra.anomaly import EnsembleConfig, EnsembleDetector

    config = EnsembleConfig(members=("forecast_error", "rolling_zscore"), configs=(
        ForecastErrorConfig(window=8, network=NetworkConfig(hidden_size=4),
                            train=replace(DETECTOR_TRAIN, max_epochs=1),
                            threshold=ThresholdConfig(kind="likelihood")),
        ZScoreConfig(window=8, threshold=ThresholdConfig(kind="likelihood"))))
    ensemble = EnsembleDetector(config).fit(frames[0])
    ensemble.update(frames[1].head(4))
    loaded = load_estimator(ensemble.save(tmp_path / "e"), map_location="cpu")
    neural = loaded.members_[0]
    assert _devices(neural) == {"cpu"} and neural.device_.type == "cpu"


def test_to_the_device_it_is_on_walks_no_state_and_a_real_move_moves_it(saved):
    _, path = saved["forecaster"]
    loaded = load_estimator(path, map_location="cpu")
    state = loaded.state_
    assert loaded.to("cpu").state_ is state                 # already there: nothing rebuilt
    loaded.to(torch.device("meta"))                          # a real change of device
    assert _devices(loaded) == {"meta"} and loaded.state_ is not state
