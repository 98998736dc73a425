"""Losses and layers that several methods share: gradient reversal, the domain-enhancement entropy loss,
and a Gaussian-kernel MMD."""
from __future__ import annotations

import torch


class _ReverseGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, factor):
        ctx.factor = factor
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return -ctx.factor * grad, None


def reverse_gradient(x: torch.Tensor, factor: float) -> torch.Tensor:
    """Identity forward; the backward multiplies the gradient by ``-factor`` (Ganin & Lempitsky's GRL)."""
    return _ReverseGradient.apply(x, factor)


def enhancement_entropy(logits: torch.Tensor) -> torch.Tensor:
    """D²AM's domain-enhancement entropy loss as Eq. 7 writes it: the mean of P log P with P = sigmoid(logit),
    smallest (-1/e) at P = 1/e."""
    return (torch.sigmoid(logits) * torch.nn.functional.logsigmoid(logits)).mean()


def binary_enhancement_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The two-sided form, mean of P log P + (1 - P) log(1 - P): the negative binary entropy, smallest (-log 2)
    at P = 0.5, which is what D²AM's text says its loss does."""
    p = torch.sigmoid(logits)
    log_p, log_q = torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)
    return (p * log_p + (1 - p) * log_q).mean()


ENTROPY_LOSSES = {"paper": enhancement_entropy, "binary": binary_enhancement_entropy}


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor, bandwidths=(1.0, 2.0, 4.0, 8.0, 16.0)) -> torch.Tensor:
    """Squared MMD between the samples ``x`` and ``y`` (rows) with a sum of Gaussian kernels
    exp(-|a - b|^2 / (2 s^2 d)) over the bandwidths s (d: the feature dimension, so the scale suits any
    width); the biased estimate, zero when the samples are equal."""
    d = x.shape[1]
    z = torch.cat([x, y])
    distances = torch.cdist(z, z).pow(2)
    kernel = sum(torch.exp(-distances / (2 * s * s * d)) for s in bandwidths)
    n = len(x)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()
