"""Torch plumbing shared by the neural error models, by composition: a :class:`TorchModel`
holds one network (built by a factory from the number of channels), trains it with the
shared loop :func:`recurra.nn.train.fit_module`, remembers the device it runs on and
(de)serialises its weights.  The error models of :mod:`recurra.anomaly.detectors` each hold
one as ``net``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from recurra.nn.device import choose_device, limit_threads, seed_everything
from recurra.nn.train import TrainConfig, describe_values, fit_module

INFERENCE_BATCH = 2048


def as_tensor(array: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
    """A torch copy of a (possibly read-only, strided) numpy array."""
    return torch.tensor(np.ascontiguousarray(array), dtype=dtype)


def masked_mse(prediction: torch.Tensor, target: torch.Tensor, observed: torch.Tensor
               ) -> torch.Tensor | None:
    """Mean squared error over observed cells (None when nothing is observed)."""
    mask = observed.to(prediction.dtype)
    count = mask.sum()
    if count <= 0:
        return None
    diff = (prediction - torch.nan_to_num(target)) * mask
    return (diff * diff).sum() / count


class TorchModel:
    """One network of a neural error model: build, train, place, save.

    Parameters
    ----------
    train : the shared loop's settings (a detector config's ``train``: epochs, batch size,
        seed, ``device``, weight decay, schedule, early stopping on the training loss...).
    build : ``n_channels -> nn.Module`` (pure maths, ``forward(x, observed, delta, state)``).
    n_threads : torch threads while training (None: torch's default).

    Attributes
    ----------
    module_ : the fitted network (None before ``train`` / ``set_state``).
    history_ : per-epoch records (epoch, train_loss, val_loss=None, lr, seconds).
    """

    def __init__(self, train: TrainConfig, build: Callable[[int], torch.nn.Module],
                 n_threads: int | None = None) -> None:
        self.train_config = train
        self.build = build
        self.n_threads = n_threads
        self.module_: torch.nn.Module | None = None
        self.history_: list[dict[str, Any]] = []
        self.inference_device_: torch.device | None = None

    def device(self) -> torch.device:
        """Where inference runs: the device :meth:`to` chose, else ``train.device``."""
        chosen = self.inference_device_
        return chosen if chosen is not None else choose_device(self.train_config.device)

    def to(self, device: str | torch.device) -> torch.device:
        """Move the network to ``device`` (``"auto"``: CUDA when available); returns it."""
        self.inference_device_ = choose_device(device)
        if self.module_ is not None:
            self.module_.to(self.inference_device_)
        return self.inference_device_

    def train(self, tensors: tuple[torch.Tensor, ...], step: Any, counts: list[int],
              series_ids: list[str]) -> None:
        """Build the network and fit it with the shared loop on shuffled mini-batches of
        ``tensors`` (equal first dimension; the last one of ``tensors[0]`` is the channels);
        ``counts`` are the rows of each of ``series_ids`` in ``tensors``, in order.

        Each batch is ``(*tensors, series_index)``; a non-finite loss names its series.
        """
        config = self.train_config
        limit_threads(self.n_threads)
        seed_everything(config.seed)
        self.module_ = self.build(tensors[0].shape[-1])
        generator = torch.Generator().manual_seed(config.seed)
        size = config.batch_size
        index = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        tensors = (*tensors, index)

        def batches():
            order = torch.randperm(tensors[0].shape[0], generator=generator)
            return [tuple(t[i] for t in tensors) for i in order.split(size)]

        def describe(batch: tuple[torch.Tensor, ...]) -> str:
            return describe_values([series_ids[i] for i in batch[-1].tolist()], batch[:-1])

        result = fit_module(self.module_, step, batches, None, config,
                            describe_batch=describe)
        self.history_ = result.history
        self.module_.to(self.device()).eval()

    def get_state(self) -> dict[str, Any]:
        """``{"module": state_dict on CPU}`` (the layout every saved neural detector has)."""
        return {"module": {k: v.cpu() for k, v in self.module_.state_dict().items()}}

    def set_state(self, state: dict[str, Any], n_channels: int) -> None:
        self.module_ = self.build(n_channels)
        self.module_.load_state_dict(state["module"])
        self.module_.to(self.device()).eval()
