"""Saving over a saved model is atomic: a crash at any step of a save leaves the previous
save loadable (or the new one, once committed), and the next save cleans up after it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from recurra.nn import persistence
from recurra.nn.persistence import load_estimator, save_estimator, saved_folder
from tests.nn.test_persistence import _Config, _Estimator

ROOT = Path(__file__).parents[2]


class _Crash(Exception):
    pass


def _estimator(value: float, config: _Config | None = None) -> _Estimator:
    estimator = _Estimator(config or _Config())
    estimator.state_ = {"series": {f"s{i}": np.full(3, value + i) for i in range(10)},
                        "runs": value}
    return estimator


def _value(folder: Path) -> float:
    return load_estimator(folder).state_["runs"]


def _crash_on(monkeypatch, what: str, call: int) -> None:
    """Make the ``call``-th ``os.replace`` / durable file write of persistence raise."""
    calls = {"n": 0}

    def counting(real):
        def wrapped(*args, **kwargs):
            calls["n"] += 1
            if calls["n"] == call:
                raise _Crash(what)
            return real(*args, **kwargs)
        return wrapped

    if what == "replace":
        monkeypatch.setattr(persistence.os, "replace", counting(os.replace))
    else:
        monkeypatch.setattr(persistence, "_write_durably",
                            counting(persistence._write_durably))


def test_saving_again_replaces_the_state_in_place_and_removes_the_old_weights(tmp_path):
    folder = save_estimator(_estimator(1.0), tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "state.json",
                                                        "weights.pt"]
    meta = (folder / "meta.json").stat().st_ino
    save_estimator(_estimator(2.0), folder)
    names = sorted(p.name for p in folder.iterdir())
    assert names[:2] == ["meta.json", "state.json"] and len(names) == 3
    assert names[2].startswith("weights-") and (folder / "meta.json").stat().st_ino == meta
    assert _value(folder) == 2.0
    before = (folder / "state.json").stat().st_ino
    save_estimator(_estimator(2.0), folder)  # nothing changed: nothing is written
    assert (folder / "state.json").stat().st_ino == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_only_the_tree_changes_when_the_arrays_do_not(tmp_path):
    folder = save_estimator(_estimator(1.0), tmp_path / "model")
    estimator = _estimator(1.0)
    estimator.state_["note"] = "tree only"
    save_estimator(estimator, folder)
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "state.json",
                                                        "weights.pt"]
    assert load_estimator(folder).state_["note"] == "tree only"


@pytest.mark.parametrize(("what", "call"), [("write", 1), ("replace", 1), ("replace", 2)])
def test_a_crash_during_an_in_place_save_leaves_the_previous_state(tmp_path, monkeypatch,
                                                                   what, call):
    folder = save_estimator(_estimator(1.0), tmp_path / "model")
    save_estimator(_estimator(2.0), folder)
    _crash_on(monkeypatch, what, call)
    with pytest.raises(_Crash):
        save_estimator(_estimator(3.0), folder)
    assert _value(folder) == 2.0  # state.json not replaced yet: the previous save
    monkeypatch.undo()
    save_estimator(_estimator(4.0), folder)
    assert _value(folder) == 4.0
    assert len(list(folder.iterdir())) == 3  # leftovers of the crash are gone


def test_a_crash_after_the_commit_leaves_the_new_state(tmp_path, monkeypatch):
    folder = save_estimator(_estimator(1.0), tmp_path / "model")
    monkeypatch.setattr(Path, "unlink", lambda self, missing_ok=False: _raise())
    with pytest.raises(_Crash):
        save_estimator(_estimator(2.0), folder)  # crashes removing the old weights
    monkeypatch.undo()
    assert _value(folder) == 2.0
    save_estimator(_estimator(3.0), folder)
    assert _value(folder) == 3.0 and len(list(folder.iterdir())) == 3


def _raise():
    raise _Crash("unlink")


def test_extra_is_committed_with_the_state_it_describes(tmp_path, monkeypatch):
    folder = save_estimator(_estimator(1.0), tmp_path / "model", extra={"consumed": {"a": 1}})
    assert persistence.saved_extra(folder) == {"consumed": {"a": 1}}
    save_estimator(_estimator(2.0), folder, extra={"consumed": {"a": 2}})  # in place
    assert persistence.saved_extra(folder) == {"consumed": {"a": 2}}
    _crash_on(monkeypatch, "replace", 2)  # the weights moved in, state.json not replaced
    with pytest.raises(_Crash):
        save_estimator(_estimator(3.0), folder, extra={"consumed": {"a": 3}})
    monkeypatch.undo()
    assert _value(folder) == 2.0 and persistence.saved_extra(folder) == {"consumed": {"a": 2}}
    save_estimator(_estimator(4.0), folder)  # a save without extra drops it
    assert persistence.saved_extra(folder) == {}
    assert persistence.saved_extra(tmp_path / "absent") == {}


def test_every_file_and_the_folder_are_flushed_before_the_rename_publishes_them(
        tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(persistence.os, "fsync",
                        lambda fd: (events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                    real_fsync(fd)))
    monkeypatch.setattr(persistence.os, "replace",
                        lambda src, dst: (events.append(("replace", str(src))),
                                          real_replace(src, dst)))
    folder = save_estimator(_estimator(1.0), tmp_path / "model")
    events.clear()
    save_estimator(_estimator(2.0), folder)  # in place: new weights, then state.json
    kinds = [kind for kind, _ in events]
    assert kinds == ["fsync", "replace", "fsync", "replace", "fsync"]
    assert events[0][1] == events[1][1] and events[2][1] == events[3][1]  # file before rename
    assert events[4][1] == str(folder)  # then the folder holding the renamed entries
    events.clear()
    save_estimator(_estimator(3.0, _Config(scale=5.0)), folder)  # a new folder, swapped in
    synced = [path for kind, path in events if kind == "fsync"]
    assert sum(Path(p).name in ("meta.json", "weights.pt", "state.json") for p in synced) == 3
    assert synced[-1] == str(tmp_path) and events[-1][0] == "fsync"


@pytest.mark.parametrize("call", [1, 2])
def test_a_crash_while_swapping_in_a_new_folder_leaves_a_loadable_save(tmp_path, monkeypatch,
                                                                       call):
    folder = save_estimator(_estimator(1.0), tmp_path / "model")
    other = _Config(scale=5.0)  # another config: the whole folder is written and swapped
    _crash_on(monkeypatch, "replace", call)
    with pytest.raises(_Crash):
        save_estimator(_estimator(2.0, other), folder)
    monkeypatch.undo()
    # call 1: nothing moved; call 2: the previous folder moved aside, the new one not in
    assert saved_folder(folder) == (folder if call == 1 else tmp_path / ".model.old")
    assert _value(folder) == 1.0
    save_estimator(_estimator(3.0, replace(other, scale=6.0)), folder)
    assert _value(folder) == 3.0 and load_estimator(folder).config.scale == 6.0
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".saving-")) \
        == ["model"]


def test_a_save_killed_at_any_moment_leaves_a_loadable_model(tmp_path):
    folder = tmp_path / "model"
    save_estimator(_estimator(0.0), folder)
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from recurra.nn.persistence import save_estimator
        from tests.nn.test_persistence_crash import _estimator
        for run in range(1, 10 ** 6):
            save_estimator(_estimator(float(run)), {str(folder)!r})
            print(run, flush=True)
    """)
    child = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                             text=True, cwd=ROOT)
    try:
        for _ in range(40):  # let it save a few dozen times, then kill it mid-save
            child.stdout.readline()
        time.sleep(0.0137)
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    assert _value(folder) >= 40.0
    save_estimator(_estimator(-1.0), folder)
    assert _value(folder) == -1.0 and len(list(folder.iterdir())) == 3
