"""Neural detectors: LSTM autoencoder, GRU-D autoencoder, forecast-error (telemanom).

Example::

    det = ReconstructionDetector(DetectorConfig(window=16, max_epochs=3)).fit(train)
    det.score(new)      # series_id | timestamp | score | is_anomaly | contribution_<ch>
    det.predict(new)    # events: start, end, peak_score, severity, channels, kind
    det.update(more)    # streaming, state carried

All three train with the shared loop :func:`recurra.nn.train.fit_module` and share the
causal scoring pipeline of :class:`recurra.anomaly.base.BaseDetector`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recurra.anomaly import scores as sc
from recurra.anomaly.base import BaseDetector, Chunk, DetectorConfig, pad_left
from recurra.anomaly.modules import OneStepForecaster, WindowAutoencoder
from recurra.nn.device import choose_device, limit_threads, seed_everything
from recurra.nn.state import tensors_to
from recurra.nn.train import TrainConfig, describe_values, fit_module

__all__ = ["DetectorConfig", "ForecastErrorDetector", "GRUDAutoencoder",
           "ReconstructionDetector"]
INFERENCE_BATCH = 2048


def _tensor(array: np.ndarray, dtype: torch.dtype | None = None) -> torch.Tensor:
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


class _TorchDetector(BaseDetector):
    """Module building, training and (de)serialisation shared by the neural detectors."""

    module_: torch.nn.Module | None = None
    float32_inputs = True

    def _train_config(self) -> TrainConfig:
        config = self.config
        return TrainConfig(max_epochs=config.max_epochs, batch_size=config.batch_size,
                           learning_rate=config.learning_rate, seed=config.seed,
                           device=config.device, early_stopping_patience=None)

    def _device(self) -> torch.device:
        """Where inference runs: the device :meth:`to` chose, else ``config.device``."""
        chosen = getattr(self, "inference_device_", None)
        return chosen if chosen is not None else choose_device(self.config.device)

    @property
    def device_(self) -> torch.device:
        """The device of ``module_`` and of the recurrent state tensors in ``state_``."""
        return self._device()

    def to(self, device: str | torch.device) -> _TorchDetector:
        """Move ``module_`` and every tensor of the per-series stream states to ``device``
        (in place; later scoring runs there); returns self. ``"auto"`` picks CUDA when
        available. ``recurra.nn.persistence.load_estimator(path, map_location=d)`` calls it."""
        self.inference_device_ = choose_device(device)
        if self.module_ is not None:
            self.module_.to(self.inference_device_)
        for stream_state in (self.state_ or {}).values():
            stream_state.model_state = tensors_to(stream_state.model_state,
                                                  self.inference_device_)
        return self

    def _build_module(self, n_channels: int) -> torch.nn.Module:  # pragma: no cover
        raise NotImplementedError

    def _train_on(self, tensors: tuple[torch.Tensor, ...], step: Any,
                  counts: list[int]) -> None:
        """Build the module and fit it with the shared loop on shuffled mini-batches of
        ``tensors`` (equal first dimension; the last one of ``tensors[0]`` is the channels);
        ``counts`` are the rows of each series of ``fit_ids_`` in ``tensors``, in order.

        Each batch is ``(*tensors, series_index)``; a non-finite loss names its series. The
        per-epoch records go to ``history_`` (epoch, train_loss, val_loss=None, lr, seconds).
        """
        seed_everything(self.config.seed)
        self.module_ = self._build_module(tensors[0].shape[-1])
        generator = torch.Generator().manual_seed(self.config.seed)
        size = self.config.batch_size
        index = torch.repeat_interleave(torch.arange(len(counts)), torch.tensor(counts))
        tensors = (*tensors, index)
        ids = self.fit_ids_

        def batches():
            order = torch.randperm(tensors[0].shape[0], generator=generator)
            return [tuple(t[i] for t in tensors) for i in order.split(size)]

        def describe(batch: tuple[torch.Tensor, ...]) -> str:
            return describe_values([ids[i] for i in batch[-1].tolist()], batch[:-1])

        result = fit_module(self.module_, step, batches, None, self._train_config(),
                            describe_batch=describe)
        self.history_ = result.history
        self.module_.to(self._device()).eval()

    def _model_state(self) -> dict[str, Any]:
        return {"module": {k: v.cpu() for k, v in self.module_.state_dict().items()}}

    def _set_model_state(self, state: dict[str, Any]) -> None:
        self.module_ = self._build_module(len(self.channels_))
        self.module_.load_state_dict(state["module"])
        self.module_.to(self._device()).eval()


class ReconstructionDetector(_TorchDetector):
    """LSTM (or GRU; optionally bidirectional) autoencoder over sliding windows.

    A row's error is the squared reconstruction error of its observed cells (z-scored per
    channel with the training mean/std): with ``aggregate="causal"`` from the window ending
    at the row (streaming capable), with ``"overlap"`` the mean over every window covering
    it (offline only).  Good for shape anomalies (a pattern that does not look like the
    training windows) on regular series with few gaps.
    """

    input_kind = "filled"

    @property
    def streaming(self) -> bool:  # type: ignore[override]
        return self.config.aggregate == "causal"

    @property
    def tail_length(self) -> int:
        return self.config.window - 1

    def _encoder_cell(self) -> str:
        return self.config.cell

    def _build_module(self, n_channels: int) -> torch.nn.Module:
        config = self.config
        return WindowAutoencoder(n_channels, config.hidden_size, config.latent_size,
                                 self._encoder_cell(), config.num_layers, config.bidirectional)

    def _fit_model(self, chunks: list[Chunk]) -> None:
        limit_threads(self.config.n_threads)
        window = self.config.window
        stride = max(1, window // 8)
        tensors = [self._window_tensors(c, window, stride) for c in chunks]
        stacked = tuple(torch.cat([t[i] for t in tensors]) for i in range(4))

        def step(module, batch):
            bx, bobs, bdelta, btarget = batch[:4]
            reconstruction, _ = module(bx, bobs, bdelta)
            return masked_mse(reconstruction, btarget, bobs)

        self._train_on(stacked, step, [t[0].shape[0] for t in tensors])

    def _window_tensors(self, chunk: Chunk, window: int, stride: int = 1
                        ) -> tuple[torch.Tensor, ...]:
        inputs = chunk.filled if self.input_kind == "filled" else np.nan_to_num(chunk.values)
        parts = [sc.sliding_windows(a, window)[::stride]
                 for a in (inputs, chunk.observed, chunk.delta, chunk.values)]
        x, observed, delta, target = parts
        return (_tensor(x, torch.float32), _tensor(observed),
                _tensor(np.minimum(delta, 1e3), torch.float32), _tensor(target, torch.float32))

    def _errors(self, chunk: Chunk, n_new: int, model_state: Any) -> tuple[np.ndarray, Any]:
        window = self.config.window
        n_before = len(chunk.elapsed) - n_new
        if self.config.aggregate == "causal":
            padded = pad_left(chunk, window - 1 - n_before)
            errors = self._window_errors(padded, window)[:, -1]
            return errors[-n_new:], model_state
        padded = pad_left(chunk, window - 1)
        per_window = self._window_errors(padded, window)
        return sc.overlap_mean(per_window, len(padded.elapsed))[-n_new:], model_state

    def _window_errors(self, chunk: Chunk, window: int) -> np.ndarray:
        """(N, W, F) squared reconstruction errors of every window (stride 1)."""
        x, observed, delta, target = self._window_tensors(chunk, window)
        device = self._device()
        outputs = []
        with torch.no_grad():
            for start in range(0, x.shape[0], INFERENCE_BATCH):
                part = slice(start, start + INFERENCE_BATCH)
                reconstruction, _ = self.module_(x[part].to(device), observed[part].to(device),
                                                 delta[part].to(device))
                outputs.append(reconstruction.cpu().double().numpy())
        reconstruction = np.concatenate(outputs) if outputs else np.zeros(target.shape)
        return sc.masked_squared_error(target.double().numpy(), reconstruction,
                                       observed.numpy())


class GRUDAutoencoder(ReconstructionDetector):
    """GRU-D autoencoder: windows go in with their gaps (mask and time since last
    observation), only observed cells are reconstructed and scored, so a gap never raises an
    alarm by itself; a silence longer than ``max_gap`` is reported by ``predict`` as a
    ``data_quality`` event.  Good for irregular or gappy (multivariate) sensors.
    """

    input_kind = "raw"

    def _encoder_cell(self) -> str:
        return "grud"


class ForecastErrorDetector(_TorchDetector):
    """Telemanom-style detector: a small stateful recurrent net predicts each next row; the
    squared one-step error, EWMA-smoothed (``smoothing``), is the score.  The recurrent state
    is carried across ``update`` calls (no window, O(1) per point).  Good for series whose
    next value is predictable (traffic, utilisation) and for sudden level or spike changes.
    """

    chunk_length = 64

    @property
    def tail_length(self) -> int:
        return 1

    def _build_module(self, n_channels: int) -> torch.nn.Module:
        config = self.config
        cell = config.cell if config.cell in ("lstm", "gru") else "gru"
        return OneStepForecaster(n_channels, config.hidden_size, cell, config.num_layers)

    def _fit_model(self, chunks: list[Chunk]) -> None:
        limit_threads(self.config.n_threads)
        length = min(self.chunk_length, min(len(c.elapsed) for c in chunks))
        stride = max(1, length // 2)
        parts = [self._sequence_tensors(c, length, stride) for c in chunks]
        stacked = tuple(torch.cat([p[i] for p in parts]) for i in range(4))

        def step(module, batch):
            bx, bobs, btarget, btarget_obs = batch[:4]
            prediction, _ = module(bx, bobs, bx)
            return masked_mse(prediction, btarget, btarget_obs)

        self._train_on(stacked, step, [p[0].shape[0] for p in parts])

    @staticmethod
    def _sequence_tensors(chunk: Chunk, length: int, stride: int) -> tuple[torch.Tensor, ...]:
        inputs = sc.sliding_windows(chunk.filled[:-1], length)[::stride]
        observed = sc.sliding_windows(chunk.observed[:-1], length)[::stride]
        target = sc.sliding_windows(np.nan_to_num(chunk.values[1:]), length)[::stride]
        target_observed = sc.sliding_windows(chunk.observed[1:], length)[::stride]
        return (_tensor(inputs, torch.float32), _tensor(observed),
                _tensor(target, torch.float32), _tensor(target_observed))

    def _errors(self, chunk: Chunk, n_new: int, model_state: Any) -> tuple[np.ndarray, Any]:
        rnn_state, last_prediction = model_state if model_state is not None else (None, None)
        device = self._device()
        x = _tensor(chunk.filled[-n_new:][None], torch.float32).to(device)
        observed = _tensor(chunk.observed[-n_new:][None]).to(device)
        with torch.no_grad():
            prediction, rnn_state = self.module_(x, observed, x, rnn_state)
        prediction = prediction[0].cpu().double().numpy()
        previous = np.vstack([
            np.full((1, x.shape[-1]), np.nan) if last_prediction is None
            else last_prediction[None], prediction[:-1]])
        values = chunk.values[-n_new:]
        errors = np.where(np.isfinite(previous), (np.nan_to_num(values) - previous) ** 2, 0.0)
        return errors, (rnn_state, prediction[-1])
