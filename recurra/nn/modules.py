"""Torch building blocks of the RNN forecasters: encoders and the forecast network
(decoders: decoders.py, heads: heads.py).

Pure maths: ``forward(x, observed, delta, state=None) -> (y, state)``, no I/O, nothing
stored on ``self`` between calls.  Shapes follow ``torch.nn.modules.rnn``: B batch, T time
steps, F input variables, H hidden size, D directions (2 when bidirectional), L layers,
N horizon steps, O output variables, P distribution parameters per output.

Encoder paths
-------------
* fast: one ``nn.LSTM``/``nn.GRU`` per layer (cuDNN on CUDA), residual connections between
  layers, dropout on inputs/outputs; used when neither ``recurrent_dropout`` nor
  ``layer_norm`` is asked for.
* custom cell (:class:`RecurrentCell`): a Python time loop with layer-normalised gates and
  *variational* recurrent dropout (one mask on ``h`` per sequence, Gal & Ghahramani 2016).
* GRU-D (:class:`recurra.nn.grud.GRUD`): values, masks and deltas natively.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from recurra.data.schema import RecurraError
from recurra.nn.decoders import (  # noqa: F401 - re-exported: decoders live in decoders.py
    ATTENTIONS,
    Attention,
    DirectDecoder,
    SegmentDecoder,
    Seq2SeqDecoder,
    WindowSpec,
    patches,
    window_level,
)
from recurra.nn.heads import DistributionHead  # re-exported: heads live in heads.py

CELLS = ("lstm", "gru", "grud")
NORMALIZATIONS = ("none", "last", "revin")


@dataclass(frozen=True)
class EncoderSpec:
    """Shape and regularisation of a :class:`RecurrentEncoder` (checked by the caller)."""

    cell: str = "lstm"
    input_size: int = 1
    hidden_size: int = 32
    num_layers: int = 1
    dropout: float = 0.0
    recurrent_dropout: float = 0.0
    layer_norm: bool = False
    residual: bool = True
    learn_initial_state: bool = False
    bidirectional: bool = False


class RecurrentCell(nn.Module):
    """An LSTM or GRU cell with optional layer norm on the gates; one step per call.

    Inputs: ``x`` (B, I), ``state`` h (B, H) for GRU, (h, c) for LSTM.
    Output: the new state (same structure).
    """

    def __init__(self, cell: str, input_size: int, hidden_size: int, layer_norm: bool) -> None:
        super().__init__()
        self.cell, self.hidden_size = cell, hidden_size
        n_gates = 4 if cell == "lstm" else 3
        self.input_map = nn.Linear(input_size, n_gates * hidden_size)
        self.hidden_map = nn.Linear(hidden_size, n_gates * hidden_size)
        self.norm_input = nn.LayerNorm(n_gates * hidden_size) if layer_norm else nn.Identity()
        self.norm_hidden = nn.LayerNorm(n_gates * hidden_size) if layer_norm else nn.Identity()
        self.norm_cell = nn.LayerNorm(hidden_size) if layer_norm and cell == "lstm" \
            else nn.Identity()

    def forward(self, x: Tensor, state: Any) -> Any:
        size = self.hidden_size
        h = state[0] if self.cell == "lstm" else state
        gi = self.norm_input(self.input_map(x))
        gh = self.norm_hidden(self.hidden_map(h))
        if self.cell == "lstm":
            i, f, g, o = (gi + gh).chunk(4, dim=-1)
            c = torch.sigmoid(f) * state[1] + torch.sigmoid(i) * torch.tanh(g)
            return torch.sigmoid(o) * torch.tanh(self.norm_cell(c)), c
        rz = torch.sigmoid(gi[:, :2 * size] + gh[:, :2 * size])
        r, z = rz[:, :size], rz[:, size:]
        n = torch.tanh(gi[:, 2 * size:] + r * gh[:, 2 * size:])
        return (1 - z) * n + z * h


class RecurrentEncoder(nn.Module):
    r"""Stacked LSTM / GRU / GRU-D encoder.

    Inputs: ``x, observed, delta, state``
        x : (B, T, F) values (forward-filled for LSTM/GRU; anything where unobserved for
            GRU-D).
        observed : (B, T, F) mask; LSTM/GRU see it as F extra input channels.
        delta : (B, T, F) time since last observation (used by GRU-D only).
        state : from a previous call, or None (zeros or the learned initial state). For
            LSTM/GRU a tuple with one entry per layer: (h, c) each (D, B, H) for LSTM, h
            (D, B, H) for GRU; for GRU-D a :class:`recurra.nn.grud.GRUDState`.

    Outputs: ``output, state``
        output : (B, T, D * H) top-layer outputs; feeding ``state`` to the next call gives
            the same outputs as one pass over the concatenated sequence.
    """

    def __init__(self, spec: EncoderSpec) -> None:
        super().__init__()
        if spec.cell not in CELLS:
            raise RecurraError(f"cell ({spec.cell!r}) must be one of {list(CELLS)}")
        self.spec = spec
        self.directions = 2 if spec.bidirectional else 1
        self.output_size = self.directions * spec.hidden_size
        self.input_dropout = nn.Dropout(spec.dropout)
        self.output_dropout = nn.Dropout(spec.dropout)
        self.custom = spec.cell != "grud" and (spec.recurrent_dropout > 0 or spec.layer_norm)
        if spec.cell == "grud":
            self.grud = _make_grud(spec)
            return
        self.layers = nn.ModuleList()
        for index in range(spec.num_layers):
            size_in = 2 * spec.input_size if index == 0 else self.output_size
            if self.custom:
                self.layers.append(nn.ModuleList(
                    RecurrentCell(spec.cell, size_in, spec.hidden_size, spec.layer_norm)
                    for _ in range(self.directions)))
            else:
                rnn = nn.LSTM if spec.cell == "lstm" else nn.GRU
                self.layers.append(rnn(size_in, spec.hidden_size, batch_first=True,
                                       bidirectional=spec.bidirectional))
        n_states = 2 if spec.cell == "lstm" else 1
        self.initial_state = nn.Parameter(
            torch.zeros(spec.num_layers, n_states, self.directions, 1, spec.hidden_size),
            requires_grad=spec.learn_initial_state)

    def initial(self, batch_size: int) -> tuple:
        """The state before any step, one entry per layer."""
        init = self.initial_state.expand(-1, -1, -1, batch_size, -1)
        if self.spec.cell == "lstm":
            return tuple((layer[0].contiguous(), layer[1].contiguous()) for layer in init)
        return tuple(layer[0].contiguous() for layer in init)

    def forward(self, x: Tensor, observed: Tensor, delta: Tensor,
                state: Any = None) -> tuple[Tensor, Any]:
        if self.spec.cell == "grud":
            output, state = self.grud(self.input_dropout(x), observed, delta, state)
            return self.output_dropout(output), state
        if state is None:
            state = self.initial(x.shape[0])
        inputs = self.input_dropout(torch.cat([x, observed.to(x.dtype)], dim=-1))
        new_state = []
        for index, layer in enumerate(self.layers):
            if self.custom:
                output, layer_state = self._run_cells(layer, inputs, state[index])
            else:
                output, layer_state = layer(inputs, state[index])
            if self.spec.residual and index > 0:
                output = output + inputs
            new_state.append(layer_state)
            inputs = output
        return self.output_dropout(inputs), tuple(new_state)

    def _run_cells(self, cells: nn.ModuleList, inputs: Tensor, state: Any
                   ) -> tuple[Tensor, Any]:
        """Time loop over the custom cells, both directions; variational recurrent dropout."""
        outputs, finals = [], []
        for direction, cell in enumerate(cells):
            step_state = (state[0][direction], state[1][direction]) \
                if self.spec.cell == "lstm" else state[direction]
            mask = self._recurrent_mask(inputs)
            order = range(inputs.shape[1])
            order = reversed(order) if direction == 1 else order
            steps = [None] * inputs.shape[1]
            for t in order:
                if mask is not None:
                    step_state = _apply_mask(step_state, mask, self.spec.cell)
                step_state = cell(inputs[:, t], step_state)
                steps[t] = step_state[0] if self.spec.cell == "lstm" else step_state
            outputs.append(torch.stack(steps, dim=1))
            finals.append(step_state)
        output = torch.cat(outputs, dim=-1)
        if self.spec.cell == "lstm":
            return output, (torch.stack([f[0] for f in finals]),
                            torch.stack([f[1] for f in finals]))
        return output, torch.stack(finals)

    def _recurrent_mask(self, inputs: Tensor) -> Tensor | None:
        rate = self.spec.recurrent_dropout
        if not self.training or rate <= 0:
            return None
        keep = torch.full((inputs.shape[0], self.spec.hidden_size), 1 - rate,
                          device=inputs.device, dtype=inputs.dtype)
        return torch.bernoulli(keep) / (1 - rate)

    def last_hidden(self, output: Tensor) -> Tensor:
        """(B, D * H) summary of a sequence: the last output (both ends if bidirectional)."""
        if self.directions == 1:
            return output[:, -1]
        size = self.spec.hidden_size
        return torch.cat([output[:, -1, :size], output[:, 0, size:]], dim=-1)


def _apply_mask(state: Any, mask: Tensor, cell: str) -> Any:
    return (state[0] * mask, state[1]) if cell == "lstm" else state * mask


def _make_grud(spec: EncoderSpec) -> nn.Module:
    if spec.bidirectional or spec.layer_norm or spec.recurrent_dropout > 0:
        raise RecurraError("cell 'grud' supports neither bidirectional, layer_norm nor "
                           "recurrent_dropout: use cell 'lstm' or 'gru' for those")
    try:
        from recurra.nn.grud import GRUD
    except ImportError as error:  # pragma: no cover - grud.py is part of the package
        raise RecurraError(f"cell 'grud' needs recurra.nn.grud.GRUD, which failed to "
                           f"import ({error}); use cell 'lstm' or 'gru'") from error
    return GRUD(spec.input_size, spec.hidden_size, num_layers=spec.num_layers,
                dropout=spec.dropout, learn_initial_state=spec.learn_initial_state)


# The whole network -----------------------------------------------------------------------

class ForecastNet(nn.Module):
    """Encoder + decoder + head: the forecaster's network.

    Parameters
    ----------
    encoder : an :class:`EncoderSpec` whose ``input_size`` counts the value channels plus
        the covariates (covariates enter as always-observed channels).
    n_targets : O, forecast variables (a subset of the value channels).
    covariate_size : C, known-future covariates per step (0 = none).
    horizon : N. decoder : ``"direct"``, ``"seq2seq"``, ``"attention"`` or ``"linear"``
        (one linear map from the summary and the future covariates to every step's
        parameters: few weights, for long horizons on small data).
    static_size : S, static features per series, joined to the encoder summary (0 = none).
    attention : ``"luong"`` or ``"bahdanau"`` (decoder ``"attention"`` only).
    head : a :class:`DistributionHead` over O outputs (1 when channel-independent).
    window : a :class:`WindowSpec` (normalisation, channel independence, patches, linear
        skip) used by :meth:`forecast_window`; None = plain windows.

    ``forward(x, observed, delta, state=None, covariates=None, future=None, last=None,
    static=None)``
        x, observed, delta : (B, T, F) value channels; covariates (B, T, C); future
        (B, N, C) covariates of the horizon; last (B, O) last known targets (seq2seq);
        static (B, S) static features.
        Returns ``(params, state)``: params (B, N, O, P) forecast from the last step.
    """

    DECODERS = ("direct", "seq2seq", "attention", "linear", "segment")

    def __init__(self, encoder: EncoderSpec, n_targets: int, covariate_size: int,
                 horizon: int, decoder: str, head: DistributionHead,
                 attention: str = "luong", static_size: int = 0,
                 window: WindowSpec | None = None) -> None:
        super().__init__()
        self.window = window if window is not None else WindowSpec()
        self.skip = None
        if self.window.linear_skip:
            self.skip = nn.Linear(self.window.lookback, horizon)
        if decoder not in self.DECODERS:
            raise RecurraError(f"decoder ({decoder!r}) must be one of {list(self.DECODERS)}")
        self.encoder = RecurrentEncoder(encoder)
        self.head, self.decoder_kind = head, decoder
        self.from_last = False  # direct decoder: forecast the change from ``last``
        self.n_targets, self.covariate_size, self.horizon = n_targets, covariate_size, horizon
        self.static_size = static_size
        size = self.encoder.output_size + static_size
        if decoder == "linear":
            self.decoder = nn.Linear(size + horizon * covariate_size,
                                     horizon * n_targets * head.n_params)
        elif decoder == "segment":  # segments of patch_length steps, one channel table
            self.decoder = SegmentDecoder(
                size, encoder.hidden_size, horizon, self.window.patch_length,
                self.window.n_channels if self.window.channel_independent else 1,
                n_targets * head.n_params, encoder.dropout)
        elif decoder == "direct":
            self.decoder = DirectDecoder(size, covariate_size, horizon, encoder.hidden_size,
                                         encoder.dropout)
        else:
            self.decoder = Seq2SeqDecoder(size, n_targets, covariate_size, horizon,
                                          encoder.hidden_size,
                                          attention if decoder == "attention" else None,
                                          memory_size=self.encoder.output_size)
        assert head.linear.in_features == encoder.hidden_size, "head must read hidden_size"
        if self.window.linear_skip:  # the network starts as a zero correction
            head.start_at_zero({"linear": self.decoder, "segment": getattr(
                self.decoder, "out", None)}.get(decoder))

    def encode(self, x: Tensor, observed: Tensor, delta: Tensor, state: Any = None,
               covariates: Tensor | None = None) -> tuple[Tensor, Any]:
        """(B, T, E) encoder outputs and the state; covariates join as observed channels."""
        if covariates is not None and covariates.shape[-1] > 0:
            ones = torch.ones_like(covariates)
            x = torch.cat([x, covariates.to(x.dtype)], dim=-1)
            observed = torch.cat([observed.to(x.dtype), ones], dim=-1)
            delta = torch.cat([delta.to(x.dtype), ones], dim=-1)
        return self.encoder(x, observed, delta, state)

    def decode(self, summary: Tensor, last: Tensor | None, future: Tensor | None,
               teacher: Tensor | None = None, teacher_mask: Tensor | None = None,
               teacher_prob: float = 0.0, memory: Tensor | None = None,
               static: Tensor | None = None, channel: Tensor | None = None) -> Tensor:
        """(M, N, O, P) parameters from summaries (M, E) (+ last (M, O), future (M, N, C),
        static (M, S), channel (M,) channel indices for the ``"segment"`` decoder)."""
        if self.covariate_size == 0:
            future = None
        if self.static_size:
            if static is None:
                raise RecurraError(f"this network was built with static_size "
                                   f"{self.static_size}: pass static features")
            summary = torch.cat([summary, static.to(summary.dtype)], dim=-1)
        if self.decoder_kind == "linear":
            inputs = summary if future is None else torch.cat([summary, future.flatten(1)], -1)
            return self.head.transform(self.decoder(inputs).unflatten(-1, (self.horizon, -1)))
        if self.decoder_kind == "segment":
            return self.head.transform(self.decoder(summary, channel))
        if self.decoder_kind == "direct":
            params = self.head(self.decoder(summary, future))
            if not self.from_last or last is None:
                return params
            shift = last.to(params.dtype)[:, None, :, None]          # (M, 1, O, 1)
            if self.head.kind in ("quantile", "point"):              # every param a location
                return params + shift
            return torch.cat([params[..., :1] + shift, params[..., 1:]], dim=-1)
        if last is None:
            raise RecurraError(f"decoder {self.decoder_kind!r} needs the last target values")
        return self.decoder(summary, last, future, self.head, teacher, teacher_mask,
                            teacher_prob, memory if self.decoder_kind == "attention" else None)

    def forward(self, x: Tensor, observed: Tensor, delta: Tensor, state: Any = None,
                covariates: Tensor | None = None, future: Tensor | None = None,
                last: Tensor | None = None, static: Tensor | None = None
                ) -> tuple[Tensor, Any]:
        output, state = self.encode(x, observed, delta, state, covariates)
        params = self.decode(self.encoder.last_hidden(output), last, future, memory=output,
                             static=static)
        return params, state

    def forecast_window(self, x: Tensor, observed: Tensor, delta: Tensor,
                        covariates: Tensor | None = None, future: Tensor | None = None,
                        last: Tensor | None = None, teacher: Tensor | None = None,
                        teacher_mask: Tensor | None = None, teacher_prob: float = 0.0,
                        static: Tensor | None = None, targets: list[int] | None = None
                        ) -> Tensor:
        """(B, N, O, P) parameters from stateless windows, applying :attr:`window`.

        x, observed, delta : (B, T, F); covariates (B, T, C); future (B, N, C); last (B, O)
        and teacher / teacher_mask (B, N, O) over the ``targets`` channels (all channels
        when channel-independent); static (B, S).
        """
        spec = self.window
        targets = list(range(x.shape[-1])) if targets is None else list(targets)
        level, spread = window_level(x, spec.normalization)
        if spec.normalization != "none":
            x = (x - level) / spread
            out_level, out_spread = level[:, :, targets], spread[:, :, targets]
            last = None if last is None else (last - out_level[:, 0]) / out_spread[:, 0]
            teacher = None if teacher is None else (teacher - out_level) / out_spread
        n_batch, n_channels = x.shape[0], x.shape[-1]
        if spec.channel_independent:
            def split(t: Tensor | None) -> Tensor | None:  # (B, T, F) -> (B * F, T, 1)
                return None if t is None else t.transpose(1, 2).reshape(-1, t.shape[1], 1)

            def repeat(t: Tensor | None) -> Tensor | None:
                return None if t is None else t.repeat_interleave(n_channels, dim=0)
            x, observed, delta = split(x), split(observed), split(delta)
            last = None if last is None else last.reshape(-1, 1)
            teacher, teacher_mask = split(teacher), split(teacher_mask)
            covariates, future, static = repeat(covariates), repeat(future), repeat(static)
        values = x
        if covariates is not None and covariates.shape[-1] > 0:
            ones = torch.ones_like(covariates)
            x = torch.cat([x, covariates.to(x.dtype)], dim=-1)
            observed = torch.cat([observed.to(x.dtype), ones], dim=-1)
            delta = torch.cat([delta.to(x.dtype), ones], dim=-1)
        if spec.patch_length > 1:
            x, observed, delta = (patches(t, spec.patch_length) for t in (x, observed, delta))
        output, _ = self.encoder(x, observed, delta)
        channel = None
        if spec.channel_independent:  # rows are (window, channel) pairs
            channel = torch.arange(n_batch * n_channels, device=x.device) % n_channels
        params = self.decode(self.encoder.last_hidden(output), last, future, teacher,
                             teacher_mask, teacher_prob, memory=output, static=static,
                             channel=channel)
        if self.skip is not None:
            if values.shape[1] != spec.lookback:
                raise RecurraError(f"linear_skip needs windows of lookback ({spec.lookback}) "
                                   f"steps, got {values.shape[1]}; pass a longer history")
            offset = self.skip(values.transpose(1, 2)).transpose(1, 2)  # (B', N, F')
            params = self.head.shift(params, offset if spec.channel_independent
                                     else offset[..., targets])
        if spec.channel_independent:
            params = params.reshape(n_batch, n_channels, *params.shape[1:3], -1)[:, :, :, 0]
            params = params.transpose(1, 2)[:, :, targets]
        if spec.normalization != "none":
            params = self.head.rescale(params, out_level, out_spread)
        return params
