"""RFM's three networks (Shao et al., AAAI 2020), as in the authors' public code: a feature extractor
whose three blocks feed a depth estimator (concatenated at 32 x 32) and whose last block feeds the meta
learner, which outputs one live-vs-spoof logit (positive = live)."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from .precision import Float32Linear


def conv_bn_relu(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class FeatureExtractor(nn.Module):
    """6 x 256 x 256 (RGB + HSV) -> (384 x 32 x 32 for the depth estimator, 128 x 32 x 32 for the meta learner)."""

    def __init__(self, in_channels: int = 6, width: int = 64, block=(128, 196, 128)):
        super().__init__()
        self.stem = conv_bn_relu(in_channels, width)
        blocks, cin = [], width
        for _ in range(3):
            blocks.append(nn.Sequential(conv_bn_relu(cin, block[0]), conv_bn_relu(block[0], block[1]),
                                        conv_bn_relu(block[1], block[2]), nn.MaxPool2d(2)))
            cin = block[2]
        self.blocks = nn.ModuleList(blocks)
        self.out_channels = (3 * block[2], block[2])

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.stem(x)
        outputs = []
        for block in self.blocks:
            x = block(x)
            outputs.append(x)
        size = outputs[-1].shape[-2:]
        for_depth = torch.cat([F.adaptive_avg_pool2d(o, size) for o in outputs], dim=1)
        return for_depth, outputs[-1]


class DepthEstimator(nn.Module):
    """384 x 32 x 32 -> 1 x 32 x 32 (conv 384 -> 128 -> 64 -> 1, each with BN and ReLU, as released)."""

    def __init__(self, in_channels: int = 384, widths=(128, 64)):
        super().__init__()
        self.net = nn.Sequential(conv_bn_relu(in_channels, widths[0]), conv_bn_relu(widths[0], widths[1]),
                                 conv_bn_relu(widths[1], 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class MetaLearner(nn.Module):
    """128 x 32 x 32 -> one logit (positive = live)."""

    def __init__(self, in_channels: int = 128, widths=(128, 256, 512)):
        super().__init__()
        a, b, c = widths
        self.features = nn.Sequential(conv_bn_relu(in_channels, a), nn.MaxPool2d(2), conv_bn_relu(a, b),
                                      nn.MaxPool2d(2), conv_bn_relu(b, c), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = Float32Linear(c, 1)  # the score's logit in float32 under autocast too

    def forward(self, x: torch.Tensor, with_features: bool = False):
        """The logit; with ``with_features`` also the adaptation layer's features (before the classifier)."""
        h = self.features(x)
        logit = self.classifier(h).squeeze(1)
        return (logit, h) if with_features else logit


def xavier_init(module: nn.Module) -> None:
    """Xavier-uniform weights for convolutions and linear layers, zero biases (the authors' initialisation)."""
    for m in module.modules():
        if isinstance(m, (nn.Conv2d, nn.Linear)):
            nn.init.xavier_uniform_(m.weight)
            if m.bias is not None:
                nn.init.zeros_(m.bias)


SIZES = {  # "paper": the released networks; "small": the same layout at a quarter of the width, for CPU demos
    "paper": {"width": 64, "block": (128, 196, 128), "depth": (128, 64), "meta": (128, 256, 512)},
    "small": {"width": 16, "block": (32, 48, 32), "depth": (32, 16), "meta": (32, 64, 128)},
}


def rfm_networks(size: str = "paper", in_channels: int = 6,
                 feature_class=FeatureExtractor) -> tuple[nn.Module, nn.Module, nn.Module]:
    """Feature extractor (``feature_class``, RFM's by default), depth estimator and meta learner of a size
    preset, Xavier-initialised."""
    if size not in SIZES:
        raise ValueError(f"unknown network size {size!r}; known: {sorted(SIZES)}")
    s = SIZES[size]
    feature = feature_class(in_channels, s["width"], s["block"])
    depth = DepthEstimator(feature.out_channels[0], s["depth"])
    meta = MetaLearner(feature.out_channels[1], s["meta"])
    for net in (feature, depth, meta):
        xavier_init(net)
    return feature, depth, meta
