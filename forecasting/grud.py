"""GRU-D (Che et al. 2018): a GRU for multivariate series with missing values.

Per variable ``d`` and step ``t`` with value ``x``, mask ``m`` (1 = observed) and ``delta``
(time since the variable was last observed, :func:`data.arrays.compute_delta`)::

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
:func:`data.missing.channel_means`).  The gates follow PyTorch's ``nn.GRU`` convention (gate
order r, z, n; reset applied to ``W_hn h + b_hn``; ``h = (1-z) n + z h``) rather than the
paper's ``r * h`` inside the matmul: with every value observed, both decays switched off and
the mask weights ``V`` at zero, the first layer *is* ``nn.GRU`` with the same weights, and
one recurrent matmul per step serves all three gates.

Speed: everything that depends only on the inputs (decays, ``x_last`` by a vectorised
forward fill, ``x_hat``, the input and mask projections of all gates) is computed for all T
steps in batched ops; the time loop only does ``h_hat @ W_hh^T`` and the gate arithmetic.
The loop has a hand-written backward (:class:`_FusedRecurrence`, checked with
``torch.autograd.gradcheck``): one matmul and a few element-wise ops per step in reverse,
the weight gradients as one batched matmul after it. ``torch.jit.script`` of the loop was
measured and does not pay on CPU (torch 2.13, deprecated), so it is opt-in (``loop="jit"``).
Double backward through the fused loop is not supported (use ``loop="python"``).

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
import warnings
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from data.schema import RecurraError

LOOP_BACKENDS = ("auto", "fused", "python", "jit")


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


def _recurrence(gates_input: Tensor, gamma_h: Tensor | None, hidden: Tensor,
                weight_hh: Tensor, bias_hh: Tensor,
                drop: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The time loop of the first layer.

    gates_input : (T, B, 3H) input + mask projections of all gates (r, z, n), biases included.
    gamma_h : (T, B, H) hidden decay, or None.
    hidden : (B, H) initial state.
    drop : (B, H) recurrent-dropout mask (0 or 1/(1-p)) applied to ``h_hat`` inside
        ``W_hh h_hat`` only (the same units dropped at every step, Gal & Ghahramani 2016),
        or None.
    Returns outputs (T, B, H) and the last hidden state (B, H).
    """
    size = hidden.shape[1]
    outputs = []
    for t in range(gates_input.shape[0]):
        if gamma_h is not None:
            hidden = hidden * gamma_h[t]
        if drop is not None:
            gates_hidden = F.linear(hidden * drop, weight_hh, bias_hh)
        else:
            gates_hidden = F.linear(hidden, weight_hh, bias_hh)
        gi = gates_input[t]
        rz = torch.sigmoid(gi[:, :2 * size] + gates_hidden[:, :2 * size])
        reset, update = rz[:, :size], rz[:, size:]
        new = torch.tanh(gi[:, 2 * size:] + reset * gates_hidden[:, 2 * size:])
        hidden = new + update * (hidden - new)
        outputs.append(hidden)
    return torch.stack(outputs), hidden


