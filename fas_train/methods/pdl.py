"""PDL-FAS: domain generalisation with pseudo-domain labels (Kim et al.), on RFM's networks and objective.

Every epoch the training samples are re-labelled: the mean and variance over space of each channel of the
feature extractor's 5th and 9th convolution layers and of the depth estimator's last layer are stacked,
reduced by PCA to 256 dimensions and clustered (K-means, or a Gaussian mixture) into N pseudo-domains
(default 3); the labels are matched to the previous epoch's (Hungarian algorithm) so they stay comparable
in the log. The shared balanced sampler then draws per pseudo-domain, and the step is the meta-train /
meta-test objective of Eqs. 4-9 (RFM's, see :mod:`fas_train.methods.rfm`).

Choices where the paper is silent or cannot be followed literally:
- "7 per domain" cannot be split equally into live and spoof: the default is 4 + 4 per pseudo-domain.
- Losses as Eqs. 4-9 write them (``reduction=sum``, the default): unweighted (``depth_weight`` = 1) sums
  over each batch, the BCE summed over the samples and ||D(F(x)) - I||^2 over the samples and the pixels.
  The alternatives are named: ``reduction=mean`` (batch means, the depth error also averaged over the
  pixels) and, with it, ``depth_weight=10``, RFM's released code, whose objective PDL-FAS builds on. Under DDP
  the sums are scaled by the number of processes (the averaged gradient is the global batch's sum).
- Layer outputs are taken after each convolution's batch norm and ReLU; features are standardised before
  PCA; a cluster may hold a single class (its batch block then has that class only).
- The first clustering uses the freshly initialised networks (the paper clusters "for every epoch").
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..pseudo_domains import cluster_pca, instance_statistics
from .rfm import RFM, RFMConfig


@dataclass(frozen=True)
class PDLConfig(RFMConfig):
    inner_lr: float = 1e-3  # alpha
    lr: float = 1e-3  # beta
    depth_weight: float = 1.0
    per_class: int = 4
    reduction: str = "sum"  # Eqs. 4-7: sums over the batch; "mean" (with depth_weight=10: RFM's code)
    domains: int = 3  # N pseudo-domains
    clustering: str = "kmeans"  # or "gmm"
    pca_dims: int = 256


class PDL(RFM):
    pseudo_domains = True
    single_class_domains = True

    def style_layers(self) -> list:
        """The feature extractor's 5th and 9th convolution blocks and the depth estimator's last one."""
        blocks = self.feature.blocks
        return [blocks[1][0], blocks[2][1], self.depth.net[-1]]

    def domain_features(self, batch: dict, epoch: int) -> torch.Tensor:
        captured = []
        hooks = [layer.register_forward_hook(lambda module, args, output: captured.append(output))
                 for layer in self.style_layers()]
        try:
            self.depth(self.feature(batch["image"])[0])
        finally:
            for hook in hooks:
                hook.remove()
        stats = []
        for output in captured:
            mean, std = instance_statistics(output).chunk(2, dim=1)
            stats += [mean, std.square()]
        return torch.cat(stats, 1)

    def assign_domains(self, features, labels, previous, epoch: int):
        cfg = self.config
        return cluster_pca(features, cfg.domains, seed=1000 * self.seed + epoch, dims=cfg.pca_dims,
                           method=cfg.clustering, previous=previous)
