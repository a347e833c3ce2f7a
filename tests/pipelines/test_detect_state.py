"""The detect step's cached champion state: reused from memory only while the folder on disk
holds the save this process made; in-place saves and a crashed swap are both seen."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from recurra.nn.persistence import save_estimator
from recurra.pipelines import detect_tasks, runs
from tests.nn.test_persistence import _Config, _Estimator

GROUP = SimpleNamespace(model_name=lambda role: f"demo-{role}")


def _estimator(value: float) -> _Estimator:
    estimator = _Estimator(_Config())
    estimator.state_ = {f"s{i}": np.full(2, value) for i in range(10)}
    return estimator


@pytest.fixture
def folder(tmp_path, monkeypatch):
    monkeypatch.setattr(runs, "state_dir", lambda: tmp_path)
    monkeypatch.setattr(detect_tasks, "_KEPT", {})
    return tmp_path / "demo-detector" / "v1"


def _cached() -> _Estimator:
    return detect_tasks._cached("detector", GROUP, (None, "1"))[0]


def test_the_kept_estimator_is_reused_while_the_folder_holds_its_save(folder):
    mine = _estimator(1.0)
    save_estimator(mine, folder)
    detect_tasks._keep(folder, mine)
    assert _cached() is mine
    mine.state_["s0"] += 1  # the run advances it, saves it in place and keeps it
    save_estimator(mine, folder)
    detect_tasks._keep(folder, mine)
    assert _cached() is mine


def test_a_save_by_someone_else_is_read_from_disk(folder):
    mine = _estimator(1.0)
    save_estimator(mine, folder)
    detect_tasks._keep(folder, mine)
    save_estimator(_estimator(5.0), folder)  # another process, in place
    loaded = _cached()
    assert loaded is not mine and loaded.state_["s3"][0] == 5.0


def test_a_save_that_died_mid_swap_leaves_the_previous_state_for_the_next_run(folder):
    save_estimator(_estimator(2.0), folder)
    folder.rename(folder.with_name(".v1.old"))  # as a save killed between its two renames
    assert _cached().state_["s0"][0] == 2.0
