"""Torch decoders of the RNN forecasters and the window transforms they rely on.

Pure maths, as in :mod:`recurra.nn.modules` (same shape letters: B batch, T time steps,
F input variables, E encoder summary size, N horizon steps, C future covariates).
:class:`recurra.nn.modules.ForecastNet` composes one encoder and one of these decoders.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from recurra.data.schema import RecurraError
from recurra.nn.heads import DistributionHead

ATTENTIONS = ("luong", "bahdanau")


@dataclass(frozen=True)
class WindowSpec:
    """How a stateless :class:`ForecastNet` reads a look-back window (checked by the caller).

    normalization : ``"none"``, ``"last"`` (subtract each window's last value per channel)
        or ``"revin"`` (subtract the window mean, divide by its std); outputs are mapped
        back, so losses and forecasts stay in the caller's units.
    channel_independent : each of the ``n_channels`` channels is a separate univariate
        sample sharing the weights (every channel is then a target).
    patch_length : P consecutive steps form one encoder step (T / P recurrent steps).
    linear_skip : a linear map T -> N of each normalised channel added to the location.
    lookback : T (the linear skip's input size). n_channels : F value channels.
    """

    normalization: str = "none"
    channel_independent: bool = False
    patch_length: int = 1
    linear_skip: bool = False
    lookback: int = 1
    n_channels: int = 1


def window_level(x: Tensor, normalization: str) -> tuple[Tensor, Tensor]:
    """(B, 1, F) level and spread of windows ``x`` (B, T, F) for ``normalization``."""
    ones = torch.ones_like(x[:, -1:])
    if normalization == "last":
        return x[:, -1:], ones
    if normalization == "revin":
        return x.mean(dim=1, keepdim=True), torch.sqrt(x.var(dim=1, keepdim=True,
                                                             unbiased=False) + 1e-5)
    return torch.zeros_like(ones), ones


def patches(x: Tensor, patch_length: int) -> Tensor:
    """(B, T, I) -> (B, T / P, P * I): P consecutive steps side by side."""
    n_batch, length, width = x.shape
    if length % patch_length:
        raise RecurraError(f"window length ({length}) must be a multiple of patch_length "
                           f"({patch_length}); pass at least lookback rows of history")
    return x.reshape(n_batch, length // patch_length, patch_length * width)


# Decoders --------------------------------------------------------------------------------

class DirectDecoder(nn.Module):
    """An MLP from the encoder summary (+ future covariates) to all N steps at once.

    Inputs: ``summary`` (B, E), ``future`` (B, N, C) or None. Output: (B, N, hidden) features.
    """

    def __init__(self, summary_size: int, covariate_size: int, horizon: int,
                 hidden_size: int, dropout: float) -> None:
        super().__init__()
        self.horizon, self.hidden_size = horizon, hidden_size
        self.net = nn.Sequential(
            nn.Linear(summary_size + horizon * covariate_size, 2 * hidden_size), nn.GELU(),
            nn.Dropout(dropout), nn.Linear(2 * hidden_size, horizon * hidden_size), nn.GELU())

    def forward(self, summary: Tensor, future: Tensor | None) -> Tensor:
        inputs = summary if future is None else torch.cat([summary, future.flatten(1)], -1)
        return self.net(inputs).unflatten(-1, (self.horizon, self.hidden_size))


class Attention(nn.Module):
    """Luong ("general") or Bahdanau (additive) attention over encoder outputs.

    Inputs: ``query`` (B, H), ``memory`` (B, M, E). Output: context (B, E).
    """

    def __init__(self, kind: str, query_size: int, memory_size: int) -> None:
        super().__init__()
        if kind not in ATTENTIONS:
            raise RecurraError(f"attention ({kind!r}) must be one of {list(ATTENTIONS)}")
        self.kind = kind
        if kind == "luong":
            self.project = nn.Linear(query_size, memory_size, bias=False)
        else:
            self.query_map = nn.Linear(query_size, query_size, bias=False)
            self.memory_map = nn.Linear(memory_size, query_size)
            self.score = nn.Linear(query_size, 1, bias=False)

    def forward(self, query: Tensor, memory: Tensor) -> Tensor:
        if self.kind == "luong":
            scores = torch.bmm(memory, self.project(query).unsqueeze(-1)).squeeze(-1)
        else:
            scores = self.score(torch.tanh(self.memory_map(memory)
                                           + self.query_map(query).unsqueeze(1))).squeeze(-1)
        weights = torch.softmax(scores, dim=-1)
        return torch.bmm(weights.unsqueeze(1), memory).squeeze(1)


class Seq2SeqDecoder(nn.Module):
    """Autoregressive GRU-cell decoder with teacher forcing / scheduled sampling.

    At step n it reads the previous value of the O targets (the truth with probability
    ``teacher_prob`` when observed, else its own point forecast) and the covariates of step
    n, optionally attends over the encoder outputs, and emits features for the head.

    Inputs: ``summary`` (B, E) (encoder summary, plus static features when any), ``last``
    (B, O) last known target values, ``future``
    (B, N, C) or None, ``head`` (to turn features into point forecasts), ``teacher``
    (B, N, O) and ``teacher_mask`` (B, N, O) or None, ``teacher_prob`` in [0, 1],
    ``memory`` (B, M, E) encoder outputs for attention or None.
    Output: (B, N, P_total) parameters from ``head``.
    """

    def __init__(self, summary_size: int, n_targets: int, covariate_size: int, horizon: int,
                 hidden_size: int, attention: str | None, memory_size: int | None = None
                 ) -> None:
        super().__init__()
        self.horizon = horizon
        memory_size = summary_size if memory_size is None else memory_size
        self.init = nn.Linear(summary_size, hidden_size)
        self.cell = nn.GRUCell(n_targets + covariate_size, hidden_size)
        self.attention = None if attention is None else Attention(attention, hidden_size,
                                                                  memory_size)
        out_in = hidden_size + (memory_size if attention else 0)
        self.out = nn.Sequential(nn.Linear(out_in, hidden_size), nn.GELU())

    def forward(self, summary: Tensor, last: Tensor, future: Tensor | None,
                head: DistributionHead, teacher: Tensor | None = None,
                teacher_mask: Tensor | None = None, teacher_prob: float = 0.0,
                memory: Tensor | None = None) -> Tensor:
        hidden = torch.tanh(self.init(summary))
        previous, outputs = last, []
        for step in range(self.horizon):
            inputs = previous if future is None else torch.cat([previous, future[:, step]], -1)
            hidden = self.cell(inputs, hidden)
            features = hidden
            if self.attention is not None and memory is not None:
                features = torch.cat([hidden, self.attention(hidden, memory)], dim=-1)
            params = head(self.out(features))
            outputs.append(params)
            previous = head.point(params)
            if teacher is not None and teacher_prob > 0:
                use = teacher_mask[:, step].to(torch.bool)
                if teacher_prob < 1:
                    draw = torch.rand(use.shape[0], 1, device=use.device) < teacher_prob
                    use = use & draw
                previous = torch.where(use, teacher[:, step], previous)
        return torch.stack(outputs, dim=1)


class SegmentDecoder(nn.Module):
    """SegRNN's parallel multi-step decoding (Lin et al. 2023): the horizon is cut into M
    segments of ``segment_length`` steps; segment m's input is a learned position embedding
    joined to a learned channel embedding, one GRU-cell step from the encoder summary turns
    it into features, and a linear map emits the segment's steps (all M in parallel).

    Inputs: ``summary`` (B, E), ``channel`` (B,) int64 channel index (0 when not
    channel-independent). Output: (B, N, out_size) raw values for the head's transform.
    """

    def __init__(self, summary_size: int, hidden_size: int, horizon: int,
                 segment_length: int, n_channels: int, out_size: int, dropout: float) -> None:
        super().__init__()
        self.horizon, self.segment_length = horizon, segment_length
        self.n_segments = -(-horizon // segment_length)
        half = hidden_size // 2
        self.position = nn.Parameter(torch.randn(self.n_segments, half) * 0.1)
        self.channel = nn.Parameter(torch.randn(max(1, n_channels), hidden_size - half) * 0.1)
        self.init = nn.Linear(summary_size, hidden_size)
        self.cell = nn.GRUCell(hidden_size, hidden_size)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(hidden_size, segment_length * out_size)

    def forward(self, summary: Tensor, channel: Tensor | None = None) -> Tensor:
        n_batch, n_segments = summary.shape[0], self.n_segments
        if channel is None:
            channel = torch.zeros(n_batch, dtype=torch.long, device=summary.device)
        hidden = torch.tanh(self.init(summary)).repeat_interleave(n_segments, dim=0)
        inputs = torch.cat([self.position.repeat(n_batch, 1),
                            self.channel[channel].repeat_interleave(n_segments, dim=0)], -1)
        features = self.dropout(self.cell(inputs, hidden))           # (B * M, H)
        raw = self.out(features).reshape(n_batch, n_segments * self.segment_length, -1)
        return raw[:, :self.horizon]
