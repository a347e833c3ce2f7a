"""Models and configs written before the modules moved into the ``recurra`` package load."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import cloudpickle
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recurra._legacy import legacy_module_names, modern_path
from recurra.anomaly import RollingZScoreDetector
from recurra.forecasting import RNNForecaster
from recurra.pipelines.pyfunc import RecurraModel

SAVED = Path(__file__).parent / "fixtures" / "before_package"


def test_old_dotted_paths_map_into_recurra_and_others_are_left_alone():
    assert modern_path("forecasting.rnn.RNNForecaster") == "recurra.forecasting.rnn.RNNForecaster"
    assert modern_path("recurra.data.store") == "recurra.data.store"
    assert modern_path("datasets.load") == "datasets.load"  # a prefix is not a package


def test_a_forecaster_saved_under_the_old_paths_loads_and_forecasts_as_it_did(tmp_path):
    folder = shutil.copytree(SAVED / "rnn_forecaster", tmp_path / "model")
    assert '"forecasting.rnn.RNNForecaster"' in (folder / "meta.json").read_text()
    model = RNNForecaster.load(folder)
    frame = pl.read_parquet(SAVED / "frame.parquet")
    assert_frame_equal(model.predict(frame), pl.read_parquet(SAVED / "rnn_forecast.parquet"))
    model.save(tmp_path / "again")  # saved again: the new paths
    meta = (tmp_path / "again" / "meta.json").read_text()
    assert '"recurra.forecasting.rnn.RNNForecaster"' in meta


def test_a_detector_saved_under_the_old_paths_scores_as_it_did():
    detector = RollingZScoreDetector.load(SAVED / "zscore_detector")
    frame = pl.read_parquet(SAVED / "frame.parquet")
    assert_frame_equal(detector.score(frame), pl.read_parquet(SAVED / "zscore_scores.parquet"))


def test_an_old_mlflow_python_model_unpickles_as_the_recurra_class_and_leaves_no_alias():
    blob = (SAVED / "recurra_model.pkl").read_bytes()
    assert b"pipelines.pyfunc" in blob and b"recurra" not in blob
    with pytest.raises(ModuleNotFoundError, match="pipelines"):
        cloudpickle.loads(blob)  # what MLflow alone would do
    with legacy_module_names():
        model = cloudpickle.loads(blob)
    assert type(model) is RecurraModel and model.task == "forecast"
    assert "pipelines" not in sys.modules and "pipelines.pyfunc" not in sys.modules
    import recurra.pipelines.pyfunc

    assert recurra.pipelines.pyfunc.__spec__.name == "recurra.pipelines.pyfunc"


def test_a_package_of_the_callers_wins_over_the_alias(tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "__init__.py").write_text("MINE = True\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "data", raising=False)
    with legacy_module_names():
        import data
    assert data.MINE
    monkeypatch.delitem(sys.modules, "data")
