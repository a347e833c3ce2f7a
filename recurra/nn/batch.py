"""The batch every Recurra network trains and predicts on: named tensors, never a positional
tuple (built by :mod:`recurra.forecasting.windows` and the detectors' window cutters)."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch


@dataclass
class WindowBatch:
    """A batch of windows as named tensors (B batch, T look-back, H horizon, F channels).

    x, observed, delta, x_last : (B, T, F) inputs; ``x`` is 0 where not observed and
        ``x_last`` holds the last observed value (the empirical mean before any).
    y, y_observed : (B, H, F_out) targets and their mask (losses use observed targets only);
        ``None`` at prediction time.
    covariates : optional (B, T + H, C) known covariates (calendar features).
    static : optional (B, S) static features.
    series_ids : the series of each window (B names), for error messages; may be empty.
    """

    x: torch.Tensor
    observed: torch.Tensor
    delta: torch.Tensor
    x_last: torch.Tensor | None = None
    y: torch.Tensor | None = None
    y_observed: torch.Tensor | None = None
    covariates: torch.Tensor | None = None
    static: torch.Tensor | None = None
    series_ids: tuple[str, ...] = ()

    def to(self, device: torch.device | str, non_blocking: bool = False) -> WindowBatch:
        """The same batch on ``device`` (None fields stay None)."""
        moved = {}
        for field in fields(self):
            tensor = getattr(self, field.name)
            moved[field.name] = (tensor.to(device, non_blocking=non_blocking)
                                 if hasattr(tensor, "to") else tensor)
        return WindowBatch(**moved)

    @property
    def batch_size(self) -> int:
        return int(self.x.shape[0])
