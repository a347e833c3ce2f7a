"""The shared estimator battery over every detector, streaming equivalence, gaps, channels."""

from __future__ import annotations

import copy
import datetime as dt
from dataclasses import replace

import numpy as np
import polars as pl
import pytest
import torch

from recurra.anomaly import (
    DETECTOR_TRAIN,
    DETECTORS,
    AutoencoderConfig,
    EventConfig,
    GRUDAutoencoder,
    ReconstructionDetector,
    RollingZScoreDetector,
    ThresholdConfig,
    ZScoreConfig,
)
from recurra.anomaly.returns import ReturnZScoreDetector
from recurra.data.schema import (
    EVENT_SCHEMA,
    SCORE_SCHEMA,
    NotFittedError,
    RecurraError,
    SchemaError,
)
from tests.anomaly.configs import NETWORK, config_for
from tests.conftest import make_frame

QUANTILE = ThresholdConfig(kind="quantile", level=0.99)



@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    return make_frame(n_series=2, n_steps=120, n_channels=2, gap_share=0.05, seed=4)


@pytest.fixture(scope="module")
def fitted(frame) -> dict:
    torch.set_num_threads(1)
    return {name: cls(config_for(cls, QUANTILE)).fit(frame) for name, cls in DETECTORS.items()}


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_fit_returns_self_and_scores_follow_the_contract(name, frame, fitted):
    detector = fitted[name]
    scores = detector.score(frame)
    for column, dtype in SCORE_SCHEMA.items():
        assert scores.schema[column] == dtype
    assert {"contribution_c0", "contribution_c1"} <= set(scores.columns)
    assert scores.height == frame.select(["series_id", "timestamp"]).unique().height
    shares = scores.select(["contribution_c0", "contribution_c1"]).to_numpy().sum(axis=1)
    assert np.all((np.abs(shares - 1) < 1e-9) | (shares == 0))
    events = detector.predict(frame)
    assert dict(events.schema) == EVENT_SCHEMA
    cls = DETECTORS[name]
    assert type(cls(config_for(cls, QUANTILE)).fit(frame)) is type(detector)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_not_fitted_error_names_the_class(name, frame):
    with pytest.raises(NotFittedError, match=DETECTORS[name].__name__):
        DETECTORS[name]().score(frame)


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_point_by_point_streaming_equals_batch(name, frame, fitted):
    detector = fitted[name]
    batch = detector.score(frame).sort(["series_id", "timestamp"])
    detector.reset()
    timestamps = frame["timestamp"].unique().sort().to_list()
    parts = [detector.update(frame.filter(pl.col("timestamp") == t)) for t in timestamps[:25]]
    parts.append(detector.update(frame.filter(pl.col("timestamp") > timestamps[24])))
    streamed = pl.concat(parts).sort(["series_id", "timestamp"])
    np.testing.assert_allclose(streamed["score"].fill_null(np.nan).to_numpy(),
                               batch["score"].fill_null(np.nan).to_numpy(), rtol=1e-5,
                               atol=1e-5)
    assert streamed["is_anomaly"].to_list() == batch["is_anomaly"].to_list()


@pytest.mark.parametrize("name", sorted(DETECTORS))
def test_save_load_round_trip(name, frame, fitted, tmp_path):
    detector = fitted[name]
    folder = detector.save(tmp_path / name)
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "state.json",
                                                         "weights.pt"]  # format 3: no pickle
    torch.load(folder / "weights.pt", weights_only=True)
    loaded = DETECTORS[name].load(tmp_path / name)
    assert loaded.config == detector.config
    assert loaded.score(frame).equals(detector.score(frame))
    span = frame["timestamp"].max() - frame["timestamp"].min() + dt.timedelta(hours=1)
    later = frame.with_columns(pl.col("timestamp") + span)  # after whatever was streamed
    assert loaded.update(later).equals(copy.deepcopy(detector).update(later))


@pytest.mark.parametrize(("cls", "threshold", "extra"), [
    (RollingZScoreDetector, ThresholdConfig(kind="dspot", level=0.9, risk=0.01, depth=5), {}),
    (DETECTORS["forecast_error"], ThresholdConfig(kind="spot", level=0.9, risk=0.01), {}),
    (DETECTORS["isolation_forest"], ThresholdConfig(
        kind="likelihood", likelihood_window=5, likelihood_period=10, likelihood_relearn=12,
        likelihood_level=0.4, spatial_tolerance=0.2), {}),
    (ReturnZScoreDetector, ThresholdConfig(kind="telemanom"), {"smoothing": 0.5})])
def test_save_load_round_trip_of_every_threshold_state(cls, threshold, extra, frame, tmp_path):
    stamps = frame["timestamp"].unique().sort()
    old, first, new = (frame.filter(pl.col("timestamp") < stamps[80]),
                       frame.filter(pl.col("timestamp").is_between(stamps[80], stamps[99])),
                       frame.filter(pl.col("timestamp") >= stamps[100]))
    detector = cls(config_for(cls, threshold, **extra)).fit(old)
    detector.update(first)
    folder = detector.save(tmp_path / "model")
    assert not (folder / "state.pkl").exists()
    loaded = cls.load(folder)
    assert loaded.update(new).equals(detector.update(new))
    assert loaded.score(frame).equals(detector.score(frame))


