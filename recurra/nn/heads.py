"""Output heads of the forecasters: distribution parameters and their losses.

Shapes follow :mod:`recurra.nn.modules`: B batch, N horizon steps, O output variables,
P distribution parameters per output.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from recurra.data.schema import RecurraError


class DistributionHead(nn.Module):
    """Maps features to distribution parameters and defines the loss.

    ``kind``: ``"quantile"`` (P = Q monotone quantiles: the lowest plus cumulative softplus
    increments; pinball loss), ``"gaussian"`` (P = 2: mean, softplus scale; NLL),
    ``"student_t"`` (P = 3: mean, scale, df = 2 + softplus; NLL) or ``"point"`` (P = 1: the
    forecast; ``point_loss`` ``"mse"``, ``"mae"`` or ``"huber"`` with ``huber_delta``;
    every quantile equals the point forecast).

    Input: (..., in_features). Output: (..., O, P) parameters.
    """

    KINDS = ("quantile", "gaussian", "student_t", "point")
    POINT_LOSSES = ("mse", "mae", "huber")

    def __init__(self, kind: str, in_features: int, n_outputs: int,
                 quantiles: tuple[float, ...] = (0.1, 0.5, 0.9), point_loss: str = "mse",
                 huber_delta: float = 1.0) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise RecurraError(f"output ({kind!r}) must be one of {list(self.KINDS)}")
        if point_loss not in self.POINT_LOSSES:
            raise RecurraError(f"loss ({point_loss!r}) must be one of "
                               f"{list(self.POINT_LOSSES)}")
        self.kind, self.n_outputs = kind, n_outputs
        self.point_loss, self.huber_delta = point_loss, float(huber_delta)
        self.register_buffer("levels", torch.tensor(sorted(quantiles), dtype=torch.float32))
        self.n_params = {"quantile": len(quantiles), "gaussian": 2, "student_t": 3,
                         "point": 1}[kind]
        self.linear = nn.Linear(in_features, n_outputs * self.n_params)

    def forward(self, features: Tensor) -> Tensor:
        return self.transform(self.linear(features))

    def transform(self, raw: Tensor) -> Tensor:
        """(..., O * P) unconstrained values -> (..., O, P) parameters."""
        raw = raw.unflatten(-1, (self.n_outputs, self.n_params))
        if self.kind == "point":
            return raw
        if self.kind == "quantile":
            return torch.cat([raw[..., :1], raw[..., :1] + torch.cumsum(
                F.softplus(raw[..., 1:]), dim=-1)], dim=-1)
        scale = F.softplus(raw[..., 1:2]) + 1e-4
        if self.kind == "gaussian":
            return torch.cat([raw[..., :1], scale], dim=-1)
        return torch.cat([raw[..., :1], scale, 2.0 + F.softplus(raw[..., 2:3])], dim=-1)

    def point(self, params: Tensor) -> Tensor:
        """(..., O) point forecast: the median quantile (closest level to 0.5) or the mean."""
        if self.kind == "quantile":
            return params[..., int(torch.argmin((self.levels - 0.5).abs()))]
        return params[..., 0]

    def loss(self, params: Tensor, target: Tensor, mask: Tensor) -> Tensor:
        """Mean loss over observed targets; ``target``/``mask`` are (..., O)."""
        mask = mask.to(params.dtype)
        target = torch.where(mask > 0, target, torch.zeros_like(target))
        if self.kind == "point":
            per = _point_loss(params[..., 0] - target, self.point_loss, self.huber_delta)
        elif self.kind == "quantile":
            error = target.unsqueeze(-1) - params
            levels = self.levels.to(params.dtype)
            per = torch.maximum(levels * error, (levels - 1) * error).mean(-1)
        elif self.kind == "gaussian":
            per = -torch.distributions.Normal(params[..., 0], params[..., 1]).log_prob(target)
        else:
            per = -torch.distributions.StudentT(params[..., 2], params[..., 0],
                                                params[..., 1]).log_prob(target)
        return (per * mask).sum() / mask.sum().clamp(min=1.0)

    def quantiles(self, params: Tensor, levels: tuple[float, ...]) -> Tensor:
        """(..., O, len(levels)) quantiles at ``levels`` (levels of a quantile head only)."""
        if self.kind == "quantile":
            index = [int(torch.argmin((self.levels - q).abs())) for q in levels]
            return params[..., index]
        if self.kind == "point":
            return params[..., :1].expand(*params.shape[:-1], len(levels))
        probs = torch.tensor(levels, dtype=params.dtype, device=params.device)
        if self.kind == "gaussian":
            z = math.sqrt(2.0) * torch.erfinv(2 * probs - 1)
            return params[..., :1] + params[..., 1:2] * z
        from scipy.stats import t as student

        df = params[..., 2:3].detach().cpu().double().numpy()
        z = torch.as_tensor(student.ppf(probs.cpu().double().numpy(), df), dtype=params.dtype)
        return params[..., :1] + params[..., 1:2] * z.to(params.device)

    def start_at_zero(self, linear: nn.Linear | None = None) -> None:
        """Zero the weights of ``linear`` (default: this head's; any layer whose outputs
        :meth:`transform` reads) and set its bias so that the point forecast starts at 0
        (the head of a residual correction, e.g. on top of a linear skip)."""
        linear = self.linear if linear is None else linear
        with torch.no_grad():
            linear.weight.zero_()
            linear.bias.zero_()
            if self.kind == "quantile":  # lowest + m softplus(0) increments = median
                median = int(torch.argmin((self.levels - 0.5).abs()))
                linear.bias.view(-1, self.n_params)[:, 0] = -median * math.log(2.0)

    def shift(self, params: Tensor, offset: Tensor) -> Tensor:
        """Add ``offset`` (..., O) to the location of ``params`` (..., O, P)."""
        if self.kind == "quantile":
            return params + offset.unsqueeze(-1)
        return torch.cat([params[..., :1] + offset.unsqueeze(-1), params[..., 1:]], dim=-1)

    def rescale(self, params: Tensor, level: Tensor, spread: Tensor) -> Tensor:
        """Map parameters of normalised targets back: ``y = level + spread * z``.

        ``level`` and ``spread`` broadcast against (..., O).
        """
        level, spread = level.unsqueeze(-1), spread.unsqueeze(-1)
        if self.kind in ("quantile", "point"):
            return params * spread + level
        parts = [params[..., :1] * spread + level, params[..., 1:2] * spread]
        return torch.cat(parts + [params[..., 2:]], dim=-1)


def _point_loss(error: Tensor, kind: str, delta: float) -> Tensor:
    """Element-wise loss of a point forecast's ``error``: squared, absolute or Huber."""
    if kind == "mae":
        return error.abs()
    if kind == "huber":
        return F.huber_loss(error, torch.zeros_like(error), reduction="none", delta=delta)
    return error ** 2
