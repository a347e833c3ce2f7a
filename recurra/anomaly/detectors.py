"""Neural detectors: LSTM autoencoder, GRU-D autoencoder, forecast-error (telemanom).

Example::

    det = ReconstructionDetector(AutoencoderConfig(
        window=16, train=replace(DETECTOR_TRAIN, max_epochs=3))).fit(train)
    det.score(new)      # series_id | timestamp | score | is_anomaly | contribution_<ch>
    det.predict(new)    # events: start, end, peak_score, severity, channels, kind
    det.update(more)    # streaming, state carried

Each detector is :class:`recurra.anomaly.base.BaseDetector` holding one error model:

* :class:`WindowErrors` - squared reconstruction errors of a
  :class:`~recurra.anomaly.modules.WindowAutoencoder` over sliding windows (LSTM / GRU
  encoder on forward-filled values, or GRU-D on the raw values with their gaps);
* :class:`OneStepErrors` - squared one-step errors of a stateful
  :class:`~recurra.anomaly.modules.OneStepForecaster` (the recurrent state is the model
  state carried per series).

Both hold their network in a :class:`recurra.anomaly.neural.TorchModel` (``net``), trained
with the shared loop :func:`recurra.nn.train.fit_module`.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recurra.anomaly import scores as sc
from recurra.anomaly.base import BaseDetector
from recurra.anomaly.config import DETECTOR_TRAIN, AutoencoderConfig, ForecastErrorConfig
from recurra.anomaly.modules import OneStepForecaster, WindowAutoencoder
from recurra.anomaly.neural import INFERENCE_BATCH, TorchModel, as_tensor, masked_mse
from recurra.anomaly.stream import Chunk, pad_left

__all__ = ["DETECTOR_TRAIN", "AutoencoderConfig", "ForecastErrorConfig",
           "ForecastErrorDetector", "GRUDAutoencoder", "OneStepErrors",
           "ReconstructionDetector", "WindowErrors", "masked_mse"]
INPUTS = ("filled", "raw")


class WindowErrors:
    """Reconstruction errors of a window autoencoder (an :class:`ErrorModel`).

    config : the detector's :class:`AutoencoderConfig` (``window``, ``network``, ``train``,
        ``aggregate``).
    cell : the encoder (``"lstm"``, ``"gru"`` or ``"grud"``; default ``network.cell``).
    inputs : ``"filled"`` (forward-filled values, for LSTM / GRU) or ``"raw"`` (values with
        0 where unobserved: GRU-D imputes with its decays).
    """

    float32_inputs = True

    def __init__(self, config: AutoencoderConfig, cell: str | None = None,
                 inputs: str = "filled") -> None:
        if inputs not in INPUTS:
            raise ValueError(f"inputs ({inputs!r}) must be one of {list(INPUTS)}")
        self.config = config
        self.cell = config.network.cell if cell is None else cell
        self.inputs = inputs
        self.net = TorchModel(config.train, self._build, config.n_threads)

    @classmethod
    def grud(cls, config: AutoencoderConfig) -> WindowErrors:
        """The GRU-D autoencoder's errors: windows go in with their gaps."""
        return cls(config, cell="grud", inputs="raw")

    @property
    def tail_length(self) -> int:
        return self.config.window - 1

    @property
    def streaming(self) -> bool:
        return self.config.aggregate == "causal"

    def _build(self, n_channels: int) -> torch.nn.Module:
        network = self.config.network
        return WindowAutoencoder(n_channels, network.hidden_size, network.latent_size,
                                 self.cell, network.num_layers, network.bidirectional)

    def fit(self, chunks: list[Chunk], series_ids: list[str]) -> None:
        window = self.config.window
        stride = max(1, window // 8)
        tensors = [self.window_tensors(c, window, stride) for c in chunks]
        stacked = tuple(torch.cat([t[i] for t in tensors]) for i in range(4))

        def step(module, batch):
            bx, bobs, bdelta, btarget = batch[:4]
            reconstruction, _ = module(bx, bobs, bdelta)
            return masked_mse(reconstruction, btarget, bobs)

        self.net.train(stacked, step, [t[0].shape[0] for t in tensors], series_ids)

    def window_tensors(self, chunk: Chunk, window: int, stride: int = 1
                       ) -> tuple[torch.Tensor, ...]:
        """``(x, observed, delta, target)``: (N, W, F) windows of ``chunk``, every ``stride``."""
        values = chunk.filled if self.inputs == "filled" else np.nan_to_num(chunk.values)
        parts = [sc.sliding_windows(a, window)[::stride]
                 for a in (values, chunk.observed, chunk.delta, chunk.values)]
        x, observed, delta, target = parts
        return (as_tensor(x, torch.float32), as_tensor(observed),
                as_tensor(np.minimum(delta, 1e3), torch.float32),
                as_tensor(target, torch.float32))

    def errors(self, chunk: Chunk, n_new: int, model_state: Any) -> tuple[np.ndarray, Any]:
        window = self.config.window
        n_before = len(chunk.elapsed) - n_new
        if self.config.aggregate == "causal":
            padded = pad_left(chunk, window - 1 - n_before)
            errors = self.window_errors(padded, window)[:, -1]
            return errors[-n_new:], model_state
        padded = pad_left(chunk, window - 1)
        per_window = self.window_errors(padded, window)
        return sc.overlap_mean(per_window, len(padded.elapsed))[-n_new:], model_state

    def window_errors(self, chunk: Chunk, window: int) -> np.ndarray:
        """(N, W, F) squared reconstruction errors of every window (stride 1)."""
        x, observed, delta, target = self.window_tensors(chunk, window)
        device = self.net.device()
        outputs = []
        with torch.no_grad():
            for start in range(0, x.shape[0], INFERENCE_BATCH):
                part = slice(start, start + INFERENCE_BATCH)
                reconstruction, _ = self.net.module_(x[part].to(device),
                                                     observed[part].to(device),
                                                     delta[part].to(device))
                outputs.append(reconstruction.cpu().double().numpy())
        reconstruction = np.concatenate(outputs) if outputs else np.zeros(target.shape)
        return sc.masked_squared_error(target.double().numpy(), reconstruction,
                                       observed.numpy())

    def get_state(self) -> dict[str, Any]:
        return self.net.get_state()

    def set_state(self, state: dict[str, Any], n_channels: int) -> None:
        self.net.set_state(state, n_channels)


class OneStepErrors:
    """Squared one-step errors of a stateful recurrent forecaster (an :class:`ErrorModel`).

    The model state carried per series is ``(recurrent state, last prediction)``; no window,
    O(1) per point.  Trains on sequences of ``chunk_length`` rows, half overlapping.
    """

    float32_inputs = True
    streaming = True
    tail_length = 1
    chunk_length = 64

    def __init__(self, config: ForecastErrorConfig) -> None:
        self.config = config
        self.net = TorchModel(config.train, self._build, config.n_threads)

    def _build(self, n_channels: int) -> torch.nn.Module:
        network = self.config.network
        return OneStepForecaster(n_channels, network.hidden_size, network.cell,
                                 network.num_layers)

    def fit(self, chunks: list[Chunk], series_ids: list[str]) -> None:
        length = min(self.chunk_length, min(len(c.elapsed) for c in chunks))
        stride = max(1, length // 2)
        parts = [self.sequence_tensors(c, length, stride) for c in chunks]
        stacked = tuple(torch.cat([p[i] for p in parts]) for i in range(4))

        def step(module, batch):
            bx, bobs, btarget, btarget_obs = batch[:4]
            prediction, _ = module(bx, bobs, bx)
            return masked_mse(prediction, btarget, btarget_obs)

        self.net.train(stacked, step, [p[0].shape[0] for p in parts], series_ids)

    @staticmethod
    def sequence_tensors(chunk: Chunk, length: int, stride: int) -> tuple[torch.Tensor, ...]:
        """``(inputs, observed, target, target_observed)``: (N, length, F) training pairs."""
        inputs = sc.sliding_windows(chunk.filled[:-1], length)[::stride]
        observed = sc.sliding_windows(chunk.observed[:-1], length)[::stride]
        target = sc.sliding_windows(np.nan_to_num(chunk.values[1:]), length)[::stride]
        target_observed = sc.sliding_windows(chunk.observed[1:], length)[::stride]
        return (as_tensor(inputs, torch.float32), as_tensor(observed),
                as_tensor(target, torch.float32), as_tensor(target_observed))

    def errors(self, chunk: Chunk, n_new: int, model_state: Any) -> tuple[np.ndarray, Any]:
        rnn_state, last_prediction = model_state if model_state is not None else (None, None)
        device = self.net.device()
        x = as_tensor(chunk.filled[-n_new:][None], torch.float32).to(device)
        observed = as_tensor(chunk.observed[-n_new:][None]).to(device)
        with torch.no_grad():
            prediction, rnn_state = self.net.module_(x, observed, x, rnn_state)
        prediction = prediction[0].cpu().double().numpy()
        previous = np.vstack([
            np.full((1, x.shape[-1]), np.nan) if last_prediction is None
            else last_prediction[None], prediction[:-1]])
        values = chunk.values[-n_new:]
        errors = np.where(np.isfinite(previous), (np.nan_to_num(values) - previous) ** 2, 0.0)
        return errors, (rnn_state, prediction[-1])

    def get_state(self) -> dict[str, Any]:
        return self.net.get_state()

    def set_state(self, state: dict[str, Any], n_channels: int) -> None:
        self.net.set_state(state, n_channels)


class ReconstructionDetector(BaseDetector):
    """LSTM (or GRU; optionally bidirectional) autoencoder over sliding windows.

    A row's error is the squared reconstruction error of its observed cells (z-scored per
    channel with the training mean/std): with ``aggregate="causal"`` from the window ending
    at the row (streaming capable), with ``"overlap"`` the mean over every window covering
    it (offline only).  Good for shape anomalies (a pattern that does not look like the
    training windows) on regular series with few gaps.
    """

    config_class = AutoencoderConfig
    error_model_factory = staticmethod(WindowErrors)


class GRUDAutoencoder(BaseDetector):
    """GRU-D autoencoder: windows go in with their gaps (mask and time since last
    observation), only observed cells are reconstructed and scored, so a gap never raises an
    alarm by itself; a silence longer than ``max_gap`` is reported by ``predict`` as a
    ``data_quality`` event.  Good for irregular or gappy (multivariate) sensors.
    """

    config_class = AutoencoderConfig
    error_model_factory = staticmethod(WindowErrors.grud)


class ForecastErrorDetector(BaseDetector):
    """Telemanom-style detector: a small stateful recurrent net predicts each next row; the
    squared one-step error, EWMA-smoothed (``smoothing``), is the score.  The recurrent state
    is carried across ``update`` calls (no window, O(1) per point).  Good for series whose
    next value is predictable (traffic, utilisation) and for sudden level or spike changes.
    """

    config_class = ForecastErrorConfig
    error_model_factory = staticmethod(OneStepErrors)
