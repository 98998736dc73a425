"""ImageNet ResNets from torchvision, with their pretrained weights read from a local file or the torch hub
cache when present. Nothing is downloaded: without local weights a network starts from random weights and
says so (``source``), and every run records it."""
from __future__ import annotations

import os
from pathlib import Path

import torch
import torchvision
from torch import nn

ARCHITECTURES = ("resnet18", "resnet34", "resnet50")
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def find_weights(arch: str, weights_dir: str | Path | None = None) -> Path | None:
    """A local ImageNet checkpoint of ``arch`` (torchvision's file name, ``<arch>-<hash>.pth``): first in
    ``weights_dir`` or $FAS_WEIGHTS_DIR, then in the torch hub cache (``$TORCH_HOME/hub/checkpoints``)."""
    folders = [Path(p) for p in (weights_dir, os.environ.get("FAS_WEIGHTS_DIR")) if p]
    folders.append(Path(torch.hub.get_dir()) / "checkpoints")
    for folder in folders:
        found = sorted(folder.glob(f"{arch}-*.pth")) if folder.is_dir() else []
        if found:
            return found[0]
    return None


def resnet(arch: str, pretrained: str = "auto") -> tuple[nn.Module, str]:
    """(torchvision ResNet without its classifier, where its weights came from). ``pretrained``: "auto" (local
    weights if found, else random), "none" (random), or a checkpoint path (required to exist and fit)."""
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown backbone {arch!r}; known: {ARCHITECTURES}")
    model = getattr(torchvision.models, arch)(weights=None)
    path = None
    if pretrained == "auto":
        path = find_weights(arch)
    elif pretrained != "none":
        path = Path(pretrained)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ImageNet weights for {arch} not found")
    source = "random initialisation (no local ImageNet weights)"
    if path is not None:
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            model.load_state_dict(state)
        except RuntimeError as err:
            raise ValueError(f"{path}: not {arch} ImageNet weights ({str(err).splitlines()[0]})") from None
        source = f"imagenet: {path}"
    model.fc = nn.Identity()
    return model, source


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
