"""Incremental detect (recurra.pipelines.incremental through tasks.detect_group), without Prefect or
MLflow: a fake registry hands out the champions.  A run reads only the open forecasts (not
the forecast history), the fleets carry the models, and a catch-up after missed runs gives
the scores and forecasts of runs on time."""

from __future__ import annotations

import copy
import datetime as dt
import json

import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recurra.anomaly.baselines import RollingZScoreDetector, ZScoreConfig
from recurra.anomaly.config import ThresholdConfig
from recurra.data.store import Store
from recurra.forecasting.config import EncoderConfig, ForecasterConfig, TBPTTConfig, TrainConfig
from recurra.forecasting.rnn import RNNForecaster
from recurra.pipelines import runs, tasks
from recurra.pipelines.config import GroupConfig, ModelConfig, MonitoringConfig, PipelineConfig
from tests.conftest import make_frame

N_TRAIN, N_NEW, HORIZON = 120, 6, 4


class FakeRegistry:
    def __init__(self, champions: dict[str, object]) -> None:
        self.champions = champions

    def champion(self, name: str):
        return (copy.deepcopy(self.champions[name]), "1") if name in self.champions else None

    def log_metrics(self, group: str, task: str, metrics: dict) -> None:
        del group, task, metrics


class CountingStore:
    """The store, counting the rows that table reads hand to Python."""

    def __init__(self, store: Store) -> None:
        self.store, self.rows_read = store, {}

    def __getattr__(self, name):
        return getattr(self.store, name)

    def read_table(self, name: str) -> pl.DataFrame:
        frame = self.store.read_table(name)
        self.rows_read[name] = self.rows_read.get(name, 0) + frame.height
        return frame

    def scan_table(self, name: str):
        lazy = self.store.scan_table(name)
        return None if lazy is None else _Counted(lazy, self.rows_read, name)


class _Counted:
    def __init__(self, inner, counts: dict, name: str) -> None:
        self.inner, self.counts, self.name = inner, counts, name

    def __getattr__(self, attr):
        target = getattr(self.inner, attr)
        if not callable(target):
            return target

        def call(*args, **kwargs):
            result = target(*args, **kwargs)
            if isinstance(result, pl.DataFrame):
                self.counts[self.name] = self.counts.get(self.name, 0) + result.height
                return result
            return _Counted(result, self.counts, self.name)
        return call


@pytest.fixture(scope="module")
def champions():
    frame = make_frame(n_series=3, n_steps=N_TRAIN + 3 * N_NEW, gap_share=0.05, seed=5)
    stamps = frame["timestamp"].unique().sort()
    train = frame.filter(pl.col("timestamp") < stamps[N_TRAIN])
    forecaster = RNNForecaster(ForecasterConfig(lookback=12, horizon=HORIZON, stateful=True,
                                                train=TrainConfig(max_epochs=1, batch_size=8,
                                                                  seed=0),
                                                encoder=EncoderConfig(cell="gru", hidden_size=4),
                                                tbptt=TBPTTConfig(length=24))).fit(train)
    detector = RollingZScoreDetector(ZScoreConfig(
        window=8, threshold=ThresholdConfig(kind="quantile", level=0.99))).fit(train)
    return frame, stamps, {"recurra-g-forecast": forecaster, "recurra-g-detect": detector}


def _setup(tmp_path, monkeypatch, champions, catch_up_steps=168):
    frame, stamps, models = champions
    monkeypatch.setenv("RECURRA_HOME", str(tmp_path))
    monkeypatch.setattr(runs, "registry_backend", lambda: FakeRegistry(models))
    store = Store(tmp_path / "store")
    store.upsert(frame.filter(pl.col("timestamp") < stamps[N_TRAIN]), source="test")
    end = stamps[N_TRAIN - 1].isoformat()
    store.write_table("trainings", pl.DataFrame([
        {"model_name": name, "version": "1", "group": "g", "role": role,
         "trained_until": stamps[N_TRAIN - 1], "validation_mae": '{"s0": 1.0, "s1": 1.0}',
         "series_until": json.dumps(dict.fromkeys(("s0", "s1", "s2"), end)),
         "promoted": True, "reason": "", "trained_at": dt.datetime.now(dt.UTC)}
        for name, role in (("recurra-g-forecast", "forecaster"),
                           ("recurra-g-detect", "detector"))]), key=("model_name", "version"))
    group = GroupConfig("g", series=("s*",), forecaster="f", detector="d")
    configs = {"f": ModelConfig("f", "recurra.forecasting.RNNForecaster"),
               "d": ModelConfig("d", "recurra.anomaly.baselines.RollingZScoreDetector")}
    config = PipelineConfig(sources=[], groups={"g": group}, models=configs,
                            monitoring=MonitoringConfig(catch_up_steps=catch_up_steps))
    return store, group, config