class _FusedRecurrence(torch.autograd.Function):
    """:func:`_recurrence` with a hand-written backward (same maths, fewer autograd nodes).

    Forward runs without autograd and keeps, per step, what the backward needs; the gate
    derivatives that do not depend on the incoming gradient are computed for all T steps
    at once, so the reverse loop is one matmul and a few element-wise ops per step, and the
    weight gradients are two batched matmuls after it.
    """

    @staticmethod
    def forward(ctx, gates_input: Tensor, gamma_h: Tensor | None, hidden: Tensor,
                weight_hh: Tensor, bias_hh: Tensor,
                drop: Tensor | None = None) -> tuple[Tensor, Tensor]:
        steps, size = gates_input.shape[0], hidden.shape[1]
        previous = torch.empty((steps,) + hidden.shape, dtype=hidden.dtype,
                               device=hidden.device)              # h_hat_t = gamma_t h_{t-1}
        before = torch.empty_like(previous) if gamma_h is not None else previous  # h_{t-1}
        gates = torch.empty_like(gates_input)                     # r, z, n
        hidden_new = torch.empty_like(previous)                   # W_hn h_hat + b_hn
        outputs = torch.empty_like(previous)
        dropped = torch.empty_like(previous) if drop is not None else previous  # W_hh input
        for t in range(steps):
            if gamma_h is not None:
                before[t] = hidden
                hidden = hidden * gamma_h[t]
            previous[t] = hidden
            if drop is not None:
                dropped[t] = hidden * drop
            gates_hidden = torch.addmm(bias_hh, dropped[t], weight_hh.t())
            gi = gates_input[t]
            rz = torch.sigmoid(gi[:, :2 * size] + gates_hidden[:, :2 * size])
            new = torch.tanh(gi[:, 2 * size:] + rz[:, :size] * gates_hidden[:, 2 * size:])
            hidden = torch.lerp(new, hidden, rz[:, size:])
            gates[t, :, :2 * size] = rz
            gates[t, :, 2 * size:] = new
            hidden_new[t] = gates_hidden[:, 2 * size:]
            outputs[t] = hidden
        ctx.save_for_backward(gamma_h, weight_hh, previous, before, gates, hidden_new, drop,
                              dropped)
        ctx.has_decay = gamma_h is not None
        return outputs, hidden

    @staticmethod
    def backward(ctx, grad_outputs: Tensor, grad_last: Tensor):
        gamma_h, weight_hh, previous, before, gates, hidden_new, drop, dropped = \
            ctx.saved_tensors
        size = previous.shape[-1]
        reset, update, new = gates[..., :size], gates[..., size:2 * size], gates[..., 2 * size:]
        to_new = (1 - update) * (1 - new * new)                   # dh -> d(pre-tanh n)
        to_update = (previous - new) * update * (1 - update)      # dh -> d(pre-sigmoid z)
        to_reset = hidden_new * reset * (1 - reset)               # d(pre n) -> d(pre r)
        grad_gates_hidden = torch.empty_like(gates)               # d(W_hh h_hat + b_hh)
        grad_new = torch.empty_like(previous)                     # d(pre-tanh n)
        grad_previous = torch.empty_like(previous)                # d h_hat_t
        carry = grad_last.clone() if grad_last is not None else torch.zeros_like(previous[0])
        for t in range(previous.shape[0] - 1, -1, -1):
            grad_h = carry + grad_outputs[t] if grad_outputs is not None else carry
            d_new = grad_h * to_new[t]
            grad_new[t] = d_new
            grad_gates_hidden[t, :, :size] = d_new * to_reset[t]
            grad_gates_hidden[t, :, size:2 * size] = grad_h * to_update[t]
            grad_gates_hidden[t, :, 2 * size:] = d_new * reset[t]
            if drop is not None:
                d_previous = torch.addcmul(grad_h * update[t],
                                           grad_gates_hidden[t] @ weight_hh, drop)
            else:
                d_previous = torch.addmm(grad_h * update[t], grad_gates_hidden[t], weight_hh)
            grad_previous[t] = d_previous
            carry = d_previous * gamma_h[t] if ctx.has_decay else d_previous
        flat = grad_gates_hidden.reshape(-1, grad_gates_hidden.shape[-1])
        grad_weight = flat.t() @ dropped.reshape(-1, size)
        grad_bias = flat.sum(0)
        grad_gates_input = torch.cat([grad_gates_hidden[..., :2 * size], grad_new], dim=-1)
        grad_gamma = None
        if ctx.has_decay and ctx.needs_input_grad[1]:
            grad_gamma = grad_previous * before
        return grad_gates_input, grad_gamma, carry, grad_weight, grad_bias, None


def _fused_recurrence(gates_input: Tensor, gamma_h: Tensor | None, hidden: Tensor,
                      weight_hh: Tensor, bias_hh: Tensor,
                      drop: Tensor | None = None) -> tuple[Tensor, Tensor]:
    return _FusedRecurrence.apply(gates_input, gamma_h, hidden, weight_hh, bias_hh, drop)


_SCRIPTED: list = []


