"""The one training loop shared by every Recurra model (plain PyTorch, no Lightning).

A model plugs in with a *step function* that turns one batch into a scalar loss::

    def step_fn(module, batch):                       # stateless
        y, _ = module(batch.x, batch.observed, batch.delta)
        return masked_mse(y, batch.y, batch.y_observed)

    result = fit_module(module, step_fn, lambda: train_batches, lambda: val_batches,
                        TrainConfig(max_epochs=20), callback=tracker_hook)

Stateful variant (``stateful=True``): ``step_fn(module, batch, state) -> (loss, state)``.
The loop passes the state returned for batch k (detached: truncated BPTT) to batch k+1 and
starts every epoch (and the validation pass) with ``state=None``; the step function resets
the state itself where a batch starts new series (e.g. a ``reset`` flag in the batch).

``train_batches`` and ``val_batches`` are callables returning a fresh iterable each epoch.
A batch is anything the step function understands; objects with a ``.to(device)`` method
(:class:`recurra.nn.batch.WindowBatch`), tensors, and tuples/lists/dicts of them are moved to the
training device by the loop. A step function may return ``None`` to skip a batch (e.g. no
observed target in it).

Callback events ``callback(event, payload)``: ``"epoch_start"`` (epoch, max_epochs),
``"epoch_end"`` (epoch, train_loss, val_loss, lr, seconds), ``"train_end"`` (best_epoch,
best_val_loss, epochs_run, stopped_early).

A NaN/inf loss stops training with a :class:`RecurraError` naming the batch's series and its
value range: batches with a ``series_ids`` attribute are described by
:func:`batch_description`; other batch types pass ``describe_batch=`` to :func:`fit_module`.

Size: ~430 lines, because it is the one training loop of every model (optimizer, schedules,
clipping, early stopping, AMP, checkpoints, progress); its parts are private helpers of
:func:`fit_module`.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from recurra.data.schema import RecurraError
from recurra.nn.device import choose_device, seed_everything, set_deterministic

SCHEDULES = ("none", "onecycle", "cosine", "plateau")
OPTIMIZERS = ("adamw", "adam", "sgd")
AMP_MODES = ("none", "bf16", "fp16")

Callback = Callable[[str, dict[str, Any]], None]
BatchSource = Callable[[], Iterable[Any]]


@dataclass(frozen=True)
class TrainConfig:
    """How to train a module; every field is checked in ``__post_init__``.

    Attributes
    ----------
    max_epochs : passes over the training batches (>= 1).
    batch_size : windows (or series, in stateful mode) per batch; used by the estimators
        that build the batches.
    learning_rate, weight_decay : optimizer settings (learning_rate > 0, weight_decay >= 0).
    optimizer : one of ``"adamw"`` (default), ``"adam"``, ``"sgd"``.
    clip_norm : clip the global gradient norm to this (None = off).
    clip_value : clip each gradient element to +- this (None = off).
    schedule : learning-rate schedule, one of ``"none"``, ``"onecycle"`` (per batch),
        ``"cosine"`` (per epoch), ``"plateau"`` (halve when the monitored loss stalls).
    early_stopping_patience : epochs without an improvement > ``min_delta`` before stopping
        (None = train all ``max_epochs``); the best weights are restored either way.
    min_delta : smallest decrease of the monitored loss counted as an improvement.
    seed : seeds Python, numpy and torch; CPU training is deterministic.
    device : ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda"``.
    amp : mixed precision on CUDA only: ``"none"``, ``"bf16"`` or ``"fp16"`` (with a
        GradScaler); ignored on CPU.
    progress : show a progress bar (rich) on the terminal.
    """

    max_epochs: int = 20
    batch_size: int = 64
    learning_rate: float = 1e-3
    weight_decay: float = 0.0
    optimizer: str = "adamw"
    clip_norm: float | None = 1.0
    clip_value: float | None = None
    schedule: str = "none"
    early_stopping_patience: int | None = 5
    min_delta: float = 0.0
    seed: int = 0
    device: str = "auto"
    amp: str = "none"
    progress: bool = False

    def __post_init__(self) -> None:
        _check_int("max_epochs", self.max_epochs, 1)
        _check_int("batch_size", self.batch_size, 1)
        _check_int("seed", self.seed, 0)
        if not self.learning_rate > 0:
            raise RecurraError(f"learning_rate ({self.learning_rate}) must be > 0")
        if not self.weight_decay >= 0:
            raise RecurraError(f"weight_decay ({self.weight_decay}) must be >= 0")
        if not self.min_delta >= 0:
            raise RecurraError(f"min_delta ({self.min_delta}) must be >= 0")
        for name in ("clip_norm", "clip_value"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise RecurraError(f"{name} ({value}) must be > 0 or None (off)")
        if self.early_stopping_patience is not None:
            _check_int("early_stopping_patience", self.early_stopping_patience, 1)
        _check_choice("optimizer", self.optimizer, OPTIMIZERS)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("amp", self.amp, AMP_MODES)
        _check_choice("device", str(self.device).split(":")[0], ("auto", "cpu", "cuda"))


def _check_int(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise RecurraError(f"{name} ({value!r}) must be an integer >= {minimum}")


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise RecurraError(f"{name} ({value!r}) must be one of {list(choices)}")


@dataclass
class TrainResult:
    """What :func:`fit_module` reports.

    history : one dict per epoch (epoch, train_loss, val_loss, lr, seconds).
    best_epoch : the epoch whose weights were restored (1-based).
    best_val_loss : its monitored loss (validation loss, or training loss without
        validation batches).
    stopped_early : whether early stopping ended training before ``max_epochs``.
    """

    history: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_loss: float = math.inf
    stopped_early: bool = False

    @property
    def epochs_run(self) -> int:
        return len(self.history)


def fit_module(module: nn.Module, step_fn: Callable[..., Any], train_batches: BatchSource,
               val_batches: BatchSource | None, config: TrainConfig,
               callback: Callback | None = None, *, stateful: bool = False,
               describe_batch: Callable[[Any], str] | None = None) -> TrainResult:
    """Train ``module`` in place; restore the best weights; return the history.

    Parameters
    ----------
    module : the model (moved to ``config.device``).
    step_fn : ``step_fn(module, batch) -> loss`` (a 0-dim tensor, or None to skip), or with
        ``stateful=True`` ``step_fn(module, batch, state) -> (loss, state)``.
    train_batches, val_batches : callables returning a fresh iterable of batches per epoch;
        ``val_batches`` may be None (the training loss is then monitored).
    config : the :class:`TrainConfig`.
    callback : ``callback(event, payload)``, see the module docstring.
    describe_batch : ``describe_batch(batch) -> str`` names the series and value range of a
        batch whose loss is not finite (default :func:`batch_description`).

    Raises
    ------
    RecurraError : when the loss becomes NaN/inf (the message names the batch's series and
        value range), or no training batch yields a loss.
    """
    seed_everything(config.seed)
    device = choose_device(config.device)
    set_deterministic(device)
    module.to(device)
    loop = _Loop(module, step_fn, config, device, stateful, describe_batch or batch_description)
    first_epoch = list(train_batches())
    if not first_epoch:
        raise RecurraError("train_batches() yielded no batch: the training data is too short "
                           "for the look-back and horizon, or empty")
    optimizer = _make_optimizer(module, config)
    scheduler = _make_scheduler(optimizer, config, len(first_epoch))
    result = TrainResult()
    best_state = copy.deepcopy(module.state_dict())
    stale = 0
    progress = _Progress(config.progress, config.max_epochs)
    for epoch in range(1, config.max_epochs + 1):
        _emit(callback, "epoch_start", {"epoch": epoch, "max_epochs": config.max_epochs})
        started = time.perf_counter()
        batches = first_epoch if epoch == 1 else train_batches()
        train_loss = loop.train_epoch(batches, optimizer, scheduler, epoch)
        first_epoch = []
        val_loss = loop.evaluate(val_batches()) if val_batches is not None else None
        monitored = val_loss if val_loss is not None else train_loss
        lr = optimizer.param_groups[0]["lr"]
        _step_epoch_scheduler(scheduler, config, monitored)
        record = {"epoch": epoch, "train_loss": train_loss, "val_loss": val_loss, "lr": lr,
                  "seconds": time.perf_counter() - started}
        result.history.append(record)
        _emit(callback, "epoch_end", dict(record))
        progress.advance(record)
        if monitored < result.best_val_loss - config.min_delta or result.best_epoch == 0:
            result.best_val_loss, result.best_epoch, stale = monitored, epoch, 0
            best_state = copy.deepcopy(module.state_dict())
        else:
            stale += 1
            if (config.early_stopping_patience is not None
                    and stale >= config.early_stopping_patience):
                result.stopped_early = epoch < config.max_epochs
                break
    progress.close()
    module.load_state_dict(best_state)
    module.eval()
    _emit(callback, "train_end", {"best_epoch": result.best_epoch,
                                  "best_val_loss": result.best_val_loss,
                                  "epochs_run": result.epochs_run,
                                  "stopped_early": result.stopped_early})
    return result


class _Loop:
    """One epoch of training / evaluation (kept apart so fit_module stays short)."""

    def __init__(self, module: nn.Module, step_fn: Callable[..., Any], config: TrainConfig,
                 device: torch.device, stateful: bool, describe: Callable[[Any], str]) -> None:
        self.module, self.step_fn, self.config = module, step_fn, config
        self.describe = describe
        self.device, self.stateful = device, stateful
        use_amp = device.type == "cuda" and config.amp != "none"
        self.amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        self.use_amp = use_amp
        self.scaler = torch.amp.GradScaler("cuda", enabled=use_amp and config.amp == "fp16")

    def _call(self, batch: Any, state: Any) -> tuple[torch.Tensor | None, Any]:
        batch = move_to(batch, self.device)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.use_amp):
            if self.stateful:
                loss, state = self.step_fn(self.module, batch, state)
                return loss, detach_state(state)
            return self.step_fn(self.module, batch), None

    def train_epoch(self, batches: Iterable[Any], optimizer: torch.optim.Optimizer,
                    scheduler: Any, epoch: int) -> float:
        self.module.train()
        total, count, state = 0.0, 0, None
        for index, batch in enumerate(batches, start=1):
            loss, state = self._call(batch, state)
            if loss is None:
                continue
            check_finite(loss, epoch, index, lambda batch=batch: self.describe(batch))
            optimizer.zero_grad(set_to_none=True)
            if loss.requires_grad:
                self.scaler.scale(loss).backward()
                self._clip(optimizer)
                self.scaler.step(optimizer)
                self.scaler.update()
                if self.config.schedule == "onecycle":
                    _step_onecycle(scheduler)
            total += float(loss.detach())
            count += 1
        if count == 0:
            raise RecurraError(f"epoch {epoch}: no training batch produced a loss (every target "
                               "unobserved?); check the data and the look-back/horizon")
        return total / count

    def _clip(self, optimizer: torch.optim.Optimizer) -> None:
        if self.config.clip_norm is None and self.config.clip_value is None:
            return
        self.scaler.unscale_(optimizer)
        params = [p for p in self.module.parameters() if p.grad is not None]
        if self.config.clip_value is not None:
            nn.utils.clip_grad_value_(params, self.config.clip_value)
        if self.config.clip_norm is not None:
            nn.utils.clip_grad_norm_(params, self.config.clip_norm)

    @torch.no_grad()
    def evaluate(self, batches: Iterable[Any]) -> float | None:
        """Mean loss over ``batches`` in eval mode (None when no batch yields a loss)."""
        self.module.eval()
        total, count, state = 0.0, 0, None
        for index, batch in enumerate(batches, start=1):
            loss, state = self._call(batch, state)
            if loss is None:
                continue
            value = float(loss)
            if not math.isfinite(value):
                raise RecurraError(f"validation loss became {value} at batch {index} "
                                   f"({self.describe(batch)}): check those series' values, "
                                   "lower learning_rate or enable clip_norm")
            total += value
            count += 1
        if count == 0:
            return None
        return total / count


def check_finite(loss: torch.Tensor, epoch: int, batch: int,
                 describe: Callable[[], str] | None = None) -> None:
    """Raise a clear :class:`RecurraError` when ``loss`` is NaN or inf; ``describe()`` adds
    the batch's series and value range to the message."""
    value = float(loss.detach())
    if not math.isfinite(value):
        where = f" ({describe()})" if describe is not None else ""
        raise RecurraError(f"loss became {value} at epoch {epoch}, batch {batch}{where}: "
                           "check those series' values, lower learning_rate or enable "
                           "clip_norm")