def _arrive(store, champions, upto: int) -> None:
    frame, stamps, _ = champions
    store.upsert(frame.filter(pl.col("timestamp") < stamps[N_TRAIN + upto]), source="test")


def test_detect_reads_only_the_open_forecasts(tmp_path, monkeypatch, champions):
    store, group, config = _setup(tmp_path, monkeypatch, champions)
    _, stamps, _ = champions
    history = pl.concat([pl.DataFrame({  # a long history: 300 old issues x 3 series x 4 steps
        "series_id": [sid] * HORIZON, "channel": ["value"] * HORIZON,
        "issued_at": [stamps[0] - dt.timedelta(hours=k)] * HORIZON,
        "timestamp": [stamps[0] - dt.timedelta(hours=k - h) for h in range(HORIZON)],
        "step": list(range(1, HORIZON + 1)), "y_hat": [0.0] * HORIZON})
        for k in range(300) for sid in ("s0", "s1", "s2")], how="vertical_relaxed")
    store.write_table("forecasts", history.with_columns(
        pl.col("step").cast(pl.Int32)), key=tasks.FORECAST_KEY)
    counting = CountingStore(store)
    for step in range(1, 4):
        _arrive(store, champions, step)
        out = tasks.detect_group(group, config, counting, f"run{step}")
        assert out["new_rows"] == 3 and out["steps"] == 1
    assert store.read_table("forecasts").height > 3000
    # run 1 finds no open forecast (uses the champion's own); runs 2-3 read the forecasts of
    # the previous run that the new row resolves: at most series x horizon each
    assert counting.rows_read.get("forecasts", 0) <= 2 * 3 * HORIZON
    assert "detector fleet: 3 series x 1 steps" in out["paths"]
    assert "forecaster fleet: 3 series x 1 steps" in out["paths"]


def test_catch_up_gives_the_scores_of_runs_on_time(tmp_path, monkeypatch, champions):
    on_time, group, config = _setup(tmp_path / "a", monkeypatch, champions)
    for step in range(1, N_NEW + 1):
        _arrive(on_time, champions, step)
        assert tasks.detect_group(group, config, on_time, f"run{step}")["steps"] == 1
    late, group, config = _setup(tmp_path / "b", monkeypatch, champions, catch_up_steps=2)
    _arrive(late, champions, N_NEW)
    out = tasks.detect_group(group, config, late, "catch-up")
    assert out["steps"] == N_NEW and out["chunks"] == 3
    key = ["series_id", "timestamp"]
    scores = [s.read_table("scores").sort(key).select([*key, "score", "is_anomaly"])
              for s in (on_time, late)]
    assert scores[0].height == 3 * N_NEW
    assert scores[0].equals(scores[1])
    final = [f.filter(pl.col("issued_at") == f["issued_at"].max()).sort(key)
             for f in (s.read_table("forecasts") for s in (on_time, late))]
    assert final[0].height == 3 * HORIZON == final[1].height
    assert final[0]["timestamp"].equals(final[1]["timestamp"])
    assert final[0]["y_hat"].to_list() == pytest.approx(final[1]["y_hat"].to_list(), abs=1e-5)


def _scores_and_forecasts(store) -> tuple[pl.DataFrame, pl.DataFrame]:
    key = ["series_id", "timestamp"]
    return (store.read_table("scores").sort(key).select([*key, "score", "is_anomaly"]),
            store.read_table("forecasts").sort([*key, "step"]).select(  # issued_at: wall time
                [*key, "step", "y_hat"]))


def test_a_long_lived_process_reuses_the_state_it_saved(tmp_path, monkeypatch, champions):
    from recurra.pipelines import detect_tasks

    loads = []
    real_load = detect_tasks.load_estimator
    monkeypatch.setattr(detect_tasks, "load_estimator",
                        lambda folder, **kw: loads.append(folder) or real_load(folder, **kw))
    kept, group, config = _setup(tmp_path / "kept", monkeypatch, champions)
    for step in range(1, 4):
        _arrive(kept, champions, step)
        tasks.detect_group(group, config, kept, f"run{step}")
    assert loads == []  # run 1 starts from the champion, runs 2-3 reuse what run 1-2 saved
    reloaded, group, config = _setup(tmp_path / "reloaded", monkeypatch, champions)
    for step in range(1, 4):
        _arrive(reloaded, champions, step)
        detect_tasks._KEPT.clear()  # as if every run were a fresh process
        tasks.detect_group(group, config, reloaded, f"run{step}")
    assert len(loads) == 2 * 2  # runs 2 and 3, forecaster and detector
    for ours, theirs in zip(_scores_and_forecasts(kept), _scores_and_forecasts(reloaded),
                            strict=True):
        assert ours.height
        assert_frame_equal(ours, theirs, check_exact=False, abs_tol=1e-5)


