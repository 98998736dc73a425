"""Losses and layers that several methods share: gradient reversal, depth-map errors, the domain-enhancement
entropy loss, and a Gaussian-kernel MMD."""
from __future__ import annotations

import torch
from torch.nn import functional as F


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
    """D²AM's domain-enhancement entropy loss as Eq. 7 writes it, per sample: P log P with P = sigmoid(logit),
    smallest (-1/e) at P = 1/e."""
    return torch.sigmoid(logits) * torch.nn.functional.logsigmoid(logits)


def binary_enhancement_entropy(logits: torch.Tensor) -> torch.Tensor:
    """The two-sided form per sample, P log P + (1 - P) log(1 - P): the negative binary entropy, smallest
    (-log 2) at P = 0.5, which is what D²AM's text says its loss does."""
    p = torch.sigmoid(logits)
    log_p, log_q = torch.nn.functional.logsigmoid(logits), torch.nn.functional.logsigmoid(-logits)
    return p * log_p + (1 - p) * log_q


ENTROPY_LOSSES = {"paper": enhancement_entropy, "binary": binary_enhancement_entropy}


def gaussian_mmd(x: torch.Tensor, y: torch.Tensor, bandwidths=(1.0, 2.0, 4.0, 8.0, 16.0)) -> torch.Tensor:
    """Squared MMD between the samples ``x`` and ``y`` (rows) with a sum of Gaussian kernels
    exp(-|a - b|^2 / (2 s^2 d)) over the bandwidths s (d: the feature dimension, so the scale suits any
    width); the biased estimate (V-statistic), zero when the samples are equal. D²AM's Eq. 9 names only "the
    kernel function": five Gaussians of bandwidths 1-16 x sqrt(d) is our choice (the multi-kernel MMD of
    MMD-AAE and DAN)."""
    d = x.shape[1]
    z = torch.cat([x, y])
    distances = torch.cdist(z, z).pow(2)
    kernel = sum(torch.exp(-distances / (2 * s * s * d)) for s in bandwidths)
    n = len(x)
    return kernel[:n, :n].mean() + kernel[n:, n:].mean() - 2 * kernel[:n, n:].mean()


def depth_errors(predicted: torch.Tensor, target: torch.Tensor, reduction: str) -> torch.Tensor:
    """Per example, the squared error of a depth map: ||D(F(x)) - I||^2, summed over the map's pixels, for
    ``reduction="sum"`` (the equations of D²AM and PDL-FAS), or its mean over the pixels for "mean" (RFM's
    code, whose batch mean is then the MSE). The target is average-pooled to the prediction's size when they
    differ (a network fed crops smaller than 256 predicts a smaller map than the stored 32 x 32)."""
    if target.shape[-2:] != predicted.shape[-2:]:
        target = F.adaptive_avg_pool2d(target, predicted.shape[-2:])
    squared = (predicted - target.to(predicted.dtype)).square().flatten(1)
    return squared.sum(1) if reduction == "sum" else squared.mean(1)
