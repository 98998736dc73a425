"""Where and how a run computes: its device, the process group under ``torchrun``, precision and memory layout.

- Precision and memory layout are settings (``precision``: auto, bf16, fp32; ``channels_last``: auto, on,
  off); ``auto`` is bf16 autocast and channels-last on CUDA, fp32 and the default layout elsewhere. Either can
  be asked for on the CPU too (it has bf16 autocast). Scores and every metric input stay float32: the
  score layers compute in float32 under autocast (:mod:`fas_train.models.precision`).
- Under ``torchrun`` (``WORLD_SIZE`` > 1) the run is data-parallel with DDP (NCCL on CUDA, gloo on the CPU).
"""
from __future__ import annotations

import os

import torch
from torch import distributed as dist

from .data import resize_input, to_device
from .settings import RunConfig


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)


def start_distributed(cfg: RunConfig) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process; joins the process group when started by ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, resolve_device(cfg.device)
    local_rank = int(os.environ["LOCAL_RANK"])
    device = resolve_device(cfg.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def use_bf16(cfg: RunConfig, device: torch.device) -> bool:
    """Whether networks run under bf16 autocast (``auto``: on CUDA only)."""
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")


def autocast(cfg: RunConfig, device: torch.device):
    """The autocast context of the run's precision setting."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(cfg, device))


def use_channels_last(cfg: RunConfig, device: torch.device) -> bool:
    return cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cuda")


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def prepare(cfg: RunConfig, device: torch.device, batch: dict) -> dict:
    batch = to_device(batch, device, channels_last=use_channels_last(cfg, device))
    image = batch["image"]
    if cfg.input_size and image.shape[-1] != cfg.input_size:  # frames (N, C, S, S) or clips (N, L, C, S, S)
        resized = resize_input(image.flatten(0, image.ndim - 4), cfg.input_size)
        batch["image"] = resized.view(*image.shape[:-2], cfg.input_size, cfg.input_size)
    return batch
