"""The shared pipeline as small functions (tiny hand-computed arrays) and the composition:
any object of the ErrorModel protocol, held by a BaseDetector, gets the whole pipeline."""

from __future__ import annotations

from typing import Any

import numpy as np
import polars as pl
from polars.testing import assert_frame_equal

from recurra.anomaly import BaseDetector, DetectorConfig, ErrorModel, ThresholdConfig
from recurra.anomaly.calibration import Calibration, calibrate, with_calibration
from recurra.anomaly.pipeline import model_errors, point_error, threshold_step
from recurra.anomaly.stream import Chunk, StreamState, pad_left, prepare_chunk, take_last
from recurra.data.arrays import SeriesArrays
from tests.conftest import make_frame


def _arrays(values: list[list[float]], hours: list[int]) -> SeriesArrays:
    values = np.array(values, dtype=float)
    observed = np.isfinite(values)
    stamps = np.array([np.datetime64("2024-01-01T00:00", "us") + np.timedelta64(h, "h")
                       for h in hours])
    return SeriesArrays("s", ("a", "b"), stamps, values, observed, np.zeros_like(values),
                        3600.0)


def test_point_error_is_the_mean_over_observed_channels():
    errors = np.array([[1.0, 3.0], [4.0, 9.0], [0.0, 0.0]])
    observed = np.array([[True, True], [True, False], [False, False]])
    np.testing.assert_array_equal(point_error(errors, observed), [2.0, 4.0, np.nan])


def test_prepare_chunk_normalises_fills_and_carries_deltas_across_chunks():
    mean, std = np.array([1.0, 0.0]), np.array([2.0, 1.0])
    first, state = prepare_chunk(_arrays([[3.0, 1.0], [np.nan, 2.0]], [0, 1]), StreamState(),
                                 mean, std, 3600.0, tail_length=1)
    np.testing.assert_array_equal(first.filled, [[1.0, 1.0], [1.0, 2.0]])
    np.testing.assert_array_equal(first.delta, [[0.0, 0.0], [1.0, 1.0]])
    second, state = prepare_chunk(_arrays([[5.0, np.nan]], [3]), state, mean, std, 3600.0,
                                  tail_length=1)
    assert len(second.elapsed) == 2                     # the carried tail + the new row
    np.testing.assert_array_equal(second.delta[-1], [3.0, 2.0])   # a: seen at 0, b: at 1
    np.testing.assert_array_equal(second.filled[-1], [2.0, 2.0])
    assert state.n_rows == 3 and len(state.tail.elapsed) == 1


def test_pad_left_and_take_last():
    chunk = Chunk(np.array(["2024-01-01"], "datetime64[us]"), np.ones((1, 1)), np.ones((1, 1)),
                  np.ones((1, 1), bool), np.zeros((1, 1)), np.array([5.0]))
    padded = pad_left(chunk, 2)
    assert padded.observed[:, 0].tolist() == [False, False, True]
    assert padded.elapsed.tolist() == [5.0, 5.0, 5.0]
    assert take_last(padded, 1).observed[:, 0].tolist() == [True]
    assert len(take_last(padded, 0).elapsed) == 0


def test_calibrate_and_threshold_step_quantile():
    config = ThresholdConfig(kind="quantile", level=0.5)
    cal = calibrate(Calibration(np.zeros(1), np.ones(1), 1.0), np.array([1.0, 2.0, 3.0]),
                    np.array([[0.0], [1.0], [np.nan]]), config)
    assert (cal.center, cal.low.tolist(), cal.high.tolist()) == (2.0, [0.0], [1.0])
    state = with_calibration(StreamState(), cal)
    score = (np.array([2.0, 100.0]) - cal.center) / cal.spread
    score, flags, used = threshold_step(config, cal, state, score)
    assert flags.tolist() == [False, True] and np.all(used == cal.threshold)


class ConstantErrors:
    """A made-up error model: each cell's error is its squared normalised value."""

    tail_length = 0
    streaming = True
    float32_inputs = False

    def __init__(self, config: DetectorConfig) -> None:
        self.config = config
        self.fitted_on: list[str] = []

    def fit(self, chunks: list[Chunk], series_ids: list[str]) -> None:
        self.fitted_on = list(series_ids)

    def errors(self, chunk: Chunk, n_new: int, model_state: Any) -> tuple[np.ndarray, Any]:
        count = (model_state or 0) + n_new
        return np.nan_to_num(chunk.values[-n_new:]) ** 2, count

    def get_state(self) -> dict[str, Any]:
        return {"fitted_on": self.fitted_on}

    def set_state(self, state: dict[str, Any], n_channels: int) -> None:
        self.fitted_on = state["fitted_on"]


class SquaredValueDetector(BaseDetector):  # its config is the common base DetectorConfig
    error_model_factory = staticmethod(ConstantErrors)


def test_any_error_model_gets_the_whole_pipeline(tmp_path):
    assert isinstance(ConstantErrors(DetectorConfig()), ErrorModel)
    frame = make_frame(n_series=2, n_steps=80, gap_share=0.1, seed=3)
    detector = SquaredValueDetector(DetectorConfig(
        window=4, threshold=ThresholdConfig(kind="quantile"))).fit(frame)
    assert detector.error_model.fitted_on == ["s0", "s1"]
    batch = detector.score(frame)
    detector.reset()
    cut = frame["timestamp"].unique().sort()[30]
    streamed = pl.concat([detector.update(frame.filter(pl.col("timestamp") < cut)),
                          detector.update(frame.filter(pl.col("timestamp") >= cut))])
    assert_frame_equal(streamed.sort(["series_id", "timestamp"]),
                       batch.sort(["series_id", "timestamp"]))
    assert detector.state_["s0"].model_state == 80         # the model state is carried
    loaded = SquaredValueDetector.load(detector.save(tmp_path / "d"))
    assert loaded.error_model.fitted_on == ["s0", "s1"]


def test_model_errors_zero_unobserved_cells():
    model = ConstantErrors(DetectorConfig())
    chunk = Chunk(np.zeros(2, "datetime64[us]"), np.array([[2.0, 3.0], [np.nan, 1.0]]),
                  np.zeros((2, 2)), np.array([[True, False], [False, True]]), np.zeros((2, 2)),
                  np.zeros(2))
    errors, state = model_errors(model, chunk, 2, None, 2)
    np.testing.assert_array_equal(errors, [[4.0, 0.0], [0.0, 1.0]])
    assert state == 2
    assert model_errors(model, chunk, 0, 7, 2)[0].shape == (0, 2)
