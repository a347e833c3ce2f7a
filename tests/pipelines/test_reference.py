"""The live accuracy test's reference: a forecaster's one-step MAE over the last validation
rows, replayed one timestamp at a time as scheduled runs feed them."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from polars.testing import assert_frame_equal

from recurra.data.schema import contract
from recurra.forecasting.baselines import NaiveConfig, NaiveForecaster
from recurra.pipelines.config import ConfigError, MonitoringConfig
from recurra.pipelines.train_tasks import replay_one_step
from tests.conftest import make_frame


def _split(frame: pl.DataFrame, n_train: int):
    stamps = frame["timestamp"].unique().sort()
    checked = contract(frame)
    return (checked.rows(pl.col("timestamp") < stamps[n_train]),
            checked.rows(pl.col("timestamp") >= stamps[n_train]))


def test_the_reference_is_the_naive_one_step_error_over_the_last_rows():
    frame = make_frame(n_series=3, n_steps=80, n_channels=2, gap_share=0.0, seed=3)
    train, rest = _split(frame, 50)
    forecaster = NaiveForecaster(NaiveConfig(horizon=4)).fit(train)
    reference = replay_one_step(forecaster, rest, steps=12)
    for sid, part in frame.group_by("series_id"):
        errors = [np.abs(np.diff(channel["value"].to_numpy()))[-12:]
                  for _, channel in part.sort("timestamp").group_by("channel")]
        assert reference[sid[0]] == pytest.approx(float(np.concatenate(errors).mean()))


def test_the_replay_leaves_the_state_where_one_update_does():
    frame = make_frame(n_series=2, n_steps=90, gap_share=0.1, seed=4)
    train, rest = _split(frame, 60)
    replayed = NaiveForecaster(NaiveConfig(horizon=4)).fit(train)
    reference = replay_one_step(replayed, rest, steps=10)
    at_once = NaiveForecaster(NaiveConfig(horizon=4)).fit(train)
    at_once.update(rest)
    assert_frame_equal(replayed.predict(), at_once.predict())
    assert sorted(reference) == ["s0", "s1"] and all(v > 0 for v in reference.values())
    assert replay_one_step(NaiveForecaster(NaiveConfig(horizon=4)).fit(train), rest,
                           steps=0) == {}


def test_a_series_with_fewer_rows_than_the_steps_is_replayed_from_its_first():
    frame = make_frame(n_series=2, n_steps=60, gap_share=0.0, seed=5)
    short = frame.filter((pl.col("series_id") == "s0")
                         | (pl.col("timestamp") < frame["timestamp"].unique().sort()[53]))
    train, rest = _split(short, 50)  # s0 has 10 validation rows, s1 3
    reference = replay_one_step(NaiveForecaster(NaiveConfig(horizon=4)).fit(train), rest, 24)
    assert set(reference) == {"s0", "s1"}


@pytest.mark.parametrize("bad", [-1, 1.5, True])
def test_reference_steps_must_be_a_count(bad):
    with pytest.raises(ConfigError, match="monitoring.reference_steps"):
        MonitoringConfig(reference_steps=bad)
