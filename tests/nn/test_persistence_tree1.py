"""Models saved in format 3 with state tree version 1 (before columnar nodes) load and
answer as they did, and answer the same again after a save in today's tree version."""

from __future__ import annotations

import json
from pathlib import Path

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recurra.anomaly.detectors import ForecastErrorDetector
from recurra.forecasting.rnn import RNNForecaster
from recurra.nn.state_tree import TREE_VERSION

SAVED = Path(__file__).parents[1] / "fixtures" / "format3_tree1"


def _read(name: str) -> pl.DataFrame:
    return pl.read_parquet(SAVED / f"{name}.parquet")


def _tree_version(folder: Path) -> int:
    return json.loads((folder / "state.json").read_text())["tree_version"]


@pytest.mark.parametrize("resave", [False, True])
def test_a_tree_1_detector_scores_and_updates_as_it_did(tmp_path, resave):
    assert _tree_version(SAVED / "spot_detector") == 1
    detector = ForecastErrorDetector.load(SAVED / "spot_detector")
    if resave:
        folder = detector.save(tmp_path / "again")
        assert _tree_version(folder) == TREE_VERSION
        detector = ForecastErrorDetector.load(folder)
    new = _read("new")
    assert_frame_equal(detector.score(new), _read("spot_score"))
    assert_frame_equal(detector.update(new), _read("spot_update"))


@pytest.mark.parametrize("resave", [False, True])
@pytest.mark.parametrize("name", ["stateful", "conformal"])
def test_a_tree_1_forecaster_predicts_and_updates_as_it_did(tmp_path, name, resave):
    folder = SAVED / f"{name}_forecaster"
    assert _tree_version(folder) == 1
    forecaster = RNNForecaster.load(folder)
    if resave:
        forecaster = RNNForecaster.load(forecaster.save(tmp_path / "again"))
    assert_frame_equal(forecaster.predict(), _read(f"{name}_predict"))
    assert_frame_equal(forecaster.update(_read("new")),  # update returns that forecast
                       _read(f"{name}_update_predict"))
