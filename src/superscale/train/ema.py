"""An exponential moving average of the generator's weights: what training publishes."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """Weights averaged over steps with `decay` (ramped up over the first steps, when the
    average would otherwise lag far behind an initialisation that is being left)."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 <= decay < 1.0:
            raise ValueError(f"the EMA decay must be within [0, 1), not {decay}")
        self.decay = decay
        self.model = copy.deepcopy(model).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, model: nn.Module, step: int) -> None:
        decay = min(self.decay, (1 + step) / (10 + step))
        for averaged, current in zip(self.model.parameters(), model.parameters(), strict=True):
            averaged.lerp_(current.detach(), 1 - decay)
        for kept, buffer in zip(self.model.buffers(), model.buffers(), strict=True):
            kept.copy_(buffer)
