"""Meta Pattern's networks (Cai et al., TIFS 2022): the two-layer pattern extractor and the two-stream
Hierarchical Fusion Network (HFN) with its fusion modules (HFM)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .backbones import ImageNetInput, resnet, resnet_stages
from .precision import Float32Conv2d, Float32Linear

STREAMS = {"paper": "resnet50", "small": "resnet18"}
STAGE_CHANNELS = {"resnet18": (64, 128, 256, 512), "resnet34": (64, 128, 256, 512),
                  "resnet50": (256, 512, 1024, 2048)}


class PatternExtractor(nn.Module):
    """Phi: 3x3 conv 3->6, BN, ReLU, 3x3 conv 6->3, [BN,] sigmoid; the meta pattern has the input's size. The
    paper's Fig. 3 has no batch norm after the second convolution, the released code has one
    (``final_norm``)."""

    def __init__(self, channels: int = 3, hidden: int = 6, final_norm: bool = False):
        super().__init__()
        layers = [nn.Conv2d(channels, hidden, 3, padding=1), nn.BatchNorm2d(hidden), nn.ReLU(inplace=True),
                  nn.Conv2d(hidden, channels, 3, padding=1)]
        if final_norm:
            layers.append(nn.BatchNorm2d(channels))
        self.net = nn.Sequential(*layers, nn.Sigmoid())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


STREAM_FUSIONS = ("sum", "mean")


class HFM(nn.Module):
    """m_i = C(top_i) + C(bottom_i) + U[C(m_{i-1})] (Eq. 9, ``streams="sum"``), or with ``streams="mean"``
    (C(top_i) + C(bottom_i)) / 2 + U[C(m_{i-1})], the released code's average of the two streams: 1x1
    convolutions align the channels, U is nearest upsampling to the current level's size; the first level has
    no previous fusion (m_0 = 0)."""

    def __init__(self, top: int, bottom: int, previous: int | None, out: int, streams: str = "sum"):
        super().__init__()
        if streams not in STREAM_FUSIONS:
            raise ValueError(f"unknown stream fusion {streams!r}; known: {list(STREAM_FUSIONS)}")
        self.top, self.bottom = nn.Conv2d(top, out, 1), nn.Conv2d(bottom, out, 1)
        self.previous = nn.Conv2d(previous, out, 1) if previous else None
        self.scale = 1.0 if streams == "sum" else 0.5

    def forward(self, top: torch.Tensor, bottom: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        fused = self.scale * (self.top(top) + self.bottom(bottom))
        if previous is not None:
            fused = fused + F.interpolate(self.previous(previous), size=fused.shape[-2:], mode="nearest")
        return fused


class HFN(nn.Module):
    """Two ResNet streams (RGB on top, the second map below), fused by HFMs from the deepest stage (stride 32)
    up to stride 8; the last fusion predicts a pixel map (conv 128, BN, ReLU, conv 1, sigmoid: 32 x 32 for
    256 x 256 input), and the two streams' pooled last stages feed a 2-way classifier (index 1 = live)."""

    def __init__(self, arch: str = "resnet50", pretrained: str = "auto", fused: int = 256, streams: str = "sum"):
        super().__init__()
        self.normalise = ImageNetInput()
        self.top, self.source = resnet(arch, pretrained)
        self.bottom, _ = resnet(arch, pretrained)
        c = STAGE_CHANNELS[arch]
        self.fusions = nn.ModuleList([HFM(c[3], c[3], None, fused, streams), HFM(c[2], c[2], fused, fused, streams),
                                      HFM(c[1], c[1], fused, fused, streams)])
        self.map_head = nn.Sequential(nn.Conv2d(fused, 128, 3, padding=1), nn.BatchNorm2d(128), nn.ReLU(inplace=True),
                                      Float32Conv2d(128, 1, 3, padding=1), nn.Sigmoid())
        self.classifier = Float32Linear(2 * c[3], 2)  # scores in float32 under autocast too

    def forward(self, rgb: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(class logits (N, 2), pixel map (N, 1, S/8, S/8)); both inputs RGB-like in [0, 1]."""
        top = resnet_stages(self.top, self.normalise(rgb))
        bottom = resnet_stages(self.bottom, self.normalise(second))
        fused = None
        for fusion, level in zip(self.fusions, (3, 2, 1)):
            fused = fusion(top[level], bottom[level], fused)
        pooled = torch.cat([top[3].mean((2, 3)), bottom[3].mean((2, 3))], 1)
        return self.classifier(pooled), self.map_head(fused)
