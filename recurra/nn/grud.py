"""GRU-D (Che et al. 2018): a GRU for multivariate series with missing values.

Per variable ``d`` and step ``t`` with value ``x``, mask ``m`` (1 = observed) and ``delta``
(time since the variable was last observed, :func:`recurra.data.arrays.compute_delta`)::

    gamma_x = exp(-max(0, w_x * delta + b_x))                # input decay, diagonal w_x
    x_hat   = m * x + (1 - m) * (gamma_x * x_last + (1 - gamma_x) * x_mean)
    gamma_h = exp(-max(0, W_h delta + b_h))                  # hidden decay, (H x F) W_h
    h_hat   = gamma_h * h_{t-1}
    r = sigmoid(W_ir x_hat + V_r m + b_ir + W_hr h_hat + b_hr)
    z = sigmoid(W_iz x_hat + V_z m + b_iz + W_hz h_hat + b_hz)
    n = tanh(W_in x_hat + V_n m + b_in + r * (W_hn h_hat + b_hn))
    h_t = (1 - z) * n + z * h_hat

``x_last`` is the last observed value of the variable (``x_mean`` before the first one) and
``x_mean`` the empirical mean on the training data (:meth:`GRUD.set_empirical_mean`,
:func:`recurra.data.missing.channel_means`).  The gates follow PyTorch's ``nn.GRU`` convention (gate
order r, z, n; reset applied to ``W_hn h + b_hn``; ``h = (1-z) n + z h``) rather than the
paper's ``r * h`` inside the matmul: with every value observed, both decays switched off and
the mask weights ``V`` at zero, the first layer *is* ``nn.GRU`` with the same weights, and
one recurrent matmul per step serves all three gates.

Speed: everything that depends only on the inputs (decays, ``x_last`` by a vectorised
forward fill, ``x_hat``, the input and mask projections of all gates, as two in-place
matmuls so that no gradient is formed for the mask) is computed for all T steps in batched
ops; the time loop (:mod:`recurra.nn.grud_kernel`) only does ``h_hat @ W_hh^T`` and the
gate arithmetic, into preallocated buffers.  It has a hand-written backward (checked with
``torch.autograd.gradcheck``): one matmul and a few element-wise ops per step in reverse,
the weight and decay gradients as batched ops after it.  On the P4 shapes (B 64, T 48,
F 37, H 64) one training step costs about 20 ms of CPU on one thread, most of it matmul
FLOPs (``torch.jit.script`` of the loop was measured no faster on CPU with torch 2.13, and
is not offered).  Double backward through the fused loop is not supported (use
``loop="python"``).

Stacking: layers above the first see the (fully observed) output of the layer below, so they
are plain GRU layers (one ``nn.GRU``, fused kernels), with ``dropout`` between layers.

Example
-------
>>> model = GRUD(input_size=3, hidden_size=8)
>>> x, delta = torch.zeros(2, 5, 3), torch.ones(2, 5, 3)
>>> observed = torch.ones(2, 5, 3, dtype=torch.bool)
>>> output, state = model(x, observed, delta)
>>> output.shape, state.hidden.shape, state.x_last.shape
(torch.Size([2, 5, 8]), torch.Size([1, 2, 8]), torch.Size([2, 3]))
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from recurra.data.schema import RecurraError
from recurra.nn import grud_kernel as kernel
from recurra.nn.grud_kernel import fused_recurrence, recurrence

LOOP_BACKENDS = ("auto", "fused", "python")


class GRUDState(NamedTuple):
    """What GRU-D carries from one chunk to the next.

    hidden : (num_layers, B, H) hidden state of every layer.
    x_last : (B, F) last observed value per variable (``x_mean`` where none seen yet).
    seen : (B, F) bool, whether the variable has been observed at all.
    """

    hidden: Tensor
    x_last: Tensor
    seen: Tensor

    def detach(self) -> GRUDState:
        """The same state cut from the autograd graph (truncated back-propagation)."""
        return GRUDState(self.hidden.detach(), self.x_last.detach(), self.seen.detach())


# the loop implementations live in grud_kernel.py; the old private names stay importable
_recurrence, _fused_recurrence = recurrence, fused_recurrence
_FusedRecurrence = kernel._FusedRecurrence


class GRUD(nn.Module):
    r"""GRU-D encoder: input decay, hidden decay and masks fed to the gates.

    Parameters
    ----------
    input_size : F, the number of variables.
    hidden_size : H.
    num_layers : stacked layers; the first is GRU-D, those above are plain GRU layers.
    dropout : dropout on the outputs of every layer except the last (as ``nn.GRU``).
    learn_initial_state : learn the initial hidden state instead of zeros.
    input_decay, hidden_decay : switch the two decays (ablations; off = no decay).
    loop : how the time loop runs: ``"fused"`` or ``"auto"`` (the buffered loop with the
        hand-written backward, also used without gradients), ``"python"`` (plain ops,
        autograd; supports double backward).
    input_dropout : variational dropout on the first layer's inputs ``[x_hat, m]`` (the
        same (B, 2F) mask at every step), in training only.
    recurrent_dropout : variational dropout on ``h_hat`` inside ``W_hh h_hat`` (the same
        (B, H) mask at every step; the carried state itself is not dropped), training only.

    Inputs: ``x, observed, delta, state``
        x : (B, T, F) values; anything (0, NaN) where not observed.
        observed : (B, T, F) bool (or 0/1) mask.
        delta : (B, T, F) time since last observation (compute it on the whole series).
        state : :class:`GRUDState` from a previous chunk, or None (zeros / learned, and
            ``x_mean`` as last value).

    Outputs: ``output, state``
        output : (B, T, H) hidden states of the top layer.
        state : :class:`GRUDState` after the last step; feeding it to the next chunk gives
            the same outputs as one pass over the concatenation.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1,
                 dropout: float = 0.0, learn_initial_state: bool = False,
                 input_decay: bool = True, hidden_decay: bool = True,
                 loop: str = "auto", input_dropout: float = 0.0,
                 recurrent_dropout: float = 0.0) -> None:
        super().__init__()
        _check_positive("input_size", input_size)
        _check_positive("hidden_size", hidden_size)
        _check_positive("num_layers", num_layers)
        for name, rate in (("dropout", dropout), ("input_dropout", input_dropout),
                           ("recurrent_dropout", recurrent_dropout)):
            if not 0.0 <= rate < 1.0:
                raise RecurraError(f"`{name}` ({rate}) must be in [0, 1)")
        self.input_dropout, self.recurrent_dropout = input_dropout, recurrent_dropout
        if loop not in LOOP_BACKENDS:
            raise RecurraError(f"`loop` ({loop!r}) must be one of {list(LOOP_BACKENDS)}")
        self.input_size, self.hidden_size, self.num_layers = input_size, hidden_size, num_layers
        self.dropout, self.loop = dropout, loop
        self.input_decay, self.hidden_decay = input_decay, hidden_decay
        gates = 3 * hidden_size
        self.weight_ih_l0 = nn.Parameter(torch.empty(gates, input_size))
        self.weight_mh_l0 = nn.Parameter(torch.empty(gates, input_size))  # mask -> gates
        self.weight_hh_l0 = nn.Parameter(torch.empty(gates, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(gates))
        self.bias_hh_l0 = nn.Parameter(torch.empty(gates))
        self.input_decay_weight = nn.Parameter(torch.empty(input_size))  # diagonal W_x
        self.input_decay_bias = nn.Parameter(torch.empty(input_size))
        self.hidden_decay_layer = nn.Linear(input_size, hidden_size)
        self.upper = (nn.GRU(hidden_size, hidden_size, num_layers - 1, batch_first=True,
                             dropout=dropout if num_layers > 2 else 0.0)
                      if num_layers > 1 else None)
        self.initial_state = (nn.Parameter(torch.zeros(num_layers, 1, hidden_size))
                              if learn_initial_state else None)
        self.register_buffer("x_mean", torch.zeros(input_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """PyTorch's GRU initialisation U(-1/sqrt(H), 1/sqrt(H)); decays start small."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for weight in (self.weight_ih_l0, self.weight_mh_l0, self.weight_hh_l0,
                       self.bias_ih_l0, self.bias_hh_l0):
            nn.init.uniform_(weight, -bound, bound)
        nn.init.uniform_(self.input_decay_weight, 0.0, 0.1)
        nn.init.zeros_(self.input_decay_bias)
        nn.init.uniform_(self.hidden_decay_layer.weight, 0.0, 0.1 / self.input_size)
        nn.init.zeros_(self.hidden_decay_layer.bias)

    def set_empirical_mean(self, mean: Tensor) -> None:
        """Set ``x_mean`` (F,), the training mean per variable (NaN -> 0)."""
        mean = torch.as_tensor(mean, dtype=self.x_mean.dtype).reshape(-1)
        if mean.numel() != self.input_size:
            raise RecurraError(f"`mean` has {mean.numel()} value(s); expected input_size "
                               f"({self.input_size}), one per variable")
        self.x_mean.copy_(torch.nan_to_num(mean, nan=0.0).to(self.x_mean.device))

    def initial(self, batch_size: int, device: torch.device | None = None,
                dtype: torch.dtype | None = None) -> GRUDState:
        """The state before any step: zeros (or learned) hidden, ``x_mean`` as last value."""
        device = device if device is not None else self.x_mean.device
        dtype = dtype if dtype is not None else self.weight_hh_l0.dtype
        if self.initial_state is not None:
            hidden = self.initial_state.expand(-1, batch_size, -1).to(device, dtype)
        else:
            hidden = torch.zeros(self.num_layers, batch_size, self.hidden_size,
                                 device=device, dtype=dtype)
        x_last = self.x_mean.to(device, dtype).expand(batch_size, -1)
        seen = torch.zeros(batch_size, self.input_size, dtype=torch.bool, device=device)
        return GRUDState(hidden, x_last, seen)

    def forward(self, x: Tensor, observed: Tensor, delta: Tensor,
                state: GRUDState | None = None) -> tuple[Tensor, GRUDState]:
        self._check_inputs(x, observed, delta, state)
        batch_size = x.shape[0]
        if state is None:
            state = self.initial(batch_size, x.device, self.weight_hh_l0.dtype)
        observed = observed.to(torch.bool)
        dtype = self.weight_hh_l0.dtype
        x = torch.where(observed, x, torch.zeros((), dtype=x.dtype, device=x.device)).to(dtype)
        delta = delta.to(dtype)
        mask = observed.to(dtype)
        x_last = self._last_observed(x, observed, state)
        x_hat = self._impute(x, observed, delta, x_last)
        if self.training and self.input_dropout > 0:  # one (B, 1, 2F) mask for [x_hat, m]
            keep = _dropout_mask(torch.cat([x_hat[:, :1], mask[:, :1]], dim=-1),
                                 self.input_dropout)
            x_hat, mask = x_hat * keep[..., :self.input_size], mask * keep[..., self.input_size:]
        # (T, B, 3H): two projections, so autograd never forms the (unused) mask gradient
        with torch.autocast(device_type=x.device.type, enabled=False):  # fp32, in place
            gates_input = torch.mm(_time_major(x_hat), self.weight_ih_l0.t())
            gates_input = gates_input.addmm_(_time_major(mask), self.weight_mh_l0.t())
            gates_input = gates_input.add_(self.bias_ih_l0).view(x.shape[1], batch_size, -1)
        gamma_h = None
        if self.hidden_decay:
            gamma_h = torch.exp(-F.relu(self.hidden_decay_layer(delta.transpose(0, 1))))
        recurrence = self._recurrence_fn(x.device)
        drop = None
        if self.training and self.recurrent_dropout > 0:
            drop = _dropout_mask(state.hidden[0].to(dtype), self.recurrent_dropout)
        with torch.autocast(device_type=x.device.type, enabled=False):  # AMP: loop in fp32
            output, last = recurrence(
                gates_input.to(dtype).contiguous(),
                None if gamma_h is None else gamma_h.to(dtype),
                state.hidden[0].to(dtype), self.weight_hh_l0, self.bias_hh_l0, drop)
        output = output.transpose(0, 1)                              # (B, T, H)
        hidden = [last.unsqueeze(0)]
        if self.upper is not None:
            output = F.dropout(output, self.dropout, self.training)
            output, upper_hidden = self.upper(output, state.hidden[1:].contiguous())
            hidden.append(upper_hidden)
        new_state = GRUDState(torch.cat(hidden, dim=0), x_last[:, -1],
                              state.seen | observed.any(dim=1))
        return output, new_state

    def _last_observed(self, x: Tensor, observed: Tensor, state: GRUDState) -> Tensor:
        """(B, T, F) last observed value at or before each step (carried value before)."""
        steps = torch.arange(x.shape[1], device=x.device)
        # the scans run along the last, contiguous axis: (B, F, T) is 3x faster than dim=1
        last = torch.cummax(torch.where(observed.transpose(1, 2).contiguous(), steps, -1),
                            dim=-1).values
        gathered = torch.gather(x.transpose(1, 2), -1, last.clamp(min=0))
        carried = torch.where(state.seen, state.x_last.to(x.dtype),
                              self.x_mean.to(x.dtype)).unsqueeze(-1)
        return torch.where(last >= 0, gathered, carried).transpose(1, 2)

    def _impute(self, x: Tensor, observed: Tensor, delta: Tensor, x_last: Tensor) -> Tensor:
        """x_hat (B, T, F): observed values, else the decayed last value."""
        observed = observed.to(torch.bool)
        if not self.input_decay:
            return torch.where(observed, x, x_last)
        gamma_x = torch.exp(-F.relu(torch.addcmul(self.input_decay_bias, delta,
                                                  self.input_decay_weight)))
        fill = torch.lerp(self.x_mean.to(x.dtype).expand_as(x_last), x_last, gamma_x)
        return torch.where(observed, x, fill)

    def _recurrence_fn(self, device: torch.device):
        if self.loop in ("fused", "auto"):
            return fused_recurrence
        return recurrence  # "python" (and "jit" of models saved before it was removed)

    def _check_inputs(self, x: Tensor, observed: Tensor, delta: Tensor,
                      state: GRUDState | None) -> None:
        if x.dim() != 3:
            raise RecurraError(f"`x` must be (batch, time, features) = 3-D, got shape "
                               f"{tuple(x.shape)}")
        if x.shape[2] != self.input_size:
            raise RecurraError(f"`x` has {x.shape[2]} feature(s) (shape {tuple(x.shape)}); "
                               f"expected input_size ({self.input_size})")
        if x.shape[1] < 1:
            raise RecurraError(f"`x` has {x.shape[1]} time steps; need at least 1")
        for name, tensor in (("observed", observed), ("delta", delta)):
            if tuple(tensor.shape) != tuple(x.shape):
                raise RecurraError(f"`{name}` shape {tuple(tensor.shape)} must equal `x` shape "
                                   f"{tuple(x.shape)} (batch, time, features)")
        if state is not None:
            expected = (self.num_layers, x.shape[0], self.hidden_size)
            if tuple(state.hidden.shape) != expected:
                raise RecurraError(f"`state.hidden` shape {tuple(state.hidden.shape)} must be "
                                   f"(num_layers, batch, hidden_size) = {expected}")
            for name in ("x_last", "seen"):
                shape = tuple(getattr(state, name).shape)
                if shape != (x.shape[0], self.input_size):
                    raise RecurraError(f"`state.{name}` shape {shape} must be (batch, "
                                       f"input_size) = {(x.shape[0], self.input_size)}")

    def extra_repr(self) -> str:
        return (f"{self.input_size}, {self.hidden_size}, num_layers={self.num_layers}, "
                f"dropout={self.dropout}, input_decay={self.input_decay}, "
                f"hidden_decay={self.hidden_decay}, loop={self.loop!r}, "
                f"input_dropout={self.input_dropout}, "
                f"recurrent_dropout={self.recurrent_dropout}")


class GRUDClassifier(nn.Module):
    """GRU-D encoder + static inputs + a linear head on the last hidden state.

    Parameters
    ----------
    input_size, hidden_size, num_layers, dropout : as :class:`GRUD`.
    static_size : S, the number of static inputs concatenated to the last hidden state.
    n_outputs : logits per sample (1 for a binary outcome).
    static_to_state : also start the recurrence from ``tanh(W_s static + b_s)`` (every
        layer) instead of zeros, so that the static inputs condition how the series is read.

    ``forward(x, observed, delta, static=None) -> logits`` of shape (B, n_outputs)
    (x, observed, delta: (B, T, F); static: (B, S)).
    """

    def __init__(self, input_size: int, hidden_size: int, static_size: int = 0,
                 num_layers: int = 1, dropout: float = 0.0, n_outputs: int = 1,
                 static_to_state: bool = False, **grud_options) -> None:
        super().__init__()
        if static_size < 0:
            raise RecurraError(f"`static_size` ({static_size}) must be >= 0")
        _check_positive("n_outputs", n_outputs)
        if static_to_state and not static_size:
            raise RecurraError("`static_to_state` (True) needs `static_size` >= 1")
        self.static_size = static_size
        self.encoder = GRUD(input_size, hidden_size, num_layers, dropout, **grud_options)
        self.static_state = (nn.Linear(static_size, num_layers * hidden_size)
                             if static_to_state else None)
        self.head_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size + static_size, n_outputs)

    def forward(self, x: Tensor, observed: Tensor, delta: Tensor,
                static: Tensor | None = None) -> Tensor:
        if self.static_size:
            if static is None or tuple(static.shape) != (x.shape[0], self.static_size):
                shape = None if static is None else tuple(static.shape)
                raise RecurraError(f"`static` shape {shape} must be (batch, static_size) = "
                                   f"{(x.shape[0], self.static_size)}")
            static = static.to(self.head.weight.dtype)
        state = None
        if self.static_state is not None:
            encoder = self.encoder
            state = encoder.initial(x.shape[0], x.device)
            hidden = torch.tanh(self.static_state(static)).view(
                x.shape[0], encoder.num_layers, encoder.hidden_size).transpose(0, 1)
            state = state._replace(hidden=hidden.contiguous())
        output, _ = self.encoder(x, observed, delta, state)
        features = output[:, -1]
        if self.static_size:
            features = torch.cat([features, static], dim=1)
        return self.head(self.head_dropout(features))


def _time_major(values: Tensor) -> Tensor:
    """(B, T, F) -> (T * B, F), contiguous, rows ordered time-major."""
    return values.transpose(0, 1).reshape(-1, values.shape[-1])


def _dropout_mask(like: Tensor, rate: float) -> Tensor:
    """A {0, 1/(1-rate)} mask shaped like ``like`` (inverted dropout)."""
    keep = 1.0 - rate
    return torch.bernoulli(torch.full_like(like, keep)) / keep


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise RecurraError(f"`{name}` ({value!r}) must be a positive integer")
