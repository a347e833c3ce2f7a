"""The detector gate: seeded injected anomalies, composite F1 against them, the train task's use."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

from recurra.anomaly.baselines import RollingZScoreDetector, ZScoreConfig
from recurra.anomaly.config import ThresholdConfig
from recurra.data.schema import IS_ANOMALY, RecurraError, validate_frame
from recurra.pipelines import gate_data, runs, tasks
from recurra.pipelines.gate_data import GATE_METRIC, InjectionConfig, gate_score, inject_anomalies
from tests.conftest import make_frame


class SilentDetector:
    """Wraps a fitted detector but never raises an alarm (the case a flag-rate gate rewards)."""

    flag = False

    def __init__(self, inner):
        self.inner = inner

    def score(self, frame):
        return self.inner.score(frame).with_columns(pl.lit(self.flag).alias(IS_ANOMALY))


class AlarmingDetector(SilentDetector):
    """Flags every row (the case an event-F1 gate with alarm-run precision rewards)."""

    flag = True


@pytest.fixture(scope="module")
def split():
    frame = make_frame(n_series=2, n_steps=400, gap_share=0.05, seed=4)
    train, rest = tasks.split_by_time(frame, 0.5)
    detector = RollingZScoreDetector(ZScoreConfig(
        window=16, threshold=ThresholdConfig(kind="quantile", level=0.99))).fit(train)
    return train, rest, detector


def test_same_seed_same_injection_and_only_observed_rows_in_windows_change(split):
    _, rest, _ = split
    first, labels = inject_anomalies(rest, InjectionConfig(seed=3))
    again, labels_again = inject_anomalies(rest, InjectionConfig(seed=3))
    other, _ = inject_anomalies(rest, InjectionConfig(seed=4))
    assert first.equals(again) and labels.equals(labels_again)
    assert not first.equals(other)
    validate_frame(first)  # still the data contract
    assert first.select("series_id", "timestamp", "observed").equals(
        rest.select("series_id", "timestamp", "observed"))
    assert labels.height == 6 and sorted(set(labels["kind"])) == sorted(gate_data.KINDS)
    changed = first.filter((pl.col("value") - rest["value"]).abs() > 0)
    inside = changed.join(labels.select("series_id", "start", "end"), on="series_id").filter(
        pl.col("timestamp").is_between(pl.col("start"), pl.col("end")))
    assert changed.height > 0 and inside.select("series_id", "timestamp").unique().height \
        == changed.height
    assert first.filter(~pl.col("observed"))["value"].null_count() == rest.filter(
        ~pl.col("observed")).height
    windows = labels.sort("series_id", "start")
    for _, part in windows.group_by("series_id"):
        part = part.sort("start")
        assert (part["start"][1:] > part["end"][:-1]).all()  # disjoint


def test_sizes_follow_the_series_robust_scale(split):
    _, rest, _ = split
    _, labels = inject_anomalies(rest, InjectionConfig(spike_size=5.0, shift_size=2.0,
                                                       burst_size=2.0))
    for row in labels.iter_rows(named=True):
        values = rest.filter(pl.col("series_id") == row["series_id"])["value"].drop_nulls()
        factor = 5.0 if row["kind"] == "spike" else 2.0
        assert abs(row["size"]) == pytest.approx(factor * gate_data.robust_scale(
            values.to_numpy()))
    assert gate_data.robust_scale(np.array([1.0, 1.0, 1.0])) == 1.0  # no spread: fallback


def test_never_and_always_flagging_detectors_lose_to_a_working_one(split):
    train, rest, detector = split
    injected, labels = inject_anomalies(rest)
    working = gate_score(detector, injected, labels, train)
    silent = gate_score(SilentDetector(detector), injected, labels, train)
    alarming = gate_score(AlarmingDetector(detector), injected, labels, train)
    assert silent.composite_f1 == 0.0 and silent.event_recall == 0.0 and silent.flag_rate == 0.0
    assert alarming.event_recall == 1.0 and alarming.flag_rate == 1.0
    assert alarming.event_precision == 1.0  # one endless alarm run: why runs are not used
    assert alarming.composite_f1 < 0.25
    assert working.composite_f1 > 0.6 and working.event_recall > 0.5
    assert working.composite_f1 > 2 * alarming.composite_f1
    assert working.n_injected == silent.n_injected == labels.height
    assert working.metrics()[GATE_METRIC] == working.composite_f1


def test_composite_f1_by_hand():
    import datetime as dt

    from recurra.pipelines.gate_data import LABEL_SCHEMA, _match

    times = [dt.datetime(2024, 1, 1, h, tzinfo=dt.UTC) for h in range(10)]
    scores = pl.DataFrame({"series_id": ["a"] * 10, "timestamp": times,
                           "score": [float(i) for i in range(10)],
                           "is_anomaly": [i in (2, 3, 7) for i in range(10)]})
    labels = pl.DataFrame({"series_id": ["a", "a"], "channel": ["value"] * 2,
                           "start": [times[2], times[5]], "end": [times[2], times[5]],
                           "kind": ["spike"] * 2, "size": [1.0, 1.0]}, schema=LABEL_SCHEMA)
    result = _match(scores, labels)  # window 2 found, window 5 missed; flags 2, 3, 7
    assert result.event_recall == 0.5 and result.point_precision == pytest.approx(1 / 3)
    assert result.composite_f1 == pytest.approx(2 * 0.5 * (1 / 3) / (0.5 + 1 / 3))
    assert result.n_false_alarms == 1 and result.flag_rate == pytest.approx(0.3)


def test_the_gate_promotes_higher_f1_and_its_tags_name_the_metric():
    from recurra.pipelines.registry import _decide, _decision_tags, _Version

    champion = _Version("1", {}, None)
    better = _decide("m", champion, GATE_METRIC, 0.8, True, 0.0, None, 0.0)
    worse = _decide("m", champion, GATE_METRIC, 0.0, True, 0.0, None, 0.8)
    assert better.promoted and not worse.promoted
    assert GATE_METRIC in better.reason and "higher is better" in better.reason
    tags = _decision_tags(worse)
    assert tags["recurra.gate.metric"] == GATE_METRIC
    assert tags["recurra.gate.higher_is_better"] == "True"
    assert tags["recurra.gate.decision"] == "kept_champion"


def test_bad_injection_settings_name_parameter_and_rule():
    with pytest.raises(RecurraError, match=r"InjectionConfig.n_per_series \(0\) must be"):
        InjectionConfig(n_per_series=0)
    with pytest.raises(RecurraError, match=r"InjectionConfig.spike_size \(-1.0\) must be"):
        InjectionConfig(spike_size=-1.0)


class FakeBackend:
    """Records registrations; its detector champion never flags."""

    def __init__(self, champion):
        self.champion_detector, self.calls = champion, []

    def champion(self, name):
        return (self.champion_detector, "1") if name.endswith("detect") else None

    def register(self, name, estimator, **kwargs):
        self.calls.append({"name": name, **kwargs})
        value, before = kwargs["value"], kwargs["champion_value"]
        promoted = before is None or value > before
        return {"name": name, "version": "2", "promoted": promoted, "reason": ""}


def test_train_group_gates_the_detector_on_injected_composite_f1(tmp_path, monkeypatch):
    from recurra.pipelines.config import load_config
    from tests.pipelines.test_flows import write_config

    monkeypatch.setenv("RECURRA_HOME", str(tmp_path))
    config = load_config(write_config(tmp_path / "recurra.toml", {
        "g": {"series": ["s0", "s1"], "detector": "zscore"}}))
    store = tasks.open_store(tmp_path / "store")
    frame = make_frame(n_series=2, n_steps=400, gap_share=0.05, seed=4)
    store.upsert(frame, source="test")
    train, _ = tasks.split_by_time(frame, config.training.validation_share)
    silent = SilentDetector(RollingZScoreDetector(ZScoreConfig(window=8)).fit(train))
    backend = FakeBackend(silent)
    monkeypatch.setattr(runs, "registry_backend", lambda: backend)
    result = tasks.train_group(config.groups["g"], config, store)
    (call,) = backend.calls
    assert call["metric"] == GATE_METRIC and call["higher_is_better"] is True
    assert call["champion_value"] == 0.0 and call["value"] > 0.0
    assert result["models"]["detector"]["promoted"]
    assert call["extra_metrics"]["val_injected_recall"] > 0.0


class NoChampionBackend(FakeBackend):
    def champion(self, name):
        return None


def test_train_group_checks_each_frame_it_makes_once(tmp_path, monkeypatch, contract_checks):
    """One full contract check per frame the run makes: the group frame read from the store,
    the validation history (train + rest, its folds are row filters of it) and the gate's
    frame (training tail + injected copy). The fits, predicts, scores and updates get
    ContractFrames and check nothing again (10 checks before issue 18's estimators kept
    the contract, 15 before the group frame did)."""
    from recurra.pipelines.config import load_config
    from tests.pipelines.test_flows import write_config

    monkeypatch.setenv("RECURRA_HOME", str(tmp_path))
    config = load_config(write_config(tmp_path / "recurra.toml", {
        "g": {"series": ["s0", "s1"], "forecaster": "naive", "detector": "zscore"}}))
    store = tasks.open_store(tmp_path / "store")
    store.upsert(make_frame(n_series=2, n_steps=400, gap_share=0.05, seed=4), source="test")
    monkeypatch.setattr(runs, "registry_backend", lambda: NoChampionBackend(None))
    contract_checks.clear()
    result = tasks.train_group(config.groups["g"], config, store)
    assert set(result["models"]) == {"forecaster", "detector"}
    assert contract_checks == ["group 'g'", "history", "frame"]