def _scripted_recurrence():
    """``torch.jit.script`` of :func:`_recurrence`, built once; None when it cannot be."""
    if not _SCRIPTED:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                _SCRIPTED.append(torch.jit.script(_recurrence))
        except Exception:  # noqa: BLE001 - TorchScript missing or deprecated away: fall back
            _SCRIPTED.append(None)
    return _SCRIPTED[0]


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
    loop : how the time loop runs: ``"fused"`` (hand-written backward, 1.3-1.7x faster
        forward+backward on CPU than autograd through the loop), ``"python"`` (plain ops,
        autograd; slightly faster without gradients), ``"jit"`` (TorchScript of the python
        loop: measured no faster on CPU with torch 2.13, kept for comparison) or ``"auto"``
        (fused when gradients are enabled, python under ``torch.no_grad()``).
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
        x = torch.where(observed, x, torch.zeros((), dtype=x.dtype, device=x.device))
        x = x.to(self.weight_hh_l0.dtype)
        delta = delta.to(x.dtype)
        mask = observed.to(x.dtype)
        x_last = self._last_observed(x, observed, state)
        x_hat = self._impute(x, mask, delta, x_last)
        weight = torch.cat([self.weight_ih_l0, self.weight_mh_l0], dim=1)
        features = torch.cat([x_hat, mask], dim=-1)                  # (B, T, 2F)
        if self.training and self.input_dropout > 0:
            features = features * _dropout_mask(features[:, :1], self.input_dropout)
        gates_input = F.linear(features.transpose(0, 1), weight, self.bias_ih_l0)  # (T,B,3H)
        gamma_h = None
        if self.hidden_decay:
            gamma_h = torch.exp(-F.relu(self.hidden_decay_layer(delta.transpose(0, 1))))
        recurrence = self._recurrence_fn(x.device)
        dtype = self.weight_hh_l0.dtype
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
        steps = torch.arange(x.shape[1], device=x.device).view(1, -1, 1)
        last = torch.cummax(torch.where(observed, steps, -1), dim=1).values
        gathered = torch.gather(x, 1, last.clamp(min=0))
        carried = torch.where(state.seen, state.x_last.to(x.dtype),
                              self.x_mean.to(x.dtype)).unsqueeze(1)
        return torch.where(last >= 0, gathered, carried)

    def _impute(self, x: Tensor, mask: Tensor, delta: Tensor, x_last: Tensor) -> Tensor:
        """x_hat (B, T, F): observed values, else the decayed last value."""
        if self.input_decay:
            gamma_x = torch.exp(-F.relu(delta * self.input_decay_weight + self.input_decay_bias))
            fill = gamma_x * x_last + (1.0 - gamma_x) * self.x_mean.to(x.dtype)
        else:
            fill = x_last
        return mask * x + (1.0 - mask) * fill

    def _recurrence_fn(self, device: torch.device):
        if self.loop == "fused" or (self.loop == "auto" and torch.is_grad_enabled()):
            return _fused_recurrence
        if self.loop == "jit":
            scripted = _scripted_recurrence()
            if scripted is not None:
                return scripted
        return _recurrence

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

    ``forward(x, observed, delta, static=None) -> logits`` of shape (B, n_outputs)
    (x, observed, delta: (B, T, F); static: (B, S)).
    """

    def __init__(self, input_size: int, hidden_size: int, static_size: int = 0,
                 num_layers: int = 1, dropout: float = 0.0, n_outputs: int = 1,
                 **grud_options) -> None:
        super().__init__()
        if static_size < 0:
            raise RecurraError(f"`static_size` ({static_size}) must be >= 0")
        _check_positive("n_outputs", n_outputs)
        self.static_size = static_size
        self.encoder = GRUD(input_size, hidden_size, num_layers, dropout, **grud_options)
        self.head_dropout = nn.Dropout(dropout)
        self.head = nn.Linear(hidden_size + static_size, n_outputs)

    def forward(self, x: Tensor, observed: Tensor, delta: Tensor,
                static: Tensor | None = None) -> Tensor:
        output, _ = self.encoder(x, observed, delta)
        features = output[:, -1]
        if self.static_size:
            if static is None or tuple(static.shape) != (x.shape[0], self.static_size):
                shape = None if static is None else tuple(static.shape)
                raise RecurraError(f"`static` shape {shape} must be (batch, static_size) = "
                                   f"{(x.shape[0], self.static_size)}")
            features = torch.cat([features, static.to(features.dtype)], dim=1)
        return self.head(self.head_dropout(features))


def _dropout_mask(like: Tensor, rate: float) -> Tensor:
    """A {0, 1/(1-rate)} mask shaped like ``like`` (inverted dropout)."""
    keep = 1.0 - rate
    return torch.bernoulli(torch.full_like(like, keep)) / keep


def _check_positive(name: str, value: int) -> None:
    if not isinstance(value, int) or value < 1:
        raise RecurraError(f"`{name}` ({value!r}) must be a positive integer")
