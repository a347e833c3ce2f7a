"""The detector battery over EVERY detector kind: the registry's five, the return z-score and
the ensemble. Each follows the Detector protocol (and a single detector holds an ErrorModel),
fit returns self, the not-fitted error names the class, and a save/load round-trip in the
middle of a stream scores the same and continues the stream identically, and ``update``
returns the scores of the new rows and records its path.  Also: the anomaly
package keeps to at most one level of project inheritance."""

from __future__ import annotations

import copy
import importlib
import inspect
import pkgutil

import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

import recurra.anomaly
from recurra.anomaly import (
    DETECTORS,
    BaseDetector,
    Detector,
    DetectorConfig,
    EnsembleConfig,
    EnsembleDetector,
    ErrorModel,
    ThresholdConfig,
)
from recurra.anomaly.returns import ReturnZScoreDetector
from recurra.data.schema import SCORE_SCHEMA, SERIES_ID, TIMESTAMP, NotFittedError, contract
from recurra.nn.persistence import load_estimator
from tests.anomaly.configs import config_for
from tests.conftest import make_frame

SPOT = ThresholdConfig(kind="spot", level=0.9, risk=0.01)
LIKELY = ThresholdConfig(kind="likelihood", likelihood_window=5, likelihood_period=10,
                         spatial_tolerance=0.2)
MEMBERS = ("forecast_error", "isolation_forest", "rolling_zscore")
ENSEMBLE = EnsembleConfig(members=MEMBERS,
                          configs=tuple(config_for(DETECTORS[m], LIKELY) for m in MEMBERS))
SINGLE = {**DETECTORS, "return_zscore": ReturnZScoreDetector}
KINDS = {**{name: (lambda cls=cls: cls(config_for(cls, SPOT))) for name, cls in SINGLE.items()},
         "ensemble": lambda: EnsembleDetector(ENSEMBLE)}


@pytest.fixture(scope="module")
def frames() -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The whole frame, its training part and two later stream chunks."""
    frame = make_frame(n_series=2, n_steps=120, n_channels=2, gap_share=0.05, seed=4)
    stamps = frame["timestamp"].unique().sort()
    return (frame, frame.filter(pl.col("timestamp") < stamps[80]),
            frame.filter(pl.col("timestamp").is_between(stamps[80], stamps[99])),
            frame.filter(pl.col("timestamp") >= stamps[100]))


@pytest.fixture(scope="module", params=sorted(KINDS))
def fitted(request, frames):
    torch.set_num_threads(1)
    detector = KINDS[request.param]()
    return request.param, detector, detector.fit(frames[1])


def test_fit_returns_self_and_follows_the_protocol(fitted):
    _, detector, returned = fitted
    assert returned is detector
    assert isinstance(detector, Detector)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_unfitted_follows_the_protocol_and_names_its_class(name, frames):
    detector = KINDS[name]()
    assert isinstance(detector, Detector)
    if isinstance(detector, BaseDetector):
        assert isinstance(detector.error_model, ErrorModel)
    for call in (lambda: detector.score(frames[0]), lambda: detector.update(frames[2])):
        with pytest.raises(NotFittedError, match=type(detector).__name__):
            call()


def test_save_load_mid_stream_scores_the_same_and_continues_the_stream(fitted, frames,
                                                                        tmp_path, tree_layout):
    name, detector, _ = fitted
    whole, _, first, second = frames
    detector.reset()
    detector.update(first)                              # a stream state worth saving
    loaded = type(detector).load(detector.save(tmp_path / name))
    assert type(loaded) is type(detector) and loaded.config == detector.config
    assert_frame_equal(loaded.score(whole), detector.score(whole))
    assert_frame_equal(loaded.update(second), detector.update(second), check_exact=True)
    assert_frame_equal(loaded.predict(whole), detector.predict(whole))
    again = load_estimator(tmp_path / name)             # the model-agnostic loader too
    assert type(again) is type(detector)


@pytest.mark.parametrize("name", sorted(KINDS))
def test_a_contract_frame_is_checked_once_where_it_enters(name, frames, contract_checks):
    whole, train = contract(frames[0]), contract(frames[1], name="train")
    contract_checks.clear()
    detector = KINDS[name]().fit(train)
    detector.score(whole)
    detector.predict(whole)
    assert contract_checks == []  # fit, score and predict derive from it without a check
    KINDS[name]().fit(frames[1]).score(frames[0])
    assert contract_checks == ["train", "frame"]  # plain frames: one full check each


def test_update_returns_the_scores_of_the_new_rows_and_its_path(fitted, frames):
    """The return convention: ``update(new_rows)`` gives the scores of exactly those rows
    (sorted by series and time) and records the path it took."""
    name, detector, _ = fitted
    _, _, first, second = frames
    detector = copy.deepcopy(detector)
    detector.reset()
    detector.update(first)                              # per series: no stream state yet
    assert detector.last_update_path_.startswith("update: 2 series")
    step = second.filter(pl.col("timestamp") == second["timestamp"].min())
    scores = detector.update(step)
    keys = step.select(SERIES_ID, TIMESTAMP).unique().sort([SERIES_ID, TIMESTAMP])
    assert scores.select(SERIES_ID, TIMESTAMP).equals(keys)
    assert {k: scores.schema[k] for k in SCORE_SCHEMA} == SCORE_SCHEMA
    batched = name != "return_zscore"                   # the one kind without a fleet
    assert detector.last_update_path_ == ("fleet: 2 series x 1 steps" if batched
                                          else "update: 2 series (2 no batched form)")


@pytest.mark.parametrize("name", sorted(SINGLE))
def test_each_detector_declares_its_own_config_class(name):
    cls = SINGLE[name]
    assert cls.config_class is not DetectorConfig
    assert issubclass(cls.config_class, DetectorConfig)
    assert type(cls().config) is cls.config_class


def _project_classes():
    for info in pkgutil.iter_modules(recurra.anomaly.__path__):
        module = importlib.import_module(f"recurra.anomaly.{info.name}")
        for _, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ == module.__name__:
                yield cls


def test_at_most_one_level_of_project_inheritance():
    deep = {cls.__qualname__: [base.__qualname__ for base in cls.__mro__[1:]
                               if base.__module__.startswith("recurra.")]
            for cls in _project_classes()}
    assert {name: bases for name, bases in deep.items() if len(bases) > 1} == {}
    assert "BaseDetector" in deep and deep["GRUDAutoencoder"] == ["BaseDetector"]
