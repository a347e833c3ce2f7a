"""Pure-maths torch modules of the anomaly detectors (no I/O, no state kept on ``self``).

* :class:`WindowAutoencoder` - sequence autoencoder over a window (Malhotra et al. 2016):
  a recurrent encoder (LSTM / GRU, optionally bidirectional, or GRU-D for gappy series,
  all from :class:`recurra.nn.modules.RecurrentEncoder`) summarises the window into a
  latent vector, an LSTM decoder unrolls it back into the window.
* :class:`OneStepForecaster` - a stateful recurrent net predicting the next row (telemanom).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from recurra.nn.modules import EncoderSpec, RecurrentEncoder


class WindowAutoencoder(nn.Module):
    r"""Reconstruct a window of F channels from a ``latent_size`` summary.

    Inputs: ``x, observed, delta``
        x : (B, W, F) values (forward-filled for LSTM/GRU; anything where unobserved for
            GRU-D, which imputes with its decays).
        observed : (B, W, F) mask.  delta : (B, W, F) steps since last observation.

    Outputs: ``reconstruction, None``
        reconstruction : (B, W, F).

    >>> model = WindowAutoencoder(2, hidden_size=8, latent_size=4)
    >>> x = torch.zeros(3, 10, 2)
    >>> model(x, torch.ones_like(x, dtype=torch.bool), torch.ones_like(x))[0].shape
    torch.Size([3, 10, 2])
    """

    def __init__(self, n_channels: int, hidden_size: int, latent_size: int, cell: str = "lstm",
                 num_layers: int = 1, bidirectional: bool = False) -> None:
        super().__init__()
        spec = EncoderSpec(cell=cell, input_size=n_channels, hidden_size=hidden_size,
                           num_layers=num_layers, bidirectional=bidirectional and cell != "grud")
        self.encoder = RecurrentEncoder(spec)
        self.to_latent = nn.Linear(self.encoder.output_size, latent_size)
        self.decoder = nn.LSTM(latent_size, hidden_size, batch_first=True)
        self.head = nn.Linear(hidden_size, n_channels)

    def forward(self, x: Tensor, observed: Tensor, delta: Tensor, state: Any = None
                ) -> tuple[Tensor, None]:
        del state
        output, _ = self.encoder(x, observed, delta)
        latent = torch.tanh(self.to_latent(self.encoder.last_hidden(output)))
        unrolled, _ = self.decoder(latent.unsqueeze(1).expand(-1, x.shape[1], -1).contiguous())
        return self.head(unrolled), None


class OneStepForecaster(nn.Module):
    r"""Predict row ``t + 1`` from rows ``<= t``; the state carries across calls.

    Inputs: ``x, observed, delta, state``
        x : (B, T, F) forward-filled values; observed : (B, T, F) mask; delta : unused by
        LSTM/GRU; state : from the previous call or None.

    Outputs: ``prediction, state``
        prediction : (B, T, F), row t is the forecast of row t + 1.

    >>> model = OneStepForecaster(1, hidden_size=4)
    >>> x = torch.zeros(2, 6, 1)
    >>> y, s = model(x, torch.ones_like(x, dtype=torch.bool), x)
    >>> y2, _ = model(x[:, 3:], torch.ones(2, 3, 1, dtype=torch.bool), x[:, 3:],
    ...               model(x[:, :3], torch.ones(2, 3, 1, dtype=torch.bool), x[:, :3])[1])
    >>> bool(torch.allclose(y[:, 3:], y2, atol=1e-6))
    True
    """

    def __init__(self, n_channels: int, hidden_size: int, cell: str = "gru",
                 num_layers: int = 1) -> None:
        super().__init__()
        spec = EncoderSpec(cell=cell, input_size=n_channels, hidden_size=hidden_size,
                           num_layers=num_layers)
        self.encoder = RecurrentEncoder(spec)
        self.head = nn.Linear(self.encoder.output_size, n_channels)

    def forward(self, x: Tensor, observed: Tensor, delta: Tensor, state: Any = None
                ) -> tuple[Tensor, Any]:
        output, state = self.encoder(x, observed, delta, state)
        return x + self.head(output), state
