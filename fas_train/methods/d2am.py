"""D²AM: generalisable representation learning for mixture-domain face anti-spoofing (Chen et al., AAAI 2021).

Each epoch has two stages.
1. Pseudo-domains. The first epoch clusters *all* training samples jointly into K domains (K-means) on the
   instance-norm statistics of the four stages of an ImageNet-pretrained ResNet, "for correct positive and
   negative domain matching" (the weights must be local: a clear error names the files looked for;
   ``first_epoch=style`` uses label-free input style statistics instead, on request). Later epochs use the
   model: domain features df(x) are the instance-norm statistics (mean, std over space) of the domain part F-
   of each DRLM, restricted to the C/2 channels with the lowest attention (``select``; all channels
   without it), stacked over the three DRLMs. The channels are chosen once per clustering pass, by the
   attention averaged over every sample of the pass, so a feature column is the same channel for every
   sample. K-means then runs on the live and on the spoof samples apart, and each class's clusters are
   matched to the previous epoch's labels of that class with the Kuhn-Munkres algorithm, which both keeps the
   labels from drifting and pairs the live and spoof clusters through the previous assignment. Each
   clustering logs its NMI with the datasets and with the previous epoch's pseudo-domains. A pseudo-domain
   may hold one class only (the joint first clustering can make one): its batch block then has that class.
2. Meta-learning on the pseudo-domains (Eqs. 8-13): K-1 meta-train domains and one meta-test domain per step;
   per meta-train domain L_cls + lambda_m L_MMD (MMD with a Gaussian kernel between the meta learner's
   adaptation-layer features and samples of N(0, I)), L_dep, the entropy loss lambda_p L_P of the three DRLMs,
   and an inner update theta_M' = theta_M - alpha grad(L_cls + lambda_m L_MMD); on the meta-test domain L_dep
   and, through every adapted learner, L_cls + lambda_m L_MMD. One Adam step (beta) on the sum.

Losses as Eqs. 8 and 10 write them (``reduction=sum``, the default): L_Cls(B_i) is the BCE summed over the
batch, L_Dep(B_i) = sum ||D(E(x)) - I||^2 over the batch, i.e. over every pixel of every map; L_P(B_i) is summed
over the batch likewise (Eq. 7 is per sample; its B_i index puts it beside the other batch sums); L_MMD is
Eq. 9's distance of batch means. With 10 + 10 per domain and 32 x 32 maps, this weighs L_Dep about 1,000x and
the classification about 20x more than batch means would, against lambda_m L_MMD and lambda_p L_P, and makes
the inner step 20x longer. ``reduction=mean`` (batch means, the depth error also averaged over the pixels,
as RFM's code) is the named alternative. Under DDP each process sums its slice and the sums are scaled by the
number of processes, so the averaged gradient is the global batch's sum (the inner step then uses the
process's slice, scaled likewise).

The entropy loss is Eq. 7 as written, L_p = P log P with P = sigmoid(W_p pool(F-)) (smallest at P = 1/e);
``entropy=binary`` uses P log P + (1 - P) log(1 - P) instead, the negative binary entropy, smallest at
P = 0.5, which is what the paper's text says the loss does ("constrain P to around 0.5").

Choices where the paper is silent:
- K-means runs on the domain features df(x) as they are (``cluster_features=raw``, the paper's); with
  ``cluster_features=zscore`` each column is standardised first, so that the std columns (smaller than the
  means) and the three DRLMs weigh alike.
- Batch: 10 live + 10 spoof per pseudo-domain (``per_class``; the paper gives no batch size: RFM's released
  code's, D²AM being built on RFM); Adam's own betas (0.9, 0.999).
- MMD kernel: Eq. 9 names "the kernel function" only; ours is a sum of five Gaussians of bandwidths 1, 2, 4,
  8, 16 x sqrt(d) (d: the adaptation layer's width), the multi-kernel form of MMD-AAE and DAN.
- W_p (the probe of L_P) cannot be trained on L_P itself (W_p = 0 would minimise it without touching F-):
  it is fit by BCE to the labels on detached F-, and the extractor minimises L_P through the probe's
  detached weights, so F- is pushed to carry no task information.
- DRLM reduction ratio 16; L_dep unweighted, as in Eqs. 12-13; second-order inner gradients as RFM
  (``meta_gradient=first-order`` treats the inner gradient as a constant).
- ``pseudo=False`` is the paper's "w/ d" ablation: dataset domains instead of pseudo-domains. The paper's
  "w/o d" (random meta-train/meta-test splits of the mixture) is not offered.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from ..losses import ENTROPY_LOSSES, gaussian_mmd
from ..models.backbones import ImageNetInput, resnet, resnet_stages
from ..models.d2am_nets import D2AMFeatureExtractor
from ..models.rfm_nets import rfm_networks
from ..pseudo_domains import cluster_by_class, cluster_joint, instance_statistics
from .base import Method, check_reduction
from .rfm import META_GRADIENTS, draw_meta_split


@dataclass(frozen=True)
class D2AMConfig:
    inner_lr: float = 1e-3  # alpha
    lr: float = 1e-4  # beta (Adam)
    entropy_weight: float = 0.1  # lambda_p
    mmd_weight: float = 0.05  # lambda_m
    depth_weight: float = 1.0
    domains: int = 3  # K
    select: bool = True  # cluster the lowest-attention half of the channels only
    pseudo: bool = True  # False: dataset domains (the paper's "w/ d")
    meta_gradient: str = "second-order"  # or "first-order"
    entropy: str = "paper"  # Eq. 7, P log P; "binary": P log P + (1 - P) log(1 - P)
    per_class: int = 10  # live and spoof samples per pseudo-domain (the paper gives no batch size: RFM's)
    reduction: str = "sum"  # Eqs. 8, 10 (and L_P per batch): sums over the batch; "mean": batch means
    cluster_features: str = "raw"  # K-means on df(x) as it is (the paper); "zscore": each column standardised
    first_epoch: str = "imagenet"  # "imagenet" (the paper), or "style" (input style statistics, on request)
    first_epoch_backbone: str = "resnet50"
    pretrained: str = "auto"  # "auto" (local weights, required), "none" (random, on request), or a path


class D2AM(Method):
    single_class_domains = True  # the joint first clustering may give a domain of one class

    def __init__(self, feature: nn.Module, depth: nn.Module, meta: nn.Module, config: D2AMConfig = D2AMConfig(),
                 seed: int = 0):
        super().__init__()
        for name, value, known in (("meta_gradient", config.meta_gradient, META_GRADIENTS),
                                   ("entropy", config.entropy, ENTROPY_LOSSES),
                                   ("first_epoch", config.first_epoch, ("imagenet", "style")),
                                   ("cluster_features", config.cluster_features, ("raw", "zscore"))):
            if value not in known:
                raise ValueError(f"unknown {name} {value!r}; known: {sorted(known)}")
        check_reduction(config.reduction)
        self.feature, self.depth, self.meta, self.config = feature, depth, meta, config
        self.pseudo_domains = config.pseudo
        self.optimizer = torch.optim.Adam(self.parameters(), lr=config.lr)
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)
        self.provenance = {}
        self.__dict__["_imagenet"] = None  # kept out of the module tree: not trained, not checkpointed
        if config.pseudo and config.first_epoch == "imagenet":
            backbone, source = resnet(config.first_epoch_backbone, config.pretrained)
            self.__dict__["_imagenet"] = nn.Sequential(ImageNetInput(), backbone).eval()
            self.provenance["first_epoch_features"] = f"{config.first_epoch_backbone} {source}"
        elif config.pseudo:
            self.provenance["first_epoch_features"] = "input style statistics (first_epoch=style, asked for)"

    @classmethod
    def create(cls, config: D2AMConfig, network: str, domains: list, seed: int) -> "D2AM":
        return cls(*rfm_networks(network, feature_class=D2AMFeatureExtractor), config, seed=seed)

    # -- training step -------------------------------------------------------------------------------------
    def mmd_to_prior(self, h: torch.Tensor) -> torch.Tensor:
        prior = torch.randn(h.shape, generator=self.generator).to(h.device)
        return gaussian_mmd(h.float(), prior)

    def entropy_terms(self, parts, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(L_P summed over the DRLMs through detached probes and reduced over the batch as configured, the
        probes' own BCE on detached F-, a batch mean)."""
        entropy, probe = 0, 0
        entropy_loss = ENTROPY_LOSSES[self.config.entropy]
        for drlm, (f_minus, _) in zip(self.feature.drlm, parts):
            pooled = F.adaptive_avg_pool2d(f_minus, 1).flatten(1)
            logit = F.linear(pooled, drlm.probe.weight.detach(), drlm.probe.bias.detach()).squeeze(1)
            entropy = entropy + self.reduce(entropy_loss(logit))
            probe = probe + F.binary_cross_entropy_with_logits(drlm.probe(pooled.detach()).squeeze(1), y)
        return entropy, probe

    def objective(self, batch: dict, train: list[int], test: int) -> dict:
        """The losses of one step for a given split of the (pseudo-)domains."""
        cfg = self.config
        x, target, domains = batch["image"], batch["depth"], batch["domain"]
        y = batch["label"].to(x.dtype)
        params = dict(self.meta.named_parameters())
        second_order = cfg.meta_gradient == "second-order"
        zero = x.new_zeros(())
        cls_train = mmd_train = dep_train = entropy = probe = zero
        adapted = []
        for d in train:
            mask = domains == d
            for_depth, for_meta, parts = self.feature(x[mask])
            logit, h = functional_call(self.meta, params, (for_meta,), {"with_features": True})
            cls, mmd = self.classification(logit, y[mask]), self.mmd_to_prior(h)
            grads = torch.autograd.grad(cls + cfg.mmd_weight * mmd, list(params.values()),
                                        create_graph=second_order, retain_graph=True)
            adapted.append({name: p - cfg.inner_lr * (g if second_order else g.detach())
                            for (name, p), g in zip(params.items(), grads)})
            cls_train, mmd_train = cls_train + cls, mmd_train + mmd
            dep_train = dep_train + self.depth_loss(self.depth(for_depth), target[mask])
            ent, fit = self.entropy_terms(parts, y[mask])
            entropy, probe = entropy + ent, probe + fit
        mask = domains == test
        for_depth, for_meta, _ = self.feature(x[mask])
        cls_test = mmd_test = zero
        for fast in adapted:
            logit, h = functional_call(self.meta, fast, (for_meta,), {"with_features": True})
            cls_test = cls_test + self.classification(logit, y[mask])
            mmd_test = mmd_test + self.mmd_to_prior(h)
        dep_test = self.depth_loss(self.depth(for_depth), target[mask])
        total = (cls_train + cfg.mmd_weight * mmd_train + cls_test + cfg.mmd_weight * mmd_test
                 + cfg.depth_weight * (dep_train + dep_test) + cfg.entropy_weight * entropy + probe)
        return {"total": total, "cls_train": cls_train, "cls_test": cls_test, "mmd_train": mmd_train,
                "mmd_test": mmd_test, "dep_train": dep_train, "dep_test": dep_test, "entropy": entropy,
                "probe": probe}

    def losses(self, batch: dict) -> dict:
        train, test = draw_meta_split(batch["domain"], self.generator, "D²AM")
        return self.objective(batch, train, test)

    # -- pseudo-domains ------------------------------------------------------------------------------------
    def domain_source(self, epoch: int) -> str:
        return self.provenance["first_epoch_features"] if epoch == 0 else "model: DRLM domain features"

    def domain_features(self, batch: dict, epoch: int) -> torch.Tensor:
        """Epoch 0: ImageNet ResNet stage statistics (or input style statistics). Later: per DRLM, the mean
        and std of every channel of F- and the attention a, as [mean | std | a] blocks of C columns each; the
        channels are chosen over the whole pass in :meth:`assign_domains`."""
        x = batch["image"]
        if epoch == 0:
            if self._imagenet is not None:  # outside the module tree, so it follows the input's device here
                normalise, backbone = self._imagenet.to(x.device)
                return torch.cat([instance_statistics(s) for s in resnet_stages(backbone, normalise(x))], 1)
            return input_style_statistics(x)
        return torch.cat([torch.cat([instance_statistics(f_minus), a.float()], 1)
                          for f_minus, a in self.feature(x)[2]], 1)

    def clustering_features(self, features) -> np.ndarray:
        """The domain features df(x) of a whole pass: per DRLM the mean and std of the channels with the C/2
        lowest attentions averaged over the pass (every channel without ``select``)."""
        return select_domain_channels(np.asarray(features), [d.probe.in_features for d in self.feature.drlm],
                                      self.config.select)

    def assign_domains(self, features, labels, previous, epoch: int):
        seed, standardise = 1000 * self.seed + epoch, self.config.cluster_features == "zscore"
        if epoch == 0 or previous is None:  # joint clustering, as the paper's first epoch
            return cluster_joint(features, self.config.domains, seed=seed, previous=previous, standardise=standardise)
        return cluster_by_class(self.clustering_features(features), labels, self.config.domains, seed=seed,
                                previous=previous, standardise=standardise)


