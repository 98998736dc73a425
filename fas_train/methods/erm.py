"""ERM: the plain baseline on RFM's networks, binary cross-entropy over every source domain pooled, with an
optional depth loss (``depth_weight``; 0 by default, the plain baseline)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from ..losses import depth_errors
from ..models import rfm_networks
from .base import Method


@dataclass(frozen=True)
class ERMConfig:
    lr: float = 1e-3
    depth_weight: float = 0.0
    per_class: int = 10  # live and spoof samples per domain in a batch (the authors' code)


class ERM(Method):
    def __init__(self, feature: nn.Module, depth: nn.Module, meta: nn.Module, config: ERMConfig = ERMConfig(),
                 seed: int = 0):
        super().__init__()
        self.feature, self.depth, self.meta, self.config = feature, depth, meta, config
        self.optimizer = torch.optim.Adam(self.parameters(), lr=config.lr)
        self.generator = torch.Generator().manual_seed(seed)  # unused; kept so every method checkpoints alike

    @classmethod
    def create(cls, config: ERMConfig, network: str, domains: list, seed: int) -> "ERM":
        return cls(*rfm_networks(network), config, seed=seed)

    def losses(self, batch: dict) -> dict:
        x = batch["image"]
        for_depth, for_meta = self.feature(x)
        cls = F.binary_cross_entropy_with_logits(self.meta(for_meta), batch["label"].to(x.dtype))
        dep = (depth_errors(self.depth(for_depth), batch["depth"], "mean").mean() if self.config.depth_weight
               else x.new_zeros(()))
        return {"total": cls + self.config.depth_weight * dep, "cls": cls, "dep": dep}
