"""The shared training loop: config checks, determinism, early stopping, NaN guard, state."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from recurra.data.schema import RecurraError
from recurra.nn.device import choose_device, seed_everything
from recurra.nn.train import TrainConfig, detach_state, fit_module

torch.set_num_threads(1)  # tiny models: one thread is far faster on a busy CPU


def _data(seed: int = 0, n: int = 64):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=generator)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.01 * torch.randn(n, 1, generator=generator)
    return [(x[i:i + 16], y[i:i + 16]) for i in range(0, n, 16)]


def _step(module, batch):
    x, y = batch
    return nn.functional.mse_loss(module(x), y)


def _fit(config: TrainConfig, **kwargs):
    torch.manual_seed(0)
    module = nn.Linear(3, 1)
    batches = _data()
    result = fit_module(module, _step, lambda: batches, lambda: batches[:1], config, **kwargs)
    return module, result


def test_loss_decreases_and_history_is_complete():
    module, result = _fit(TrainConfig(max_epochs=30, learning_rate=0.05, device="cpu"))
    losses = [r["train_loss"] for r in result.history]
    assert losses[-1] < 0.1 * losses[0]
    assert set(result.history[0]) == {"epoch", "train_loss", "val_loss", "lr", "seconds"}
    assert 1 <= result.best_epoch <= result.epochs_run


def test_same_seed_same_weights():
    config = TrainConfig(max_epochs=3, device="cpu", seed=7)
    first, _ = _fit(config)
    second, _ = _fit(config)
    for a, b in zip(first.parameters(), second.parameters(), strict=True):
        assert torch.equal(a, b)


def test_early_stopping_restores_best_weights():
    calls = []
    state_at_epoch = {}

    def callback(event, payload):
        calls.append(event)
        if event == "epoch_end":
            state_at_epoch[payload["epoch"]] = {k: v.clone() for k, v in
                                                module.state_dict().items()}

    torch.manual_seed(0)
    module = nn.Linear(3, 1)
    batches = _data()
    # validation data the model cannot fit: val loss gets worse as training improves
    bad_val = [(x, -y * 5) for x, y in batches]
    result = fit_module(module, _step, lambda: batches, lambda: bad_val,
                        TrainConfig(max_epochs=50, learning_rate=0.05, device="cpu",
                                    early_stopping_patience=2), callback)
    assert result.stopped_early
    assert result.epochs_run == result.best_epoch + 2
    for key, value in module.state_dict().items():
        assert torch.equal(value, state_at_epoch[result.best_epoch][key])
    assert calls[0] == "epoch_start" and calls[-1] == "train_end"


def test_nan_loss_raises_clear_error():
    def step(module, batch):
        loss = _step(module, batch)
        return loss * float("nan") if batch[0].shape[0] == 16 else loss

    with pytest.raises(RecurraError, match=r"loss became nan at epoch 1, batch 1 \(series "
                                           r"unknown; values span .*\): check those series' "
                                           r"values, lower learning_rate or enable clip_norm"):
        fit_module(nn.Linear(3, 1), step, lambda: _data(), None, TrainConfig(device="cpu"))


@pytest.mark.parametrize("schedule", ["none", "onecycle", "cosine", "plateau"])
def test_schedules_run_and_change_lr(schedule):
    _, result = _fit(TrainConfig(max_epochs=4, schedule=schedule, device="cpu",
                                 early_stopping_patience=None))
    assert result.epochs_run == 4
    assert all(math.isfinite(r["train_loss"]) for r in result.history)
    if schedule in ("onecycle", "cosine"):
        assert result.history[0]["lr"] != result.history[-1]["lr"]


def test_stateful_step_receives_detached_state():
    seen = []

    def step(module, batch, state):
        x, y = batch
        seen.append(state)
        carried = module(x).mean() if state is None else state + module(x).mean()
        return nn.functional.mse_loss(module(x), y), carried

    fit_module(nn.Linear(3, 1), step, lambda: _data(), None,
               TrainConfig(max_epochs=2, device="cpu"), stateful=True)
    assert seen[0] is None and seen[4] is None  # reset at each epoch
    assert all(s is not None and not s.requires_grad for s in seen[1:4])


@pytest.mark.parametrize("field,value,message", [
    ("max_epochs", 0, r"max_epochs \(0\) must be an integer >= 1"),
    ("learning_rate", -1.0, r"learning_rate \(-1.0\) must be > 0"),
    ("schedule", "linear", r"schedule \('linear'\) must be one of"),
    ("clip_norm", 0.0, r"clip_norm \(0.0\) must be > 0 or None"),
    ("amp", "fp8", r"amp \('fp8'\) must be one of"),
    ("optimizer", "lbfgs", r"optimizer \('lbfgs'\) must be one of"),
])
def test_config_errors_name_field_and_rule(field, value, message):
    with pytest.raises(RecurraError, match=message):
        TrainConfig(**{field: value})


def test_no_batches_is_a_clear_error():
    with pytest.raises(RecurraError, match="yielded no batch"):
        fit_module(nn.Linear(3, 1), _step, lambda: [], None, TrainConfig(device="cpu"))


def test_device_and_seed_helpers():
    assert choose_device("cpu").type == "cpu"
    assert choose_device("auto").type in ("cpu", "cuda")
    with pytest.raises(RecurraError, match=r"device \('tpu'\) must be one of"):
        choose_device("tpu")
    a = seed_everything(3)
    b = seed_everything(3)
    assert torch.equal(torch.rand(2, generator=a), torch.rand(2, generator=b))
    assert detach_state(None) is None


def test_progress_bar_and_amp_flag_run_on_cpu():
    # amp is ignored on CPU; the rich progress bar must not break training
    _, result = _fit(TrainConfig(max_epochs=2, device="cpu", amp="bf16", progress=True))
    assert result.epochs_run == 2


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.parametrize("amp", ["bf16", "fp16"])
def test_amp_on_cuda(amp):
    _, result = _fit(TrainConfig(max_epochs=3, learning_rate=0.05, device="cuda", amp=amp))
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]