def select_domain_channels(features: np.ndarray, channels: list[int], select: bool) -> np.ndarray:
    """From [mean | std | attention] blocks (C columns each) per DRLM, the mean and std columns of the C/2
    channels whose attention, averaged over all rows, is lowest (all channels when not ``select``); one
    channel set for every row, so columns are comparable across samples."""
    out, start = [], 0
    for c in channels:
        mean, std, attention = (features[:, start + i * c:start + (i + 1) * c] for i in range(3))
        start += 3 * c
        chosen = np.sort(np.argsort(attention.mean(0), kind="stable")[:c // 2]) if select else np.arange(c)
        out += [mean[:, chosen], std[:, chosen]]
    if start != features.shape[1]:
        raise ValueError(f"domain features have {features.shape[1]} columns, expected {start}")
    return np.concatenate(out, 1)


def input_style_statistics(x: torch.Tensor) -> torch.Tensor:
    """Label-free style features of images: per-channel mean and std of the input, of the input downsampled
    4x, and of its high-pass residual (input minus a 5 x 5 box blur: noise, moiré, sharpness)."""
    blurred = F.avg_pool2d(x, 5, stride=1, padding=2, count_include_pad=False)
    return torch.cat([instance_statistics(x), instance_statistics(F.avg_pool2d(x, 4)),
                      instance_statistics(x - blurred)], 1)