def describe_values(series_ids: Iterable[str], tensors: Iterable[torch.Tensor]) -> str:
    """``"series ['a', 'b']; values span [lo, hi], 3 not finite"`` over the float tensors.

    >>> describe_values(["a"], [torch.tensor([1.0, float("inf")])])
    "series ['a']; values span [1, 1], 1 not finite"
    """
    ids = list(dict.fromkeys(series_ids))
    named = f"series {ids[:10]}" + (f" and {len(ids) - 10} more" if len(ids) > 10 else "")
    values = torch.cat([t.detach().float().reshape(-1).cpu() for t in tensors
                        if isinstance(t, torch.Tensor) and t.is_floating_point()] or
                       [torch.zeros(0)])
    finite = values[torch.isfinite(values)]
    span = (f"values span [{float(finite.min()):.4g}, {float(finite.max()):.4g}]"
            if finite.numel() else "no finite value")
    n_bad = int(values.numel() - finite.numel())
    return (named if ids else "series unknown") + f"; {span}" + (
        f", {n_bad} not finite" if n_bad else "")


def batch_description(batch: Any) -> str:
    """The default batch description: its ``series_ids`` attribute (when it has one) and the
    range of its ``x`` and ``y`` tensors (of every tensor for tuples/lists)."""
    if isinstance(batch, tuple | list):
        tensors = list(batch)
    else:
        tensors = [getattr(batch, name, None) for name in ("x", "y")]
    return describe_values(getattr(batch, "series_ids", None) or (), tensors)


