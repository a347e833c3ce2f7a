"""The time loop of GRU-D's first layer (:class:`recurra.nn.grud.GRUD`), three ways.

Per step ``t`` (gate order r, z, n as ``nn.GRU``)::

    h_hat = gamma_t * h_{t-1}                          # hidden decay (or h_{t-1})
    g     = W_hh (drop * h_hat) + b_hh                 # one (B, H) x (H, 3H) matmul
    r, z  = sigmoid(gi_r + g_r), sigmoid(gi_z + g_z)   # gi: input + mask projections
    n     = tanh(gi_n + r * g_n)
    h_t   = n + z * (h_hat - n)

- :func:`recurrence`: plain tensor ops, differentiable by autograd (reference; double
  backward).
- :func:`fused_recurrence`: :class:`_FusedRecurrence`, the same maths with a hand-written
  backward.  Both directions write into preallocated buffers with ``out=`` (no per-step
  allocation, no copies): 7-8 small ops per step forward and 4-5 backward, because every
  factor of the backward that does not depend on the incoming gradient is computed for all
  T steps at once before the reverse loop, and everything that only needs the per-step
  gradients (input-gate gradients, decay gradient, weight gradients) as batched ops after it.

Shapes: gates_input (T, B, 3H), gamma_h (T, B, H) or None, hidden (B, H), weight_hh (3H, H),
bias_hh (3H,), drop (B, H) or None (a {0, 1/(1-p)} recurrent-dropout mask applied to
``h_hat`` inside the matmul only).  All return outputs (T, B, H) and the last state (B, H).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F


def recurrence(gates_input: Tensor, gamma_h: Tensor | None, hidden: Tensor,
               weight_hh: Tensor, bias_hh: Tensor,
               drop: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The loop as plain (autograd-differentiable) tensor ops; see the module docstring."""
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


def _forward_loop(gates_input: Tensor, gamma_h: Tensor | None, hidden: Tensor,
                  weight_hh: Tensor, bias_hh: Tensor, drop: Tensor | None) -> dict:
    """Run the loop without autograd into preallocated buffers; return them by name.

    ``outputs`` (T, B, H); ``previous`` h_hat (T, B, H) (None without decay: it is h_{t-1});
    ``matmul_input`` drop * h_hat (T, B, H) (None without dropout); ``rz`` (T, B, 2H);
    ``new`` (T, B, H); ``gates_hidden`` W_hh (drop * h_hat) (T, B, 3H), + b_hn in the n part
    (the r, z biases are added to the input part once, before the loop).
    """
    steps, size = gates_input.shape[0], hidden.shape[1]
    shape = (steps,) + tuple(hidden.shape)
    buffers = {
        "outputs": hidden.new_empty(shape),
        "previous": hidden.new_empty(shape) if gamma_h is not None else None,
        "matmul_input": hidden.new_empty(shape) if drop is not None else None,
        "rz": gates_input.new_empty(shape[:2] + (2 * size,)),
        "new": hidden.new_empty(shape),
        "gates_hidden": torch.empty_like(gates_input),
    }
    scale = gamma_h * drop if gamma_h is not None and drop is not None else drop
    weight_t = weight_hh.t().contiguous()
    outputs, rz, new = buffers["outputs"].unbind(0), buffers["rz"], buffers["new"].unbind(0)
    reset, update, rz = rz[..., :size].unbind(0), rz[..., size:].unbind(0), rz.unbind(0)
    gates_hidden = buffers["gates_hidden"]
    hidden_rz, hidden_n = gates_hidden[..., :2 * size].unbind(0), \
        gates_hidden[..., 2 * size:].unbind(0)
    gates_hidden = gates_hidden.unbind(0)
    input_rz = torch.add(gates_input[..., :2 * size], bias_hh[:2 * size]).unbind(0)
    input_n, bias_n = gates_input[..., 2 * size:].unbind(0), bias_hh[2 * size:]
    previous = buffers["previous"].unbind(0) if gamma_h is not None else None
    matmul_input = buffers["matmul_input"].unbind(0) if drop is not None else None
    gammas = gamma_h.unbind(0) if gamma_h is not None else None
    scales = scale.unbind(0) if scale is not None and scale.dim() == 3 else None
    for t in range(len(outputs)):
        h_hat = torch.mul(hidden, gammas[t], out=previous[t]) if gammas is not None else hidden
        if drop is not None:
            factor = scales[t] if scales is not None else drop
            h_in = torch.mul(hidden, factor, out=matmul_input[t])
        else:
            h_in = h_hat
        torch.mm(h_in, weight_t, out=gates_hidden[t])   # b_hh: r, z in input_rz; n here
        hidden_n[t].add_(bias_n)
        torch.add(input_rz[t], hidden_rz[t], out=rz[t]).sigmoid_()
        torch.addcmul(input_n[t], reset[t], hidden_n[t], out=new[t]).tanh_()
        hidden = torch.lerp(new[t], h_hat, update[t], out=outputs[t])
    return buffers


