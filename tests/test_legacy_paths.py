"""Models and configs written before the modules moved into the ``recurra`` package load."""

from __future__ import annotations

import io
import pickle
import shutil
import sys
from pathlib import Path

import cloudpickle
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recurra import _legacy
from recurra._legacy import legacy_module_names, modern_path
from recurra.anomaly import RollingZScoreDetector
from recurra.forecasting import RNNForecaster
from recurra.pipelines.pyfunc import RecurraModel

SAVED = Path(__file__).parent / "fixtures" / "before_package"
COMPOSED = Path(__file__).parent / "fixtures" / "before_composition"


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


@pytest.mark.parametrize("name", ["forecast_error", "grud_ae", "isolation_forest",
                                  "return_zscore"])
def test_a_detector_saved_before_the_composition_scores_and_streams_as_it_did(name):
    from recurra.nn.persistence import load_estimator

    frame = pl.read_parquet(COMPOSED / "frame.parquet")
    later = frame.filter(pl.col("timestamp") >= frame["timestamp"].unique().sort()[80])
    detector = load_estimator(COMPOSED / name)
    assert_frame_equal(detector.score(frame), pl.read_parquet(COMPOSED / f"{name}_scores.parquet"))
    assert_frame_equal(detector.update(later),
                       pl.read_parquet(COMPOSED / f"{name}_update.parquet"))


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


@pytest.mark.parametrize(("old", "new"), [
    ("forecasting.train.TrainConfig", "recurra.nn.train.TrainConfig"),
    ("recurra.forecasting.modules.EncoderSpec", "recurra.nn.modules.EncoderSpec"),
    ("data.persistence", "recurra.nn.persistence"),
    ("recurra.forecasting.rnn.RNNForecaster", "recurra.forecasting.rnn.RNNForecaster"),
    ("recurra.forecasting.trainer", "recurra.forecasting.trainer"),  # not a moved module
])
def test_modules_moved_to_nn_resolve_to_their_new_place(old, new):
    assert _legacy.modern_path(old) == new


def test_pickle_naming_a_class_at_its_pre_nn_path_loads():
    from recurra.nn.modules import EncoderSpec

    spec = EncoderSpec(cell="gru", input_size=2, hidden_size=4)
    data = pickle.dumps(spec, protocol=0).replace(  # protocol 0: names end at a newline
        b"recurra.nn.modules", b"recurra.forecasting.modules")
    assert b"recurra.forecasting.modules" in data
    with pytest.raises(ModuleNotFoundError):
        pickle.loads(data)
    assert _legacy.Unpickler(io.BytesIO(data)).load() == spec
    with _legacy.legacy_module_names():
        assert pickle.loads(data) == spec
