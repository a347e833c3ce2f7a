from dataclasses import dataclass

import pytest

from data.persistence import load_estimator, save_estimator
from data.schema import RecurraError


@dataclass(frozen=True)
class _Config:
    scale: float = 2.0
    lags: tuple[int, ...] = (1, 24)


class _Estimator:
    def __init__(self, config: _Config) -> None:
        self.config = config
        self.state_ = None

    def _get_state(self):
        return {"state": self.state_}

    def _set_state(self, state):
        self.state_ = state["state"]


class _Other(_Estimator):
    pass


def test_round_trip_restores_config_and_state(tmp_path):
    estimator = _Estimator(_Config(scale=3.0))
    estimator.state_ = [1.0, 2.0]
    loaded = load_estimator(save_estimator(estimator, tmp_path / "model"))
    assert type(loaded) is _Estimator
    assert loaded.config == _Config(scale=3.0, lags=(1, 24))
    assert loaded.state_ == [1.0, 2.0]


def test_saving_again_replaces_the_folder(tmp_path):
    estimator = _Estimator(_Config())
    estimator.state_ = 1
    save_estimator(estimator, tmp_path / "model")
    estimator.state_ = 2
    save_estimator(estimator, tmp_path / "model")
    assert load_estimator(tmp_path / "model").state_ == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_load_checks_the_expected_class_and_the_folder(tmp_path):
    save_estimator(_Estimator(_Config()), tmp_path / "model")
    with pytest.raises(RecurraError, match="holds a _Estimator, not a _Other"):
        load_estimator(tmp_path / "model", expected=_Other)
    with pytest.raises(RecurraError, match="not a saved Recurra model"):
        load_estimator(tmp_path)
