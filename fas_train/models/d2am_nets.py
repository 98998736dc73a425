"""D²AM's feature extractor (Chen et al., AAAI 2021): RFM's extractor with a Domain Representation Learning
Module (DRLM) after each of its three blocks."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .rfm_nets import FeatureExtractor


class DRLM(nn.Module):
    """SE-like channel attention a = sigmoid(W2 relu(W1 pool(F))); F+ = a F carries the task, F- = (1 - a) F
    the domain. ``probe`` is W_p of the domain-enhancement entropy loss, P(F-) = sigmoid(W_p pool(F-))."""

    def __init__(self, channels: int, reduction: int = 16):
        super().__init__()
        hidden = max(1, channels // reduction)
        self.attention = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, channels),
                                       nn.Sigmoid())
        self.probe = nn.Linear(channels, 1)

    def forward(self, f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(F+, F-, a) with a of shape (N, C)."""
        a = self.attention(F.adaptive_avg_pool2d(f, 1).flatten(1))
        gate = a[:, :, None, None]
        return gate * f, (1 - gate) * f, a


class D2AMFeatureExtractor(FeatureExtractor):
    """RFM's feature extractor with a DRLM after each block; F+ flows on. ``forward`` returns (for the depth
    estimator, for the meta learner, [(F-, a) of each DRLM])."""

    def __init__(self, in_channels: int = 6, width: int = 64, block=(128, 196, 128), reduction: int = 16):
        super().__init__(in_channels, width, block)
        self.drlm = nn.ModuleList(DRLM(block[2], reduction) for _ in range(3))

    def forward(self, x: torch.Tensor):
        x = self.stem(x)
        outputs, domain_parts = [], []
        for block, drlm in zip(self.blocks, self.drlm):
            x, f_minus, a = drlm(block(x))
            outputs.append(x)
            domain_parts.append((f_minus, a))
        size = outputs[-1].shape[-2:]
        for_depth = torch.cat([F.adaptive_avg_pool2d(o, size) for o in outputs], dim=1)
        return for_depth, outputs[-1], domain_parts