def test_same_seed_same_scores(frame):
    config = config_for(ReconstructionDetector, QUANTILE)
    first = ReconstructionDetector(config).fit(frame).score(frame)
    second = ReconstructionDetector(config).fit(frame).score(frame)
    assert first.equals(second)


def test_update_after_fit_continues_the_training_series():
    whole = make_frame(n_series=1, n_steps=150, gap_share=0.0, seed=2)
    cut = whole["timestamp"][100]
    train = whole.filter(pl.col("timestamp") < cut)
    detector = ReconstructionDetector(config_for(ReconstructionDetector, QUANTILE)).fit(train)
    streamed = detector.update(whole.filter(pl.col("timestamp") >= cut))
    batch = detector.score(whole).filter(pl.col("timestamp") >= cut)
    np.testing.assert_allclose(streamed["score"].to_numpy(), batch["score"].to_numpy(),
                               rtol=1e-5, atol=1e-6)
    with pytest.raises(SchemaError, match="never goes back in time"):
        detector.update(train.tail(1))


def test_overlap_aggregation_is_offline_only(frame):
    detector = ReconstructionDetector(AutoencoderConfig(
        window=8, network=NETWORK, train=replace(DETECTOR_TRAIN, max_epochs=1), aggregate="overlap",
        threshold=ThresholdConfig(kind="quantile"))).fit(frame)
    assert detector.score(frame).height > 0
    with pytest.raises(RecurraError, match="aggregate='causal'"):
        detector.update(frame)


def _spiky(n_steps: int = 300, spike_at: int = 250, channel: int = 1) -> pl.DataFrame:
    frame = make_frame(n_series=1, n_steps=n_steps, n_channels=2, gap_share=0.0, seed=7)
    target = f"c{channel}"
    stamp = frame["timestamp"].unique().sort()[spike_at]
    hit = (pl.col("channel") == target) & (pl.col("timestamp") == stamp)
    return frame.with_columns(pl.when(hit).then(pl.col("value") + 12.0)
                              .otherwise(pl.col("value")).alias("value"))


@pytest.mark.parametrize("name", ["rolling_zscore", "forecast_error", "lstm_ae"])
def test_a_spike_gets_the_top_score_and_names_its_channel(name):
    frame = _spiky()
    cut = frame["timestamp"].unique().sort()[200]
    cls = DETECTORS[name]
    config = config_for(cls, ThresholdConfig(kind="quantile", level=0.995), window=12,
                        train=replace(DETECTOR_TRAIN, max_epochs=3))
    detector = cls(config).fit(frame.filter(pl.col("timestamp") < cut))
    scores = detector.score(frame)
    top = scores.sort("score", descending=True, nulls_last=True).row(0, named=True)
    # a forecaster also errs on the step after the spike (it predicted the spike to persist)
    assert top["timestamp"] in frame["timestamp"].unique().sort()[250:252].to_list()
    assert top["is_anomaly"] and top["contribution_c1"] > 0.5
    events = detector.predict(frame).filter(pl.col("kind") == "anomaly")
    spike = events.filter(pl.col("start") <= top["timestamp"], pl.col("end") >= top["timestamp"])
    assert spike["channels"].to_list()[0][0] == "c1"


def test_grud_gap_is_a_data_quality_event_not_an_anomaly():
    frame = make_frame(n_series=1, n_steps=200, n_channels=2, gap_share=0.0, seed=3)
    stamps = frame["timestamp"].unique().sort()
    gap = pl.col("timestamp").is_between(stamps[150], stamps[169])
    gappy = frame.with_columns(pl.when(gap).then(None).otherwise(pl.col("value")).alias("value"),
                               pl.when(gap).then(False).otherwise(True).alias("observed"))
    config = AutoencoderConfig(window=12, network=NETWORK,
                               train=replace(DETECTOR_TRAIN, max_epochs=2), threshold=QUANTILE,
                               events=EventConfig(max_gap=10.0))
    detector = GRUDAutoencoder(config).fit(gappy.filter(pl.col("timestamp") < stamps[120]))
    scores = detector.score(gappy)
    in_gap = scores.filter(pl.col("timestamp").is_between(stamps[150], stamps[169]))
    assert in_gap["score"].null_count() == in_gap.height
    assert not in_gap["is_anomaly"].any()
    events = detector.predict(gappy)
    quality = events.filter(pl.col("kind") == "data_quality")
    assert quality.height == 1
    assert quality["start"][0] == stamps[150] and quality["end"][0] == stamps[169]
    assert quality["channels"][0].to_list() == ["c0", "c1"]