class _FusedRecurrence(torch.autograd.Function):
    """:func:`recurrence` with a hand-written backward (same maths, fewer autograd nodes)."""

    @staticmethod
    def forward(ctx, gates_input: Tensor, gamma_h: Tensor | None, hidden: Tensor,
                weight_hh: Tensor, bias_hh: Tensor,
                drop: Tensor | None = None) -> tuple[Tensor, Tensor]:
        buffers = _forward_loop(gates_input, gamma_h, hidden, weight_hh, bias_hh, drop)
        outputs = buffers["outputs"]
        ctx.save_for_backward(gamma_h, hidden, weight_hh, outputs, buffers["previous"],
                              buffers["matmul_input"], buffers["rz"], buffers["new"],
                              buffers["gates_hidden"], drop)
        return outputs, outputs[-1].clone()

    @staticmethod
    def backward(ctx, grad_outputs: Tensor | None, grad_last: Tensor | None):
        (gamma_h, initial, weight_hh, outputs, previous, matmul_input, rz, new,
         gates_hidden, drop) = ctx.saved_tensors
        steps, size = outputs.shape[0], outputs.shape[-1]
        reset, update = rz[..., :size], rz[..., size:]
        h_hat = previous if previous is not None else _before(initial, outputs)
        to_new = (1 - update) * (1 - new * new)                      # dh -> d(pre-tanh n)
        coefficient = torch.empty_like(gates_hidden).view(steps, -1, 3, size)
        torch.mul(to_new * gates_hidden[..., 2 * size:], reset * (1 - reset),
                  out=coefficient[:, :, 0])                          # dh -> d(W_hr h + b)
        torch.mul((h_hat - new) * update, 1 - update, out=coefficient[:, :, 1])  # z
        torch.mul(to_new, reset, out=coefficient[:, :, 2])           # n
        carry_factor = update * gamma_h if gamma_h is not None else update
        matmul_factor = (gamma_h * drop if drop is not None else gamma_h) \
            if gamma_h is not None else drop                         # None, (B,H) or (T,B,H)
        grad_h = torch.empty_like(outputs)                           # dL/dh_t, all sources
        grad_gates = torch.empty_like(gates_hidden)                  # dL/d(W_hh h + b_hh)
        grad_gates_view = grad_gates.view(steps, -1, 3, size)
        grad_matmul = torch.empty_like(outputs) if matmul_factor is not None else None
        carry = grad_last if grad_last is not None else torch.zeros_like(initial)
        per_step = matmul_factor is not None and matmul_factor.dim() == 3
        for t in range(steps - 1, -1, -1):
            if grad_outputs is not None:
                here = torch.add(carry, grad_outputs[t], out=grad_h[t])
            else:
                here = grad_h[t].copy_(carry)
            torch.mul(here.unsqueeze(1), coefficient[t], out=grad_gates_view[t])
            if matmul_factor is None:
                carry = torch.addmm(here * carry_factor[t], grad_gates[t], weight_hh)
            else:
                through = torch.mm(grad_gates[t], weight_hh, out=grad_matmul[t])
                carry = torch.addcmul(here * carry_factor[t], through,
                                      matmul_factor[t] if per_step else matmul_factor)
        flat = grad_gates.view(-1, 3 * size)
        weight_input = matmul_input if matmul_input is not None else h_hat
        grad_weight = flat.t() @ weight_input.reshape(-1, size)
        grad_bias = flat.sum(0)
        grad_gamma = None
        if gamma_h is not None and ctx.needs_input_grad[1]:
            grad_h_hat = grad_matmul * drop if drop is not None else grad_matmul
            grad_gamma = torch.addcmul(grad_h_hat, grad_h, update) * _before(initial, outputs)
        # the input gates' gradient equals grad_gates except n (d pre-tanh, not d W_hn h)
        torch.mul(grad_h, to_new, out=grad_gates[..., 2 * size:])
        return grad_gates, grad_gamma, carry, grad_weight, grad_bias, None


def _before(initial: Tensor, outputs: Tensor) -> Tensor:
    """(T, B, H) h_{t-1} for every step."""
    return torch.cat([initial.unsqueeze(0), outputs[:-1]])


def fused_recurrence(gates_input: Tensor, gamma_h: Tensor | None, hidden: Tensor,
                     weight_hh: Tensor, bias_hh: Tensor,
                     drop: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """The loop with the hand-written backward (:class:`_FusedRecurrence`); without
    gradients it runs the same buffered forward and skips what the backward would need."""
    if not torch.is_grad_enabled():
        outputs = _forward_loop(gates_input, gamma_h, hidden, weight_hh, bias_hh,
                                drop)["outputs"]
        return outputs, outputs[-1]
    return _FusedRecurrence.apply(gates_input, gamma_h, hidden, weight_hh, bias_hh, drop)