def test_a_failed_run_leaves_no_state_in_memory(tmp_path, monkeypatch, champions):
    from recurra.pipelines import detect_tasks

    store, group, config = _setup(tmp_path, monkeypatch, champions)
    _arrive(store, champions, 1)
    tasks.detect_group(group, config, store, "run1")
    real_step = detect_tasks._detect_step

    def failing(*args, **kwargs):
        raise RuntimeError("store went away")

    monkeypatch.setattr(detect_tasks, "_detect_step", failing)
    _arrive(store, champions, 2)
    with pytest.raises(RuntimeError, match="store went away"):
        tasks.detect_group(group, config, store, "run2")  # the forecaster advanced, unsaved
    monkeypatch.setattr(detect_tasks, "_detect_step", real_step)
    loads = []
    real_load = detect_tasks.load_estimator
    monkeypatch.setattr(detect_tasks, "load_estimator",
                        lambda folder, **kw: loads.append(folder) or real_load(folder, **kw))
    out = tasks.detect_group(group, config, store, "run2-retry")
    assert len(loads) == 2 and out["steps"] == 1  # both reloaded from what run 1 saved


def _on_time(tmp_path, monkeypatch, champions, n_runs: int):
    store, group, config = _setup(tmp_path, monkeypatch, champions)
    for step in range(1, n_runs + 1):
        _arrive(store, champions, step)
        tasks.detect_group(group, config, store, f"run{step}")
    return _scores_and_forecasts(store)[0], store


def _killed_at_run3(tmp_path, monkeypatch, champions, target: str, fails=None):
    """Runs 1 and 2, then run 3 killed inside ``detect_tasks.<target>`` (``fails``: the
    replacement, default raise at once); returns the store, group and config."""
    from recurra.pipelines import detect_tasks

    store, group, config = _setup(tmp_path / "killed", monkeypatch, champions)
    for step in (1, 2):
        _arrive(store, champions, step)
        tasks.detect_group(group, config, store, f"run{step}")
    real = getattr(detect_tasks, target)
    monkeypatch.setattr(detect_tasks, target, fails or (
        lambda *a, **k: (_ for _ in ()).throw(RuntimeError("killed"))))
    _arrive(store, champions, 3)
    with pytest.raises(RuntimeError, match="killed"):
        tasks.detect_group(group, config, store, "run3")
    monkeypatch.setattr(detect_tasks, target, real)
    return store, group, config


@pytest.mark.parametrize("fresh_process", [False, True])
def test_a_run_killed_after_saving_its_models_is_repaired_by_the_next(
        tmp_path, monkeypatch, champions, fresh_process):
    from recurra.pipelines import detect_tasks

    expected, _ = _on_time(tmp_path / "on-time", monkeypatch, champions, 4)
    # run 3 saved its models, not the watermarks
    store, group, config = _killed_at_run3(tmp_path, monkeypatch, champions,
                                           "_write_watermarks")
    marks = store.read_table("watermarks")
    assert marks["watermark"].max() < champions[1][N_TRAIN + 2]  # behind the saved state
    if fresh_process:
        detect_tasks._KEPT.clear()
    _arrive(store, champions, 4)
    out = tasks.detect_group(group, config, store, "run4")
    assert out["new_rows"] == 3  # both models consumed row 3: the read starts after it
    assert "forecaster fleet: 3 series x 1 steps" in out["paths"]
    assert "detector fleet: 3 series x 1 steps" in out["paths"]
    assert_frame_equal(_scores_and_forecasts(store)[0], expected, check_exact=False,
                       abs_tol=1e-9)
    assert store.read_table("watermarks")["watermark"].max() == champions[1][N_TRAIN + 3]


def test_a_run_killed_before_saving_its_models_is_redone_with_the_same_scores(
        tmp_path, monkeypatch, champions):

    expected, on_time = _on_time(tmp_path / "on-time", monkeypatch, champions, 3)
    # run 3 wrote its outputs, saved no state
    store, group, config = _killed_at_run3(tmp_path, monkeypatch, champions, "save_estimator")
    out = tasks.detect_group(group, config, store, "run3")  # the flow's retry: same run id
    assert out["steps"] == 1
    assert_frame_equal(_scores_and_forecasts(store)[0], expected, check_exact=False,
                       abs_tol=1e-9)
    live = [s.read_table("live_metrics").sort(["series_id", "run_id"])
            .select("series_id", "run_id", "cusum") for s in (on_time, store)]
    assert_frame_equal(live[0], live[1])  # the retry continues run 2's CUSUM, not its own