def test_bad_inputs_raise_clear_errors(frame, fitted):
    detector = fitted["rolling_zscore"]
    other = frame.filter(pl.col("series_id") == "s0").with_columns(
        pl.lit("zz").alias("series_id"))
    with pytest.raises(SchemaError, match="'zz' was not seen in fit"):
        detector.score(other)
    with pytest.raises(SchemaError, match="channel"):
        detector.score(frame.filter(pl.col("channel") == "c0").with_columns(
            pl.lit("c9").alias("channel")))
    with pytest.raises(RecurraError, match=r"ZScoreConfig.window \(1\) must be an integer >= 2"):
        ZScoreConfig(window=1)
    with pytest.raises(RecurraError, match=r"ThresholdConfig.kind \('best'\) must be one of"):
        ThresholdConfig(kind="best")
    with pytest.raises(RecurraError, match=r"risk \(0.5\)"):
        ThresholdConfig(risk=0.5)
    with pytest.raises(RecurraError, match="config of RollingZScoreDetector must be a "
                                           "ZScoreConfig, got AutoencoderConfig"):
        RollingZScoreDetector(AutoencoderConfig())
    short = frame.filter(pl.col("timestamp") < dt.datetime(2024, 1, 1, 5, tzinfo=dt.UTC))
    with pytest.raises(SchemaError, match="window \\+ 2"):
        RollingZScoreDetector(config_for(RollingZScoreDetector, QUANTILE)).fit(short)


def test_spot_threshold_updates_online():
    frame = make_frame(n_series=1, n_steps=400, gap_share=0.0, seed=5)
    config = ZScoreConfig(window=12, threshold=ThresholdConfig(kind="spot", level=0.95,
                                                               risk=1e-3))
    detector = RollingZScoreDetector(config).fit(frame.head(200))
    before = detector.state_["s0"].spot
    detector.update(frame.tail(200))
    after = detector.state_["s0"].spot
    assert after.n_seen == before.n_seen + 200
    assert after.threshold != before.threshold or after.n_peaks == before.n_peaks


def test_telemanom_threshold_and_pruned_events():
    frame = _spiky(n_steps=300, spike_at=250)
    config = ZScoreConfig(window=12, threshold=ThresholdConfig(kind="telemanom"),
                          smoothing=0.5)
    detector = RollingZScoreDetector(config).fit(frame.head(400))
    events = detector.predict(frame).filter(pl.col("kind") == "anomaly")
    spike = frame["timestamp"].unique().sort()[250]
    assert events.filter(pl.col("start") <= spike, pl.col("end") >= spike).height == 1


@pytest.mark.parametrize("name", ["forecast_error", "isolation_forest"])
def test_update_series_matches_update(name, frame, fitted):
    detector = fitted[name]
    batch = detector.score(frame).filter(pl.col("series_id") == "s1").sort("timestamp")
    detector.reset()
    part = frame.filter(pl.col("series_id") == "s1")
    wide = part.pivot(on="channel", index="timestamp", values="value").sort("timestamp")
    stamps = wide["timestamp"].dt.replace_time_zone(None).to_numpy()
    values = wide.select(["c0", "c1"]).fill_null(np.nan).to_numpy()
    streamed = [detector._update_series("s1", stamps[i:i + 1], values[i:i + 1])[0]
                for i in range(30)]
    streamed.append(detector._update_series("s1", stamps[30:], values[30:])[0])
    np.testing.assert_allclose(np.concatenate(streamed),
                               batch["score"].fill_null(np.nan).to_numpy(), rtol=1e-5,
                               atol=1e-5)


def test_dspot_streaming_equals_batch(frame):
    config = ZScoreConfig(window=8, threshold=ThresholdConfig(kind="dspot", depth=10,
                                                              level=0.95, risk=1e-3))
    detector = RollingZScoreDetector(config).fit(frame)
    batch = detector.score(frame).sort(["series_id", "timestamp"])
    detector.reset()
    timestamps = frame["timestamp"].unique().sort().to_list()
    parts = [detector.update(frame.filter(pl.col("timestamp") == t)) for t in timestamps[:20]]
    parts.append(detector.update(frame.filter(pl.col("timestamp") > timestamps[19])))
    streamed = pl.concat(parts).sort(["series_id", "timestamp"])
    assert streamed["is_anomaly"].to_list() == batch["is_anomaly"].to_list()
    np.testing.assert_allclose(streamed["score"].fill_null(np.nan).to_numpy(),
                               batch["score"].fill_null(np.nan).to_numpy())


def test_the_detectors_train_config_reaches_early_stopping_and_weight_decay(frame):
    """Every setting of the shared loop reaches a detector through ``train``: with patience 1
    and a learning rate that makes the training loss stall, training stops before
    ``max_epochs`` (the history has one record per epoch run)."""
    train = replace(DETECTOR_TRAIN, max_epochs=30, early_stopping_patience=1, min_delta=1e3,
                    weight_decay=0.01, schedule="cosine")
    detector = ReconstructionDetector(config_for(ReconstructionDetector, QUANTILE,
                                                 train=train)).fit(frame)
    assert len(detector.history_) == 2 < train.max_epochs   # epoch 2 did not improve by 1e3
    patient = replace(train, max_epochs=4, early_stopping_patience=None)
    full = ReconstructionDetector(config_for(ReconstructionDetector, QUANTILE,
                                             train=patient)).fit(frame)
    assert len(full.history_) == 4                           # without patience: every epoch
