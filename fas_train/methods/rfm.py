"""RFM: Regularized Fine-grained Meta-learning (Shao et al., AAAI 2020), Algorithm 1.

Each step the batch's source domains are shuffled: N-1 are meta-train domains, one is the meta-test domain.
For each meta-train domain i: L_cls(T_i) (BCE on the meta learner's logit), L_dep(T_i) (MSE of the depth
estimator against the depth target) and an inner update of the meta learner only,
theta_M'_i = theta_M - alpha * grad_{theta_M} L_cls(T_i). On the meta-test domain: L_dep(T) and the BCE
through every adapted learner. One optimiser step on

    sum_i L_cls(T_i) + w_dep * sum_i L_dep(T_i) + w_test * (sum_i L_cls(T; theta_M'_i) + w_dep * L_dep(T))

over all three networks (the weights of the authors' code: w_dep = 10, w_test = 1, alpha = 1e-3, Adam 1e-3).
The inner update keeps its graph (second-order) by default; the fast weights are used through
``torch.func.functional_call``, so the network is written once.

Ablations: the paper's Table 3 rows ``meta_gradient=first-order`` ("Ours (First-order)": the inner gradient is
treated as a constant) and ``aggregated=true`` ("Ours (Aggregation)": one meta-train group of the N-1 domains
and one meta-test domain); its Fig. 5 components ``meta=false`` ("wo/meta": classification and depth on every
domain) and ``depth=false`` ("wo/reg": no depth regularisation). The paper names its first-order row after
Reptile's approximation. With one inner step, Reptile's meta-gradient for meta-train domain i is
(theta - theta~_i) / alpha = grad L_cls(T_i; theta) + grad L_cls(T; theta'_i), theta~_i being theta after an SGD
step on T_i and then one on T; that is exactly what the first and third terms give the meta learner when the
inner gradient is a constant (first-order MAML) and w_test = 1 (tests/test_rfm.py checks the identity), so
one option covers both names. MLDG and Reptile as separate baselines are not offered.

Choices where the paper is silent: the feature extractor runs once per domain (batch-norm statistics per
domain, as the authors' code does); batch-norm running statistics keep PyTorch's momentum (the code's
momentum of 1 inside the fast-weight forward only affects the statistics used at test time).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.func import functional_call

from ..models import rfm_networks
from .base import Method, check_reduction


@dataclass(frozen=True)
class RFMConfig:
    inner_lr: float = 1e-3  # alpha
    lr: float = 1e-3  # beta (Adam)
    depth_weight: float = 10.0
    test_weight: float = 1.0
    meta_gradient: str = "second-order"  # or "first-order" (first-order MAML, = Reptile's here; Table 3)
    aggregated: bool = False
    meta: bool = True
    depth: bool = True
    per_class: int = 10  # live and spoof samples per domain in a batch (the authors' code)
    reduction: str = "mean"  # the authors' code: batch means (depth over the pixels too); "sum": sums


META_GRADIENTS = ("second-order", "first-order")


def draw_meta_split(domains: torch.Tensor, generator: torch.Generator, method: str) -> tuple[list[int], int]:
    """The domains present in a batch in a random order drawn from ``generator``: (meta-train, meta-test)."""
    present = torch.unique(domains).tolist()
    if len(present) < 2:
        raise ValueError(f"{method} needs at least two (pseudo-)domains in a batch, got {present}")
    order = [present[i] for i in torch.randperm(len(present), generator=generator).tolist()]
    return order[:-1], order[-1]


class RFM(Method):
    """The method: three networks, their optimiser, and one training step in :meth:`update`."""

    def __init__(self, feature: nn.Module, depth: nn.Module, meta: nn.Module, config: RFMConfig = RFMConfig(),
                 seed: int = 0):
        super().__init__()
        if config.meta_gradient not in META_GRADIENTS:
            raise ValueError(f"unknown meta_gradient {config.meta_gradient!r}; known: {list(META_GRADIENTS)}")
        check_reduction(config.reduction)
        self.feature, self.depth, self.meta, self.config = feature, depth, meta, config
        self.optimizer = torch.optim.Adam(self.parameters(), lr=config.lr, betas=(0.9, 0.999))
        self.seed = seed
        self.generator = torch.Generator().manual_seed(seed)  # draws the meta-test domain

    @classmethod
    def create(cls, config: RFMConfig, network: str, domains: list, seed: int) -> "RFM":
        return cls(*rfm_networks(network), config, seed=seed)

    def split_domains(self, domains: torch.Tensor) -> tuple[list[list[int]], int]:
        """Meta-train groups (each a list of domains) and the meta-test domain, drawn at random."""
        train, test = draw_meta_split(domains, self.generator, "RFM")
        return ([train] if self.config.aggregated else [[d] for d in train]), test

    def objective(self, batch: dict, groups: list[list[int]], test: int) -> dict:
        """The losses of one step for a given domain split (no optimiser step)."""
        cfg = self.config
        x, target, domains = batch["image"], batch["depth"], batch["domain"]
        y = batch["label"].to(x.dtype)
        params = dict(self.meta.named_parameters())
        second_order = cfg.meta_gradient == "second-order"
        zero = x.new_zeros(())
        cls_train, dep_train, adapted = zero, zero, []
        if not cfg.meta:  # ablation: plain joint training on every domain
            groups, test = [groups[0] + [d for g in groups[1:] for d in g] + [test]], None
        for group in groups:
            mask = torch.isin(domains, torch.tensor(group, device=domains.device))
            for_depth, for_meta = self.feature(x[mask])
            loss = self.classification(functional_call(self.meta, params, (for_meta,)), y[mask])
            cls_train = cls_train + loss
            if cfg.depth:
                dep_train = dep_train + self.depth_loss(self.depth(for_depth), target[mask])
            if cfg.meta:
                grads = torch.autograd.grad(loss, list(params.values()), create_graph=second_order,
                                            retain_graph=True)
                adapted.append({name: p - cfg.inner_lr * (g if second_order else g.detach())
                                for (name, p), g in zip(params.items(), grads)})
        cls_test, dep_test = zero, zero
        if cfg.meta:
            mask = domains == test
            for_depth, for_meta = self.feature(x[mask])
            for fast in adapted:
                cls_test = cls_test + self.classification(functional_call(self.meta, fast, (for_meta,)), y[mask])
            if cfg.depth:
                dep_test = self.depth_loss(self.depth(for_depth), target[mask])
        total = (cls_train + cfg.depth_weight * dep_train
                 + cfg.test_weight * (cls_test + cfg.depth_weight * dep_test))
        return {"total": total, "cls_train": cls_train, "dep_train": dep_train, "cls_test": cls_test,
                "dep_test": dep_test}

    def losses(self, batch: dict) -> dict:
        """The losses of one step, the meta-test domain drawn from the method's generator."""
        groups, test = self.split_domains(batch["domain"])
        return self.objective(batch, groups, test)