def test_a_run_killed_between_the_two_saves_feeds_each_model_what_it_has_not_seen(
        tmp_path, monkeypatch, champions):
    from recurra.nn import persistence
    from recurra.pipelines import detect_tasks

    expected, on_time = _on_time(tmp_path / "on-time", monkeypatch, champions, 4)
    saved = []

    def second_fails(estimator, folder, **kwargs):
        if saved:
            raise RuntimeError("killed")
        saved.append(folder)
        return persistence.save_estimator(estimator, folder, **kwargs)

    store, group, config = _killed_at_run3(tmp_path, monkeypatch, champions, "save_estimator",
                                           second_fails)
    assert saved[0].parent.name == "recurra-g-forecast"  # the forecaster is one row ahead
    detect_tasks._KEPT.clear()
    _arrive(store, champions, 4)
    out = tasks.detect_group(group, config, store, "run4")
    assert out["new_rows"] == 2 * 3 and out["steps"] == 2
    assert "forecaster fleet: 3 series x 1 steps" in out["paths"]  # row 4 only
    assert "detector fleet: 3 series x 2 steps" in out["paths"]  # rows 3 and 4
    assert_frame_equal(_scores_and_forecasts(store)[0], expected, check_exact=False,
                       abs_tol=1e-9)
    final = [f.filter(pl.col("issued_at") == f["issued_at"].max()).sort(["series_id", "step"])
             for f in (s.read_table("forecasts") for s in (on_time, store))]
    assert final[0]["y_hat"].to_list() == pytest.approx(final[1]["y_hat"].to_list(), abs=1e-6)


def test_the_drift_reference_reads_only_the_rows_before_the_training_end(tmp_path, champions):
    from recurra.pipelines import incremental

    frame, stamps, _ = champions
    store = Store(tmp_path / "store")
    store.upsert(frame, source="test")
    ends = {"s0": stamps[100], "s1": stamps[90], "s2": stamps[100]}
    expected = incremental.cut(frame, ends, after=False).group_by(
        ["series_id", "channel"], maintain_order=True).tail(20)
    read = []
    real = store.read
    store.read = lambda **kw: read.append(real(**kw).height) or real(**kw)
    got = incremental.reference_rows(store, ["s0", "s1", "s2"], ends, 20)
    assert_frame_equal(got.sort(["series_id", "timestamp"]),
                       expected.sort(["series_id", "timestamp"]))
    assert got.group_by("series_id").len()["len"].to_list() == [20] * 3
    assert read == [3 * 31]  # from 20 spacings before the earliest end to the latest


def test_the_drift_reference_built_in_chunks_of_series_is_the_whole_one(
        tmp_path, monkeypatch, champions):
    from recurra.pipelines import detect_tasks

    built = []
    for chunk in (1000, 2):  # 3 series: one read, then two
        store, group, config = _setup(tmp_path / str(chunk), monkeypatch, champions)
        monkeypatch.setattr(detect_tasks, "REFERENCE_CHUNK", chunk)
        _arrive(store, champions, 1)
        tasks.detect_group(group, config, store, "run1")
        built.append(pl.read_parquet(next(
            (tmp_path / str(chunk)).rglob("*-drift-reference.parquet"))))
    assert built[0].height == 3
    assert_frame_equal(built[0].sort("series_id"), built[1].sort("series_id"))


def test_the_live_tests_state_travels_with_the_model_not_through_the_history(
        tmp_path, monkeypatch, champions):
    from recurra.anomaly.drift import cusum_step
    from recurra.nn.persistence import load_estimator, save_estimator, saved_extra
    from recurra.pipelines import detect_tasks

    store, group, config = _setup(tmp_path, monkeypatch, champions)
    counting = CountingStore(store)
    for step in range(1, 5):
        _arrive(store, champions, step)
        detect_tasks._KEPT.clear()  # each run a new process
        tasks.detect_group(group, config, counting, f"run{step}")
    assert counting.rows_read.get("live_metrics", 0) == 0  # no scan of the growing table
    live = store.read_table("live_metrics").sort("evaluated_at")
    for _, rows in live.group_by("series_id"):
        previous = 0.0
        for row in rows.iter_rows(named=True):  # each run continues the one before
            expected = cusum_step(previous, row["mae"] / row["validation_mae"], 0.5,
                                  row["n_points"])
            assert row["cusum"] == pytest.approx(expected)
            previous = row["cusum"]
    folder = tmp_path / "state" / "recurra-g-forecast" / "v1"
    monitor = saved_extra(folder)["monitor"]
    assert sorted(monitor["cusum"]) == ["s0", "s1", "s2"]
    assert set(monitor["above_runs"].values()) <= set(range(5))
    # a state saved before the monitor state was kept: the latest live_metrics rows count
    save_estimator(load_estimator(folder), folder, extra={"consumed": {}})
    assert detect_tasks._monitor_state(saved_extra(folder), folder) is None
    assert detect_tasks._monitor_state({}, tmp_path / "new") == {"cusum": {}, "above_runs": {}}
