"""Networks of the class-conditional domain discriminator method (Saha et al., CVPRW 2020): a ResNet encoder
with a live/spoof classifier, the class-conditional discriminator (FC1-FC2 with ReLU and dropout, then a live
head and a spoof head over the source domains), and the video branch (an LSTM over the encoder's features of
a clip, with its own classifier)."""
from __future__ import annotations

import torch
from torch import nn

from .backbones import ImageNetInput, resnet
from .precision import Float32Linear, full_precision

BACKBONES = {"paper": "resnet50", "small": "resnet18"}


class Encoder(nn.Module):
    """RGB in [0, 1] -> ImageNet-normalised -> ResNet features (2048 for ResNet-50, 512 for ResNet-18)."""

    def __init__(self, arch: str = "resnet50", pretrained: str = "auto"):
        super().__init__()
        self.normalise = ImageNetInput()
        self.resnet, self.source = resnet(arch, pretrained)
        self.out_features = 2048 if arch == "resnet50" else 512

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.resnet(self.normalise(x))


class ClassConditionalDiscriminator(nn.Module):
    """FC1 -> ReLU -> dropout -> FC2 -> ReLU -> dropout, then the live samples through the live head and the
    spoof samples through the spoof head, each giving ``domains`` logits."""

    def __init__(self, in_features: int, domains: int, hidden: int = 1024, dropout: float = 0.5):
        super().__init__()
        self.common = nn.Sequential(nn.Linear(in_features, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout),
                                    nn.Linear(hidden, hidden), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.live_head, self.spoof_head = nn.Linear(hidden, domains), nn.Linear(hidden, domains)

    def forward(self, features: torch.Tensor, live: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(domain logits of the live rows, of the spoof rows); ``live`` is a boolean mask."""
        shared = self.common(features)
        return self.live_head(shared[live]), self.spoof_head(shared[~live])


class VideoHead(nn.Module):
    """An LSTM over a clip's per-frame features; the last hidden state feeds a live/spoof logit."""

    def __init__(self, in_features: int, hidden: int = 256):
        super().__init__()
        self.lstm = nn.LSTM(in_features, hidden, batch_first=True)
        self.classifier = Float32Linear(hidden, 1)
        self.out_features = hidden

    def forward(self, sequence: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, last hidden states) of (B, L, F) sequences."""
        _, (hidden, _) = self.lstm(full_precision(sequence))
        state = hidden[-1]
        return self.classifier(state).squeeze(1), state
