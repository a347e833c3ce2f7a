"""Short demo output: one progress bar per long step, and no MLflow chatter by default."""

from __future__ import annotations

import io

from recurra.pipelines import mlflow_setup, progress


def test_advance_moves_the_active_bar_and_is_a_no_op_without_one(monkeypatch):
    progress.advance("train", 3)                      # no bar: nothing happens
    monkeypatch.setattr(progress, "enabled", lambda: True)
    with progress.step("train", "train: models", total=4):
        bar, task, _ = progress._ACTIVE["train"]
        progress.advance("train", 3, label="nab")
        progress.advance("detect", 1)                 # another step's name: ignored
        current = bar.tasks[0]
        assert (current.completed, current.total) == (3, 4)
        assert "nab" in current.description
    assert "train" not in progress._ACTIVE


def test_no_bar_off_a_terminal_or_when_switched_off(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())  # a log file, not a terminal
    assert not progress.enabled()
    monkeypatch.setenv("RECURRA_PROGRESS", "0")
    assert not progress.enabled()
    with progress.step("train", "train", total=2):
        assert "train" not in progress._ACTIVE


def test_mlflow_prints_are_quiet_by_default_and_back_at_info(monkeypatch, capsys):
    from mlflow.utils import logging_utils

    monkeypatch.delenv("MLFLOW_LOGGING_LEVEL", raising=False)
    mlflow_setup.quiet_output()
    logging_utils.eprint("Successfully registered model 'x'.")
    assert "Successfully" not in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "INFO")
    mlflow_setup.quiet_output()
    logging_utils.eprint("Successfully registered model 'x'.")
    assert "Successfully" in capsys.readouterr().err
    monkeypatch.setenv("MLFLOW_LOGGING_LEVEL", "WARNING")
    mlflow_setup.quiet_output()
