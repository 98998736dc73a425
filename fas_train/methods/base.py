"""What every method shares: the training step around its losses, with a guard against non-finite losses
(checked before the optimiser step), and prediction."""
from __future__ import annotations

import math
from dataclasses import asdict

import torch
from torch import nn


class NonFiniteLoss(FloatingPointError):
    """A loss became NaN or Inf; the step was not applied."""

    def __init__(self, losses: dict):
        self.losses = losses
        super().__init__(f"non-finite loss: {losses}")


def check_finite(losses: dict) -> dict:
    """The losses as floats; raises NonFiniteLoss if any is NaN or Inf."""
    values = {k: float(v.detach()) if hasattr(v, "detach") else float(v) for k, v in losses.items()}
    if not all(math.isfinite(v) for v in values.values()):
        raise NonFiniteLoss(values)
    return values


class Method(nn.Module):
    """A method over (feature extractor, depth estimator, meta learner/classifier). Subclasses define
    :meth:`losses` (a dict with ``total``) and set ``self.optimizer`` and ``self.config``."""

    def losses(self, batch: dict) -> dict:
        raise NotImplementedError

    def update(self, batch: dict) -> dict:
        """One training step on a batch (images and depth in [0, 1]); returns the losses as floats."""
        self.train()
        losses = self.losses(batch)
        values = check_finite(losses)  # before the step: a NaN never reaches the weights
        self.optimizer.zero_grad(set_to_none=True)
        losses["total"].backward()
        self.optimizer.step()
        return values

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """Live probability of each image."""
        self.eval()
        return torch.sigmoid(self.meta(self.feature(x)[1]))

    def hparams(self) -> dict:
        return asdict(self.config)
