"""What every method shares: optimisation steps around its losses, with a guard against non-finite losses
(checked before the optimiser step), data parallelism over processes, and prediction."""
from __future__ import annotations

import math
from dataclasses import asdict

import torch
from torch import distributed as dist
from torch import nn
from torch.nn import functional as F

from ..losses import depth_errors
from ..models.precision import full_precision


REDUCTIONS = ("sum", "mean")


def check_reduction(reduction: str) -> None:
    """Refuses a ``reduction`` option other than "sum" (the equations' sums over a batch) or "mean"."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"unknown reduction {reduction!r}: use 'sum' (the equations' sums) or 'mean'")


class NonFiniteLoss(FloatingPointError):
    """A loss became NaN or Inf (in any process); the step was not applied."""

    def __init__(self, losses: dict):
        self.losses = losses
        super().__init__(f"non-finite loss: {losses}")


def check_finite(losses: dict, distributed: bool = False) -> dict:
    """The losses as floats (under DDP: their mean over the processes); raises NonFiniteLoss if any is NaN or
    Inf in any process, in every process alike (a NaN propagates through the sum)."""
    values = torch.stack([v.detach().float().reshape(()) if torch.is_tensor(v) else torch.tensor(float(v))
                          for v in losses.values()])
    if distributed:
        values = values.to(next(v for v in losses.values() if torch.is_tensor(v)).device)
        dist.all_reduce(values)
        values /= dist.get_world_size()
    values = dict(zip(losses, values.tolist()))
    if not all(math.isfinite(v) for v in values.values()):
        raise NonFiniteLoss(values)
    return values


class Objective(nn.Module):
    """Runs one of a method's loss functions as a single forward, so that DDP sees one forward per backward
    however many times the method runs its networks (per domain, through fast weights, ...)."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, compute, *args):
        return compute(*args)


class Method(nn.Module):
    """A training method. Subclasses build their networks in :meth:`create`, set ``self.config``,
    ``self.optimizer`` and ``self.generator`` (its own random draws, checkpointed), and define :meth:`losses`
    (a dict with ``total``) and :meth:`predict`; a method with several optimisers or steps overrides
    :meth:`update` and calls :meth:`optimize` for each step.

    What the training loop asks of a method: ``channels(config)`` (shard channels it reads),
    ``pseudo_domains`` (if true, :meth:`domain_features` and :meth:`assign_domains` re-label the training
    samples each epoch), ``single_class_domains`` (its pseudo-domains may hold one class), ``clip_length``
    (if > 0, each batch also carries clips of that many frames under ``clip``), ``batch_chunks`` (the
    sampler draws ``per_class x batch_chunks`` per (domain, class): a method that takes several mini-batches
    per step cuts them from the blocks), ``class_balanced`` (if false, each domain's block is ``2 x per_class``
    samples of any class), ``scores_videos`` (if true, the method's own number is its video branch's, one
    score per video from :meth:`predict_video`: model selection, the report's ``compared`` section and the
    sweep table use it)."""

    pseudo_domains = False
    class_balanced = True
    scores_videos = False
    single_class_domains = False
    clip_length = 0
    batch_chunks = 1
    input_size = 0  # the paper's input side in pixels; 0: the stored crop size
    provenance: dict = {}  # where pretrained parts came from (or that they were asked to start random)

    @staticmethod
    def channels(config) -> tuple:
        """The shard channels the method's input stacks (RGB + HSV unless a method says otherwise)."""
        return ("rgb", "hsv")

    @classmethod
    def create(cls, config, network: str, domains: list, seed: int) -> "Method":
        """The method with its networks of size preset ``network``, for the source ``domains`` (codes)."""
        raise NotImplementedError

    def domain_features(self, batch: dict, epoch: int) -> torch.Tensor:
        """(B, F) features that pseudo-domains are clustered on (called without gradients, in eval mode)."""
        raise NotImplementedError

    def assign_domains(self, features, labels, previous, epoch: int):
        """Pseudo-domain labels of every training sample from their features (``previous``: last epoch's)."""
        raise NotImplementedError

    def domain_source(self, epoch: int) -> str:
        """What :meth:`domain_features` used in ``epoch`` (logged with each clustering)."""
        return "model"

    def predict_video(self, frames: torch.Tensor) -> torch.Tensor:
        """Live probability of each video (B x L x C x S x S frames in order), for methods with clips."""
        raise NotImplementedError

    def losses(self, batch: dict) -> dict:
        raise NotImplementedError

    def reduce(self, losses: torch.Tensor) -> torch.Tensor:
        """Per-example losses -> ``config.reduction``: "sum", the sum over the batch the papers' equations
        write (under DDP scaled by the number of processes, so that DDP's gradient average is the sum over the
        global batch), or "mean"."""
        if self.config.reduction == "mean":
            return losses.mean()
        return losses.sum() * (dist.get_world_size() if "_ddp" in self.__dict__ else 1)

    def classification(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """L_cls: binary cross-entropy of the live logits (in float32), reduced as configured."""
        logits = full_precision(logits)
        return self.reduce(F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype), reduction="none"))

    def depth_loss(self, predicted: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """L_dep of a method with a depth estimator: the maps' squared errors, reduced as configured (see
        :func:`fas_train.losses.depth_errors`)."""
        return self.reduce(depth_errors(predicted, target, self.config.reduction))

    def update(self, batch: dict) -> dict:
        """One training step on a batch (images and depth in [0, 1]); returns the losses as floats."""
        self.train()
        return self.optimize(self.losses, self.optimizer, batch)

    def optimize(self, compute, optimizer: torch.optim.Optimizer, *args) -> dict:
        """One optimiser step on ``compute(*args)["total"]``; under DDP gradients are averaged over processes.
        Non-finite losses raise :class:`NonFiniteLoss` before any weight changes."""
        runner = self.__dict__.get("_ddp")
        losses = runner(compute, *args) if runner is not None else compute(*args)
        values = check_finite(losses, distributed=runner is not None)
        optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        optimizer.step()
        return values

    def optimizers(self) -> dict:
        """The method's optimisers by name (checkpointed)."""
        return {"main": self.optimizer}

    def distribute(self, device_ids=None) -> None:
        """Average gradients over the processes of the default process group (``torchrun``) with PyTorch's
        DistributedDataParallel; parameters and buffers start as rank 0's. Batch-norm statistics stay per
        process, as in DDP's default."""
        from torch.nn.parallel import DistributedDataParallel
        # kept out of the module tree: the wrapper holds the method, not the other way round
        self.__dict__["_ddp"] = DistributedDataParallel(Objective(self), device_ids=device_ids,
                                                         find_unused_parameters=True)

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Live probability of each image."""
        self.eval()
        return torch.sigmoid(full_precision(self.meta(self.feature(x)[1])))

    def hparams(self) -> dict:
        """The resolved config and the provenance of pretrained parts (recorded in run.json)."""
        return {**asdict(self.config), **self.provenance}
