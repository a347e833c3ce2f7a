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
    assert_frame_equal(forecaster.update(_read("forecast_new")).predict(),
                       _read("rnn_update_predict"))


@pytest.mark.parametrize(("cls", "folder", "prefix"), [
    (ReconstructionDetector, "lstm_ae_detector", "lstm_ae"),
    (EnsembleDetector, "ensemble", "ensemble")])
def test_a_format_2_detector_scores_and_updates_as_it_did(cls, folder, prefix):
    detector = cls.load(SAVED / folder)
    new = _read("detect_new")
    assert_frame_equal(detector.score(new), _read(f"{prefix}_score"))
    assert_frame_equal(detector.update(new), _read(f"{prefix}_update"))