def move_to(batch: Any, device: torch.device) -> Any:
    """``batch`` on ``device``: objects with ``.to``, tensors, tuples/lists/dicts of them."""
    if isinstance(batch, torch.Tensor) or hasattr(batch, "to"):
        return batch.to(device)
    if isinstance(batch, dict):
        return {key: move_to(value, device) for key, value in batch.items()}
    if isinstance(batch, tuple) and hasattr(batch, "_fields"):  # NamedTuple
        return type(batch)(*(move_to(value, device) for value in batch))
    if isinstance(batch, tuple | list):
        return type(batch)(move_to(value, device) for value in batch)
    return batch


def detach_state(state: Any) -> Any:
    """Detach every tensor in a (nested) recurrent state: truncated BPTT between chunks."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, dict):
        return {key: detach_state(value) for key, value in state.items()}
    if isinstance(state, tuple) and hasattr(state, "_fields"):  # NamedTuple (GRUDState)
        return type(state)(*(detach_state(value) for value in state))
    if isinstance(state, tuple | list):
        return type(state)(detach_state(value) for value in state)
    return state


def _make_optimizer(module: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in module.parameters() if p.requires_grad]
    if not params:
        raise RecurraError(f"{type(module).__name__} has no trainable parameters")
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.learning_rate, momentum=0.9,
                               weight_decay=config.weight_decay)
    cls = torch.optim.AdamW if config.optimizer == "adamw" else torch.optim.Adam
    return cls(params, lr=config.learning_rate, weight_decay=config.weight_decay)


def _make_scheduler(optimizer: torch.optim.Optimizer, config: TrainConfig,
                    n_batches: int) -> Any:
    if config.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=config.learning_rate,
            total_steps=max(2, config.max_epochs * n_batches))
    if config.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.max_epochs)
    if config.schedule == "plateau":
        patience = max(1, (config.early_stopping_patience or 4) // 2)
        return torch.optim.lr_scheduler.ReduceLROnPlateau(optimizer, factor=0.5,
                                                          patience=patience)
    return None


def _step_onecycle(scheduler: Any) -> None:
    if scheduler.last_epoch + 1 < scheduler.total_steps:
        scheduler.step()


def _step_epoch_scheduler(scheduler: Any, config: TrainConfig, monitored: float) -> None:
    if config.schedule == "cosine":
        scheduler.step()
    elif config.schedule == "plateau":
        scheduler.step(monitored)


def _emit(callback: Callback | None, event: str, payload: dict[str, Any]) -> None:
    if callback is not None:
        callback(event, payload)


class _Progress:
    """A rich progress bar over epochs (a no-op unless enabled)."""

    def __init__(self, enabled: bool, total: int) -> None:
        self.bar = None
        if enabled:
            from rich.progress import Progress

            self.bar = Progress(transient=True)
            self.bar.start()
            self.task = self.bar.add_task("training", total=total)

    def advance(self, record: dict[str, Any]) -> None:
        if self.bar is not None:
            val = record["val_loss"]
            text = f"epoch {record['epoch']} train {record['train_loss']:.4f}" + (
                f" val {val:.4f}" if val is not None else "")
            self.bar.update(self.task, advance=1, description=text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
