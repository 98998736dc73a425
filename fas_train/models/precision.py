"""Layers that compute in float32 even under autocast: the last layer before a score. Under bf16 autocast a
linear layer's output has 8 significant bits, so logits between 2 and 8 take about 32 distinct values and
tie the scores that AUC, EER and both thresholds are computed on. Parameter names are those of the plain
layers, so checkpoints load either way."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


def _full(x: torch.Tensor) -> torch.dtype:
    return torch.promote_types(x.dtype, torch.float32)


def full_precision(x: torch.Tensor) -> torch.Tensor:
    """``x`` in float32, or as it is when it is already float32 or float64 (losses and scores)."""
    return x.to(_full(x))


def _in_float32(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, op) -> torch.Tensor:
    """``op(x, weight, bias)`` with autocast off, in float32 (or float64 when ``x`` is)."""
    dtype = _full(x)
    with torch.autocast(x.device.type, enabled=False):
        return op(x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype))


class Float32Linear(nn.Linear):
    """``nn.Linear`` computed in (at least) float32 whatever the autocast state."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _in_float32(x, self.weight, self.bias, F.linear)


class Float32Conv2d(nn.Conv2d):
    """``nn.Conv2d`` computed in (at least) float32 whatever the autocast state."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _in_float32(x, self.weight, self.bias, self._conv_forward)
