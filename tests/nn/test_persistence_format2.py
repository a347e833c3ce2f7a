"""Models saved in format 2 by the code before format 3 load and answer as they did."""

from __future__ import annotations

import shutil
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recurra.anomaly import EnsembleDetector
from recurra.anomaly.detectors import ReconstructionDetector
from recurra.forecasting.rnn import RNNForecaster

SAVED = Path(__file__).parents[1] / "fixtures" / "format2"


def _read(name: str) -> pl.DataFrame:
    return pl.read_parquet(SAVED / f"{name}.parquet")


def test_a_format_2_forecaster_predicts_and_updates_as_it_did(tmp_path):
    folder = shutil.copytree(SAVED / "rnn_forecaster", tmp_path / "model")
    assert (folder / "state.pkl").is_file()
    forecaster = RNNForecaster.load(folder)
    assert_frame_equal(forecaster.predict(), _read("rnn_predict"))
    assert_frame_equal(forecaster.update(_read("forecast_new")),
                       _read("rnn_update_predict"))


@pytest.mark.parametrize(("cls", "folder", "prefix"), [
    (ReconstructionDetector, "lstm_ae_detector", "lstm_ae"),
    (EnsembleDetector, "ensemble", "ensemble")])
def test_a_format_2_detector_scores_and_updates_as_it_did(cls, folder, prefix):
    detector = cls.load(SAVED / folder)
    new = _read("detect_new")
    assert_frame_equal(detector.score(new), _read(f"{prefix}_score"))
    assert_frame_equal(detector.update(new), _read(f"{prefix}_update"))


def test_a_format_2_isolation_forest_holding_the_scikit_learn_forest_loads(tmp_path):
    import json

    import torch

    from recurra.anomaly import ForestConfig, IsolationForestDetector, ThresholdConfig
    from recurra.nn._persistence_legacy import split_tensors
    from tests.conftest import make_frame

    frame = make_frame(n_series=1, n_steps=60, n_channels=2, seed=1)
    config = ForestConfig(window=8, n_estimators=5,
                          threshold=ThresholdConfig(kind="quantile", level=0.95))
    flat = {"window": 8, "n_estimators": 5, "threshold": "quantile", "level": 0.95}  # format 2
    detector = IsolationForestDetector(config).fit(frame)
    state = {**detector._get_state(), "model": {"forest": detector.model_}}  # as format 2 did
    folder = tmp_path / "forest"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({
        "format_version": 2, "class": "recurra.anomaly.baselines.IsolationForestDetector",
        "config_class": "recurra.anomaly.base.DetectorConfig",
        "config": flat}))
    tensors, skeleton = split_tensors(state)
    torch.save(tensors, folder / "state.pt")
    (folder / "state.pkl").write_bytes(skeleton)
    loaded = IsolationForestDetector.load(folder)
    assert type(loaded.model_).__name__ == "IsolationForest"
    assert_frame_equal(loaded.score(frame), detector.score(frame))
    again = IsolationForestDetector.load(loaded.save(tmp_path / "format3"))
    assert again.model_ is None  # format 3 keeps the flat node arrays only
    assert_frame_equal(again.score(frame), detector.score(frame))
