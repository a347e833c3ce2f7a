"""Stateful TBPTT training: carried state across chunks, burn-in masking, resume from disk."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from recurra.data.arrays import frame_to_arrays
from recurra.data.schema import RecurraError
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster
from recurra.forecasting.windows import chunk_batches, prepare_series, split_segments
from recurra.nn.train import TrainConfig
from tests.conftest import flat_config, make_frame

torch.set_num_threads(1)
TRAIN = TrainConfig(max_epochs=1, batch_size=8, device="cpu", seed=0)


def _config(**kwargs) -> ForecasterConfig:
    values = dict(hidden_size=8, lookback=16, horizon=4, stateful=True, tbptt_length=10,
                  train=TRAIN)
    values.update(kwargs)
    return flat_config(**values)


def _prepared(n_series: int = 3, n_steps: int = 60):
    frame = make_frame(n_series=n_series, n_steps=n_steps)
    return frame, [prepare_series(a, np.zeros(a.n_channels), np.ones(a.n_channels),
                                  calendar=True) for a in frame_to_arrays(frame)]


def _leaves(state):
    if isinstance(state, torch.Tensor):
        return [state]
    return [leaf for part in state for leaf in _leaves(part)]


def _leaves_of(state):
    """Array-like leaves of a stream state (nested dicts / tuples of tensors and arrays)."""
    if isinstance(state, dict):
        return [leaf for key in sorted(state) for leaf in _leaves_of(state[key])]
    if isinstance(state, tuple | list):
        return [leaf for part in state for leaf in _leaves_of(part)]
    if isinstance(state, torch.Tensor | np.ndarray):
        return [state]
    return []


@pytest.mark.parametrize("cell", ["lstm", "grud"])
def test_state_carried_across_chunks_equals_one_long_pass(cell):
    frame, prepared = _prepared()
    module = RNNForecaster(_config(cell=cell)).fit(frame).module_
    raw = cell == "grud"
    chunks = chunk_batches(prepared, [0, 1, 2], 10, 4, [0], raw)
    (whole,) = chunk_batches(prepared, [0, 1, 2], 1000, 4, [0], raw)
    assert len(chunks) == 6 and chunks[0].reset and not chunks[1].reset
    with torch.no_grad():
        state, outputs = None, []
        for batch in chunks:
            output, state = module.encode(batch.x, batch.observed, batch.delta, state,
                                          batch.covariates)
            outputs.append(output)
        once, once_state = module.encode(whole.x, whole.observed, whole.delta, None,
                                         whole.covariates)
    torch.testing.assert_close(torch.cat(outputs, dim=1), once, atol=1e-5, rtol=1e-5)
    for left, right in zip(_leaves(state), _leaves(once_state), strict=True):
        torch.testing.assert_close(left, right, atol=1e-5, rtol=1e-5)


def test_burn_in_steps_replay_the_previous_segment_and_are_masked_from_the_loss():
    _, prepared = _prepared(n_series=1, n_steps=100)
    plain = split_segments(prepared, 4, min_length=10)
    burned = split_segments(prepared, 4, min_length=10, burn_in=8)
    assert [p.burn_in for p in burned] == [0, 8, 8, 8]
    assert [p.n_steps for p in burned] == [25, 33, 33, 33]
    for begin, a, b in zip((25, 50, 75), plain[1:], burned[1:], strict=True):
        np.testing.assert_array_equal(b.filled[b.burn_in:], a.filled)
        np.testing.assert_array_equal(b.filled[:8], prepared[0].filled[begin - 8:begin])
    (batch,) = chunk_batches(burned, [0, 1], 100, 4, [0], False)
    mask = batch.y_observed.numpy()                        # (B, L, N, O)
    assert not mask[1, :8].any()                          # burn-in of part 1: no loss
    (ref,) = chunk_batches(plain, [1], 100, 4, [0], False)
    np.testing.assert_array_equal(mask[1, 8:33], ref.y_observed.numpy()[0])
    assert mask[0, :8].any()                               # a series start is supervised
    # every step of the series is supervised once, as without burn-in
    total = sum(int(b.y_observed.numpy()[:, :, 0].any(-1).sum()) for b in (
        chunk_batches(burned, list(range(4)), 100, 4, [0], False)))
    reference = sum(int(b.y_observed.numpy()[:, :, 0].any(-1).sum()) for b in (
        chunk_batches(plain, list(range(4)), 100, 4, [0], False)))
    assert total == reference


def test_burn_in_trains_and_is_validated():
    frame, _ = _prepared(n_series=1, n_steps=120)
    fc = RNNForecaster(_config(stateful_segments=4, stateful_burn_in=6)).fit(frame)
    assert np.isfinite(fc.history_[0]["train_loss"])
    with pytest.raises(RecurraError, match=r"tbptt.burn_in \(-1\) must be an integer >= 0"):
        _config(stateful_burn_in=-1)


def test_resume_from_checkpoint_gives_the_same_state(tmp_path):
    frame = make_frame(n_series=2, n_steps=80)
    times = sorted(frame["timestamp"].unique().to_list())
    train = frame.filter(pl.col("timestamp") < times[60])
    first = frame.filter(pl.col("timestamp").is_between(times[60], times[69]))
    second = frame.filter(pl.col("timestamp") >= times[70])
    straight = RNNForecaster(_config()).fit(train)
    straight.update(first)
    straight.save(tmp_path / "checkpoint")
    resumed = RNNForecaster.load(tmp_path / "checkpoint")
    straight.update(second)
    resumed.update(second)
    assert straight.state_.keys() == resumed.state_.keys()
    for key in straight.state_:
        left, right = _leaves_of(straight.state_[key]), _leaves_of(resumed.state_[key])
        assert len(left) == len(right) > 0
        for a, b in zip(left, right, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert resumed.predict().equals(straight.predict())


@pytest.mark.parametrize("stateful", [False, True])
def test_forecast_from_last_starts_from_the_last_value(stateful):
    frame = make_frame(n_series=2, n_steps=60)
    fc = RNNForecaster(_config(stateful=stateful, output="point",
                               forecast_from_last=True)).fit(frame)
    with torch.no_grad():  # a zero head: the forecast is the last value (repeat-last)
        fc.module_.head.linear.weight.zero_()
        fc.module_.head.linear.bias.zero_()
    forecast = fc.predict()
    last = (frame.sort("timestamp").drop_nulls("value")
            .group_by("series_id", "channel").agg(pl.col("value").last()))
    joined = forecast.join(last, on=["series_id", "channel"])
    np.testing.assert_allclose(joined["y_hat"].to_numpy(), joined["value"].to_numpy(),
                               rtol=1e-5, atol=1e-5)
    with pytest.raises(RecurraError, match="decoder.forecast_from_last needs kind 'direct'"):
        _config(decoder="seq2seq", forecast_from_last=True)


def test_a_window_budget_bounds_a_stateful_epoch_to_whole_random_groups():
    from recurra.forecasting.rnn_training import _TeacherSchedule
    from recurra.forecasting.windows import stateful_sources

    _, prepared = _prepared(n_series=20, n_steps=60)        # 20 series x 60 steps
    schedule = _TeacherSchedule(_config())

    def epoch_series(budget):
        config = _config(max_windows_per_epoch=budget, train=TRAIN)  # batch_size 8
        train_batches, _, _ = stateful_sources(prepared, None, config, [0], schedule)
        seen = []
        for _ in range(3):
            ids = [sid for b in train_batches() if b.reset for sid in b.series_ids]
            seen.append(ids)
        return seen

    everything = epoch_series(None)
    assert all(sorted(ids) == sorted(p.series_id for p in prepared) for ids in everything)
    one_group = epoch_series(100)                            # < 8 x 60 steps: one group
    assert all(len(ids) == 8 == len(set(ids)) for ids in one_group)
    assert len({tuple(sorted(ids)) for ids in one_group}) > 1  # a new random group per epoch
    assert all(len(ids) == 16 for ids in epoch_series(8 * 60 + 1))  # two groups
    # the cap takes whole groups of series: a fit with it still trains every epoch
    frame = make_frame(n_series=20, n_steps=60)
    fc = RNNForecaster(_config(max_windows_per_epoch=100,
                               train=TrainConfig(max_epochs=2, batch_size=8, device="cpu",
                                                 seed=0))).fit(frame)
    assert len(fc.history_) == 2 and all(np.isfinite(h["train_loss"]) for h in fc.history_)
