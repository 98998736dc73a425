"""ImageNet ResNets from torchvision, with their pretrained weights read from a local file or the torch hub
cache. Nothing is downloaded, and nothing falls back silently: ``pretrained="auto"`` stops with the file names
looked for and the folders searched when no weights are found; random weights are used only when asked for
(``pretrained="none"``), and every run records and prints where its weights came from."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn

from pipeline.weights import load_weights

ARCHITECTURES = ("resnet18", "resnet34", "resnet50")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def weight_folders(weights_dir: str | Path | None = None) -> list[Path]:
    """Where ImageNet checkpoints are looked for, in order: ``weights_dir``, $FAS_WEIGHTS_DIR, then the torch
    hub cache (``$TORCH_HOME/hub/checkpoints``)."""
    folders = [Path(p) for p in (weights_dir, os.environ.get("FAS_WEIGHTS_DIR")) if p]
    return folders + [Path(torch.hub.get_dir()) / "checkpoints"]


def find_weights(arch: str, weights_dir: str | Path | None = None) -> Path | None:
    """A local ImageNet checkpoint of ``arch`` (torchvision's file name, ``<arch>-<hash>.pth``) in the first
    of :func:`weight_folders` that has one."""
    for folder in weight_folders(weights_dir):
        found = sorted(folder.glob(f"{arch}-*.pth")) if folder.is_dir() else []
        if found:
            return found[0]
    return None


RANDOM = "random initialisation (pretrained=none, asked for)"


def resnet(arch: str, pretrained: str = "auto") -> tuple[nn.Module, str]:
    """(torchvision ResNet without its classifier, where its weights came from). ``pretrained``: "auto" (local
    ImageNet weights, required: a clear error when none are found), "none" (random weights, on request), or a
    checkpoint path (required to exist and fit)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown backbone {arch!r}; known: {ARCHITECTURES}")
    model = getattr(torchvision.models, arch)(weights=None)
    if pretrained == "none":
        model.fc = nn.Identity()
        return model, RANDOM
    if pretrained == "auto":
        path = find_weights(arch)
        if path is None:
            searched = ", ".join(str(f) for f in weight_folders())
            raise FileNotFoundError(
                f"ImageNet weights for {arch} not found: looked for {arch}-*.pth (torchvision's file name) in "
                f"{searched}. Put the file in one of them (or point $FAS_WEIGHTS_DIR at it), give its path with "
                f"--option pretrained=PATH, or train from random weights on purpose with --option pretrained=none")
    else:
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ImageNet weights for {arch} not found")
    state = load_weights(path)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ValueError(f"{path}: not {arch} ImageNet weights ({str(err).splitlines()[0]})") from None
    model.fc = nn.Identity()
    return model, f"imagenet: {path}"


class ImageNetInput(nn.Module):
    """RGB in [0, 1] -> ImageNet-normalised input."""

    def __init__(self):
        super().__init__()
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x[:, :3] - self.mean) / self.std


def resnet_stages(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The outputs of a torchvision ResNet's four stages (strides 4, 8, 16, 32)."""
    x = model.maxpool(model.relu(model.bn1(model.conv1(x))))
    outputs = []
    for stage in (model.layer1, model.layer2, model.layer3, model.layer4):
        x = stage(x)
        outputs.append(x)
    return outputs
