"""One update of every method computed by hand on a tiny network and batch, against ``update()``/``objective()``:
the losses as the papers write them (their constants written here as numbers, with paper and equation), which
parameters move and by how much (Adam's and SGD's rules written out), inner steps and meta-gradients, the
held-out domain drawn each step. And scores stay float32 under bf16 autocast."""
from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn
from torch.nn import functional as F

from fas_train.methods import CCDD, CCDDConfig, CCDDVideo, CCDDVideoConfig, D2AM, D2AMConfig, PDL, PDLConfig, RFMConfig
from fas_train.methods.metapattern import MetaPattern, MetaPatternConfig, chunk_rows, select
from fas_train.models.d2am_nets import D2AMFeatureExtractor
from fas_train.models.rfm_nets import rfm_networks
from fas_train.losses import binary_enhancement_entropy, enhancement_entropy, gaussian_mmd
from fas_train.methods.d2am import input_style_statistics
from fas_train.pseudo_domains import agreement

from test_methods import make, toy_batch
from test_rfm import by_hand, gradient, tiny_rfm
from test_rfm import toy_batch as rfm_batch

ALPHA = 0.3


def params_of(module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def sgd_step(params, grads, buffers, lr, momentum, weight_decay=0.0):
    """torch.optim.SGD's rule written out: d = g + wd p; b = d (first step) or momentum b + d; p -= lr b.
    Parameters without a gradient (None) are left alone, as SGD does."""
    out = []
    for i, (p, g) in enumerate(zip(params, grads)):
        if g is None:
            out.append(p)
            continue
        d = g + weight_decay * p
        buffers[i] = d if buffers.get(i) is None else momentum * buffers[i] + d
        out.append(p - lr * buffers[i])
    return out


# -- scores at full precision --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["rfm", "erm", "d2am", "pdl", "ccdd", "ccdd-video", "metapattern"])
def test_scores_of_distinct_inputs_stay_distinct_under_bf16_autocast(name):
    method = make(name)
    last = {"ccdd": "classifier", "ccdd-video": "classifier", "metapattern": "hfn.classifier"}.get(name, "meta.classifier")
    layer = method.get_submodule(last)
    channels = 3 * len(type(method).channels(method.config))
    x = torch.rand(64, channels, 32, 32, generator=torch.Generator().manual_seed(0))
    x = x * torch.linspace(0.05, 1.0, 64).view(-1, 1, 1, 1)  # inputs of distinct brightness
    weight = layer.weight.detach().clone()
    with torch.no_grad():  # logits near 5, where bf16 has 1/32 steps, spread enough to tell inputs apart in fp32
        layer.bias.fill_(5.0)
        for factor in (100.0, 10.0, 1.0, 0.1):
            layer.weight.copy_(weight * factor)
            reference = method.predict(x)
            if reference.max() < 0.9999:
                break
    assert len(torch.unique(reference)) >= 60  # float32 throughout: the inputs give distinct scores
    with torch.autocast("cpu", dtype=torch.bfloat16):
        scores = method.predict(x)
    assert scores.dtype == torch.float32
    # bf16 logits here (all near 5) would give a handful of values; float32 ones keep the inputs apart (the
    # features before the last layer are still bf16, so an occasional tie can remain)
    assert len(torch.unique(scores)) >= 56, f"{len(torch.unique(scores))} distinct scores of 64 inputs"
    assert (scores != scores.bfloat16().float()).any()


# -- the papers' constants and Adam's rule -------------------------------------------------------------------
RFM_PAPER = {"inner_lr": 1e-3, "lr": 1e-3, "per_class": 10}  # rfm.txt "Training Details": alpha = beta = 1e-3,
#                                                              Adam, 20 per domain; depth x10 from the authors' code
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8  # Kingma & Ba's defaults; the papers name Adam without its constants


class AdamByHand:
    """Adam's rule (Kingma & Ba, Algorithm 1) written out: m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2,
    p -= lr (m / (1 - b1^t)) / (sqrt(v / (1 - b2^t)) + eps); a parameter without a gradient stays and its t
    does not advance."""

    def __init__(self, lr: float):
        self.lr, self.m, self.v, self.t = lr, {}, {}, {}

    def step(self, params, grads) -> list[torch.Tensor]:
        (b1, b2), out = ADAM_BETAS, []
        for i, (p, g) in enumerate(zip(params, grads)):
            if g is None:
                out.append(p)
                continue
            self.t[i] = self.t.get(i, 0) + 1
            self.m[i] = b1 * self.m.get(i, 0) + (1 - b1) * g
            self.v[i] = b2 * self.v.get(i, 0) + (1 - b2) * g * g
            m_hat, v_hat = self.m[i] / (1 - b1 ** self.t[i]), self.v[i] / (1 - b2 ** self.t[i])
            out.append(p - self.lr * m_hat / (v_hat.sqrt() + ADAM_EPS))
        return out


def check_adam_steps(method, batch, by_hand_total, lr: float, seed: int, steps: int = 3) -> None:
    """``steps`` calls of ``method.update`` against Adam's rule at rate ``lr`` on the gradient of the objective
    written out, each step's meta-test domain drawn as a permutation of the three domains from a copy of the
    method's generator seeded with ``seed`` (MMD draws follow from the same generator)."""
    method.generator.manual_seed(seed)
    reference = copy.deepcopy(method)
    generator = torch.Generator()
    generator.set_state(method.generator.get_state())
    adam, tests = AdamByHand(lr), []
    for _ in range(steps):
        order = torch.randperm(3, generator=generator).tolist()
        tests.append(order[-1])
        reference.train()
        params = list(reference.parameters())
        grads = torch.autograd.grad(by_hand_total(reference, order[:-1], order[-1], generator), params,
                                    allow_unused=True)
        with torch.no_grad():
            for p, new in zip(params, adam.step([p.detach() for p in params], grads)):
                p.copy_(new)
        method.update(batch)
    for (name, got), want in zip(method.named_parameters(), reference.parameters()):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12), name
    assert len(set(tests)) > 1  # the steps exercised more than one meta-test domain


def test_rfm_and_d2am_defaults_are_the_published_constants():
    rfm, d2am = RFMConfig(), D2AMConfig()
    assert {k: getattr(rfm, k) for k in RFM_PAPER} == RFM_PAPER and rfm.depth_weight == 10.0
    assert rfm.reduction == "mean"  # the authors' code takes batch means
    assert {k: getattr(d2am, k) for k in D2AM_PAPER} == D2AM_PAPER
    assert {k: getattr(PDLConfig(), k) for k in PDL_PAPER} == PDL_PAPER
    for method in (tiny_rfm(inner_lr=1e-3), tiny_d2am(inner_lr=1e-3)):
        group = method.optimizer.param_groups[0]
        assert type(method.optimizer) is torch.optim.Adam
        assert (group["lr"], group["betas"], group["eps"], group["weight_decay"]) == (
            RFM_PAPER["lr"] if isinstance(method.config, RFMConfig) else D2AM_PAPER["lr"], ADAM_BETAS, ADAM_EPS, 0)


def test_rfm_steps_are_adam_on_the_unrolled_objective():
    method, batch = tiny_rfm(lr=RFM_PAPER["lr"]), rfm_batch()
    check_adam_steps(method, batch, lambda ref, train, test, g: by_hand(ref, batch, train, test)[0], RFM_PAPER["lr"],
                     seed=3)


def test_d2am_steps_are_adam_on_eqs_11_to_13():
    method, batch = tiny_d2am(), d2am_batch()
    check_adam_steps(method, batch, lambda ref, train, test, g: d2am_by_hand(ref, batch, train, test, g),
                     D2AM_PAPER["lr"], seed=3)


# -- D²AM ----------------------------------------------------------------------------------------------------
class TinyMeta(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.hidden, self.out = nn.Linear(channels, 5), nn.Linear(5, 1)

    def forward(self, x, with_features: bool = False):
        h = torch.tanh(self.hidden(x.mean((2, 3))))
        logit = self.out(h).squeeze(1)
        return (logit, h) if with_features else logit


def tiny_d2am(**overrides) -> D2AM:
    torch.manual_seed(0)
    feature = D2AMFeatureExtractor(in_channels=2, width=4, block=(4, 4, 8), reduction=4)
    depth = nn.Conv2d(24, 1, 1)
    config = D2AMConfig(**{"inner_lr": ALPHA, "first_epoch": "style", **overrides})
    return D2AM(feature, depth, TinyMeta(8), config).double()


# D²AM's published constants (d2am.md, "Implementation Details"): alpha 1e-3, beta 1e-4 with Adam, lambda_p 0.1,
# lambda_m 0.05, K 3; Eqs. 12-13 add L_Dep unweighted; Adam's own constants (Kingma & Ba): betas 0.9, 0.999, eps 1e-8
D2AM_PAPER = {"inner_lr": 1e-3, "lr": 1e-4, "entropy_weight": 0.1, "mmd_weight": 0.05, "domains": 3,
              "depth_weight": 1.0, "reduction": "sum"}
LAMBDA_P, LAMBDA_M = 0.1, 0.05


def d2am_by_hand(method: D2AM, batch, train, test, generator: torch.Generator, entropy=enhancement_entropy):
    """Eqs. 7-13 written out with the paper's lambdas as numbers and its sums over each batch (Eq. 8: BCE
    summed over B_i; Eq. 10: ||D(E(x)) - I||^2 summed over B_i, i.e. over every pixel; L_P of Eq. 7 summed over
    B_i likewise); the meta learner's forward by hand, MMD against N(0, I) draws in the method's order."""
    W1, b1, W2, b2 = method.meta.hidden.weight, method.meta.hidden.bias, method.meta.out.weight, method.meta.out.bias

    def meta(f, w1, c1, w2, c2):
        h = torch.tanh(f.mean((2, 3)) @ w1.T + c1)
        return (h @ w2.T + c2).squeeze(1), h

    def mmd(h):
        return gaussian_mmd(h.float(), torch.randn(h.shape, generator=generator).to(h.device))

    def bce_sum(logit, y):
        return -(y * F.logsigmoid(logit) + (1 - y) * F.logsigmoid(-logit)).sum()

    def depth_sum(f, target):
        return (method.depth(f) - target).square().sum()

    x, y, d, target = batch["image"], batch["label"].double(), batch["domain"], batch["depth"]
    total, fast_weights = 0, []
    for dom in train:
        for_depth, for_meta, parts = method.feature(x[d == dom])
        logit, h = meta(for_meta, W1, b1, W2, b2)
        inner = bce_sum(logit, y[d == dom]) + LAMBDA_M * mmd(h)
        grads = torch.autograd.grad(inner, (W1, b1, W2, b2), create_graph=True)
        fast_weights.append([p - method.config.inner_lr * g for p, g in zip((W1, b1, W2, b2), grads)])
        total = total + inner + depth_sum(for_depth, target[d == dom])
        for drlm, (f_minus, _) in zip(method.feature.drlm, parts):  # L_p through a constant probe; W_p's own fit
            pooled = f_minus.mean((2, 3))
            p_logit = (pooled @ drlm.probe.weight.detach().T + drlm.probe.bias.detach()).squeeze(1)
            total = total + LAMBDA_P * entropy(p_logit).sum()
            total = total + F.binary_cross_entropy_with_logits(drlm.probe(pooled.detach()).squeeze(1), y[d == dom])
    for_depth, for_meta, _ = method.feature(x[d == test])
    total = total + depth_sum(for_depth, target[d == test])
    for fast in fast_weights:
        logit, h = meta(for_meta, *fast)
        total = total + bce_sum(logit, y[d == test]) + LAMBDA_M * mmd(h)
    return total


def d2am_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor([1, 1, 0, 0] * 3)
    image = torch.rand(12, 2, 16, 16, generator=g, dtype=torch.float64) + 0.5 * labels.view(-1, 1, 1, 1)
    depth = torch.rand(12, 1, 2, 2, generator=g, dtype=torch.float64) * labels.view(-1, 1, 1, 1)
    return {"image": image, "label": labels, "domain": torch.arange(3).repeat_interleave(4), "depth": depth}


@pytest.mark.parametrize("entropy", ["paper", "binary"])
def test_d2am_objective_and_meta_gradient_equal_the_equations(entropy):
    method, batch = tiny_d2am(entropy=entropy), d2am_batch()
    method.train()
    generator = torch.Generator().manual_seed(0)
    generator.set_state(method.generator.get_state())
    ours = method.objective(batch, [2, 0], 1)
    loss = {"paper": enhancement_entropy, "binary": binary_enhancement_entropy}[entropy]
    reference = d2am_by_hand(method, batch, [2, 0], 1, generator, loss)
    assert torch.allclose(ours["total"], reference, rtol=1e-7)
    g_ours, g_ref = gradient(ours["total"], method), gradient(reference, method)
    assert torch.allclose(g_ours, g_ref, rtol=1e-6, atol=1e-9)
    # the probe W_p learns only from its own BCE, never from L_p
    probe = [p for n, p in method.named_parameters() if ".probe." in n]
    entropy_only = torch.autograd.grad(method.config.entropy_weight * ours["entropy"], probe, allow_unused=True,
                                       retain_graph=True)
    assert all(g is None or torch.count_nonzero(g) == 0 for g in entropy_only)


# -- PDL-FAS -------------------------------------------------------------------------------------------------
# pdl-fas.txt, "Implementation details": alpha = beta = 1e-3 with Adam; Eqs. 4-9: unweighted sums over each batch
PDL_PAPER = {"inner_lr": 1e-3, "lr": 1e-3, "depth_weight": 1.0, "reduction": "sum", "domains": 3}


def test_pdl_objective_is_eqs_4_to_9_sums_on_pseudo_domains_and_means_are_the_named_alternative():
    method, batch = tiny_rfm(), rfm_batch()
    pdl = PDL(copy.deepcopy(method.feature), copy.deepcopy(method.depth), copy.deepcopy(method.meta),
              PDLConfig(inner_lr=ALPHA)).double()
    ours = pdl.objective(batch, [[0], [2]], 1)
    reference, *_ = by_hand(pdl, batch, [0, 2], 1, depth_weight=1, sums=True)
    assert torch.allclose(ours["total"], reference, rtol=1e-12)
    assert torch.allclose(gradient(ours["total"], pdl), gradient(reference, pdl), rtol=1e-9, atol=1e-12)
    # RFM's code, named: means and depth x10
    rfm_like = PDL(pdl.feature, pdl.depth, pdl.meta, PDLConfig(inner_lr=ALPHA, reduction="mean", depth_weight=10))
    means, *_ = by_hand(pdl, batch, [0, 2], 1, depth_weight=10)
    assert torch.allclose(rfm_like.objective(batch, [[0], [2]], 1)["total"], means, rtol=1e-12)
    assert not torch.allclose(means, reference, rtol=1e-3)  # 4 samples and 36 pixels per domain: far apart


def test_pdl_domain_features_are_mean_and_variance_of_the_named_layers():
    torch.manual_seed(0)
    method = PDL(*rfm_networks("small"), PDLConfig()).eval()
    x = torch.rand(4, 6, 32, 32)
    with torch.no_grad():
        features = method.domain_features({"image": x}, epoch=1)
        f = method.feature
        h = f.blocks[0](f.stem(x))
        fifth = f.blocks[1][0](h)  # the 5th convolution: stem, 3 of block 1, then the first of block 2
        ninth = f.blocks[2][1](f.blocks[2][0](f.blocks[1][3](f.blocks[1][2](f.blocks[1][1](fifth)))))
        last = method.depth(f(x)[0])
    expected = torch.cat([torch.cat([o.mean((2, 3)), o.var((2, 3), unbiased=False)], 1) for o in (fifth, ninth, last)], 1)
    assert torch.allclose(features, expected, atol=1e-4)


# -- CCDD ----------------------------------------------------------------------------------------------------
def ccdd_batch(n_per=2, size=32, seed=0):
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor(([1] * n_per + [0] * n_per) * 3)
    domains = torch.arange(3).repeat_interleave(2 * n_per)
    return {"image": torch.rand(len(labels), 3, size, size, generator=g, dtype=torch.float64), "label": labels,
            "domain": domains}


def ccdd_energy(method, features, labels, domains, discriminator, weight, reduce=torch.sum):
    """Eq. 1 (or 2) without the reversal: (L_c, L_l + L_s) as sums over the examples."""
    live = labels == 1
    shared = discriminator.common(features)
    domain = (reduce(F.cross_entropy(discriminator.live_head(shared[live]), domains[live], reduction="none"))
              + reduce(F.cross_entropy(discriminator.spoof_head(shared[~live]), domains[~live], reduction="none")))
    return domain


# ccdd.txt "Implementation details": SGD lr 3e-4, momentum 0.9, weight decay 1e-5, constant GRL factor 0.2,
# lambda_IB = lambda_VB = 1, 16 images and 2 sequences of 8 frames per domain, LSTM hidden 256
CCDD_PAPER = {"lr": 3e-4, "momentum": 0.9, "weight_decay": 1e-5, "grl_factor": 0.2, "image_weight": 1.0,
              "video_weight": 1.0, "clip_length": 8, "lstm_hidden": 256, "reduction": "sum"}
GRL, MOMENTUM, WEIGHT_DECAY = 0.2, 0.9, 1e-5


def test_ccdd_and_meta_pattern_defaults_are_the_published_constants():
    config = CCDDVideoConfig()
    assert {k: getattr(config, k) for k in CCDD_PAPER} == CCDD_PAPER
    assert 2 * config.per_class == 16 and 2 * config.clips_per_class == 2  # per domain
    method = CCDD.create(CCDDConfig(pretrained="none"), "small", [0, 1, 2], seed=0)
    group = method.optimizer.param_groups[0]
    assert type(method.optimizer) is torch.optim.SGD and not group["nesterov"] and group["dampening"] == 0
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (3e-4, MOMENTUM, WEIGHT_DECAY)
    # metapattern.txt: K = 4 inner steps, SGD momentum 0.9; the released code: 4 per (domain, class)
    mp = MetaPatternConfig()
    assert (mp.inner_steps, mp.momentum, mp.per_class, mp.variant, mp.stream_fusion) == (4, 0.9, 4, "released", "sum")


def ccdd_step_by_hand(reference, loss_cls, loss_domain, encoder_side, head_side, weight, buffers):
    """GRL: the encoder side gets grad(L_c) - 0.2 weight grad(L_dom); the discriminator + weight grad(L_dom);
    then SGD with the paper's momentum 0.9 and weight decay 1e-5 at the test's rate."""
    cfg = reference.config
    names = [n for n, _ in reference.named_parameters()]
    params = list(reference.parameters())
    g_cls = torch.autograd.grad(loss_cls, params, allow_unused=True, retain_graph=True)
    g_dom = torch.autograd.grad(loss_domain, params, allow_unused=True)
    grads = []
    for n, p, a, b in zip(names, params, g_cls, g_dom):
        if any(n.startswith(s) for s in encoder_side) and (a is not None or b is not None):
            zero = torch.zeros_like(p)
            grads.append((zero if a is None else a) - GRL * weight * (zero if b is None else b))
        elif any(n.startswith(s) for s in head_side):
            grads.append(None if b is None else weight * b)
        else:
            grads.append(a)
    return sgd_step([p.detach() for p in params], grads, buffers, cfg.lr, MOMENTUM, WEIGHT_DECAY)


def test_ccdd_image_step_follows_eq1_with_sums():
    config = CCDDConfig(pretrained="none", dropout=0.0, lr=0.05)
    torch.manual_seed(0)
    method = CCDD.create(config, "small", [0, 1, 2], seed=0).double()
    reference = copy.deepcopy(method)
    batch = ccdd_batch()
    reference.train()
    features = reference.encoder(batch["image"])
    cls = F.binary_cross_entropy_with_logits(reference.classifier(features).squeeze(1), batch["label"].double(),
                                             reduction="sum")
    domain = ccdd_energy(reference, features, batch["label"], batch["domain"], reference.discriminator, 1.0)
    expected = ccdd_step_by_hand(reference, cls, domain, ("encoder.",), ("discriminator.",), 1.0, {})
    losses = method.update(batch)
    assert losses["total"] == pytest.approx(float((cls + domain).detach()), rel=1e-6)
    assert losses["cls"] == pytest.approx(float(cls), rel=1e-6)
    for (name, got), want in zip(method.named_parameters(), expected):
        assert torch.allclose(got, want, rtol=1e-7, atol=1e-10), name
    means = CCDD.create(CCDDConfig(pretrained="none", dropout=0.0, reduction="mean"), "small", [0, 1, 2], 0).double()
    means.load_state_dict(reference.state_dict())
    means.train()
    features = means.encoder(batch["image"])
    live = batch["label"] == 1
    by_means = (F.binary_cross_entropy_with_logits(means.classifier(features).squeeze(1), batch["label"].double())
                + ccdd_energy(means, features, batch["label"], batch["domain"], means.discriminator, 1.0, torch.mean))
    assert float(means.image_losses(batch)["total"]) == pytest.approx(float(by_means), rel=1e-9)
    assert live.sum() == 6  # sums weigh the 12 class and 6 + 6 domain terms alike; means double the domain's


def test_ccdd_video_step_follows_eq2_after_the_image_step():
    config = CCDDVideoConfig(pretrained="none", dropout=0.0, lr=0.05, clip_length=2, lstm_hidden=8)
    torch.manual_seed(0)
    method = CCDDVideo.create(config, "small", [0, 1, 2], seed=0).double()
    reference = copy.deepcopy(method)
    batch = ccdd_batch()
    clip = ccdd_batch(n_per=1, seed=1)
    batch["clip"] = {**clip, "image": torch.stack([clip["image"], clip["image"].flip(-1)], 1)}
    reference.train()
    buffers = {}
    features = reference.encoder(batch["image"])
    cls = F.binary_cross_entropy_with_logits(reference.classifier(features).squeeze(1), batch["label"].double(),
                                             reduction="sum")
    domain = ccdd_energy(reference, features, batch["label"], batch["domain"], reference.discriminator, 1.0)
    after_image = ccdd_step_by_hand(reference, cls, domain, ("encoder.",), ("discriminator.",), 1.0, buffers)
    with torch.no_grad():
        for p, new in zip(reference.parameters(), after_image):
            p.copy_(new)
    frames = batch["clip"]["image"]
    states = reference.encoder(frames.flatten(0, 1)).view(frames.shape[0], 2, -1)
    logits, state = reference.video(states)
    v_cls = F.binary_cross_entropy_with_logits(logits, clip["label"].double(), reduction="sum")
    v_domain = ccdd_energy(reference, state, clip["label"], clip["domain"], reference.video_discriminator, 1.0)
    expected = ccdd_step_by_hand(reference, v_cls, v_domain, ("encoder.", "video."), ("video_discriminator.",), 1.0,
                                 buffers)
    losses = method.update(batch)
    assert losses["video_cls"] == pytest.approx(float(v_cls), rel=1e-6)
    assert set(losses) == {"image_total", "cls", "domain", "video_total", "video_cls", "video_domain", "total"}
    assert losses["total"] == pytest.approx(losses["image_total"] + losses["video_total"])
    assert losses["video_total"] == pytest.approx(float(v_cls + v_domain), rel=1e-6)
    assert method.scores_videos and method.clip_length == 2 and not CCDD.scores_videos
    image = CCDDVideo.create(CCDDVideoConfig(pretrained="none", score="image"), "small", [0, 1, 2], seed=0)
    assert not image.scores_videos and image.class_balanced
    assert not CCDDVideo.create(CCDDVideoConfig(pretrained="none", balanced=False), "small", [0, 1], 0).class_balanced
    with pytest.raises(ValueError, match="unknown score 'lstm'"):
        CCDDVideo.create(CCDDVideoConfig(pretrained="none", score="lstm"), "small", [0, 1, 2], seed=0)
    for (name, got), want in zip(method.named_parameters(), expected):
        assert torch.allclose(got, want, rtol=1e-7, atol=1e-10), name


# -- Meta Pattern --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("variant", ["released", "paper"])
def test_meta_pattern_update_is_algorithm_1(variant):
    config = MetaPatternConfig(variant=variant, inner_steps=2, pretrained="none")
    torch.manual_seed(0)
    method = MetaPattern(config, "small", seed=3).double()
    has_final_norm = isinstance(method.pattern.net[-2], nn.BatchNorm2d)
    assert has_final_norm == (variant == "released")
    reference = copy.deepcopy(method)
    batch = toy_batch(3, per_class=2 * method.batch_chunks, size=32)
    batch["image"] = batch["image"].double()
    g = torch.Generator()
    g.set_state(method.generator.get_state())
    held = [0, 1, 2][int(torch.randint(3, (1,), generator=g))]
    phi_lr, theta_lr = {"released": (4e-3, 1e-3), "paper": (1e-3, 1e-3)}[variant]
    scale = {"released": 0.5, "paper": 1.0}[variant]
    reference.train()

    def loss(part, phi_grad: bool):
        image, y = part["image"], part["label"]
        with torch.set_grad_enabled(phi_grad):
            pattern = reference.pattern(image)
        logits, pixel_map = reference.hfn(image, pattern)
        target = y.double()[:, None, None, None].expand_as(pixel_map)
        return F.cross_entropy(logits, y) + F.mse_loss(pixel_map, target)

    phi, buffers = list(reference.pattern.parameters()), {}
    for k in range(2):  # K SGD-momentum steps on Phi alone, on chunk k of the held-out domain
        rows = chunk_rows(batch, k, 3)
        part = select(batch, rows[batch["domain"][rows] == held])
        grads = torch.autograd.grad(loss(part, True), phi)
        with torch.no_grad():
            for p, new in zip(phi, sgd_step([p.detach() for p in phi], grads, buffers, phi_lr, 0.9)):
                p.copy_(new)
    rows = chunk_rows(batch, 2, 3)
    part = select(batch, rows[batch["domain"][rows] != held])
    theta = list(reference.hfn.parameters())
    grads = torch.autograd.grad(scale * loss(part, False), theta)  # Theta's step with the adapted Phi frozen
    expected_theta = sgd_step([p.detach() for p in theta], grads, {}, theta_lr, 0.9)
    method.update(batch)
    for (name, got), want in zip(method.pattern.named_parameters(), phi):
        assert torch.allclose(got, want, rtol=1e-7, atol=1e-10), name
    for (name, got), want in zip(method.hfn.named_parameters(), expected_theta):
        assert torch.allclose(got, want, rtol=1e-7, atol=1e-10), name


# -- the meta-test domain -------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["rfm", "pdl", "d2am", "metapattern"])
def test_the_held_out_domain_is_drawn_each_step_and_every_domain_gets_its_turn(name):
    """RFM, PDL-FAS and D²AM draw their meta-test domain, Meta Pattern its D_phi, at random each iteration
    (rfm.txt Algorithm 1 "randomly select", d2am.md Algorithm 1 line 10, metapattern.txt Algorithm 1)."""
    method = make(name)
    domains = torch.arange(3).repeat_interleave(4)
    batch = {"domain": domains, "label": torch.tensor([1, 1, 0, 0] * 3)}
    held, splits = [], set()

    def record(batch, train, test):
        trained = sorted(d for group in train for d in (group if isinstance(group, list) else [group]))
        splits.add((tuple(trained), test))
        held.append(test)

    def draws(seed: int) -> list[int]:
        method.generator.manual_seed(seed)
        held.clear()
        for _ in range(60):
            if name == "metapattern":
                test, others = method.split_domains(domains)
                record(batch, others, test)
            else:
                method.objective = record  # the step's losses for the split it drew
                method.losses(batch)
        return list(held)

    first = draws(0)
    counts = np.bincount(first, minlength=3)
    assert (counts >= 10).all(), counts  # each of 3 domains about 20 times in 60 draws
    assert all(train + (test,) != () and sorted(train + (test,)) == [0, 1, 2] for train, test in splits)
    assert first == draws(0) and first != draws(1)  # drawn from the method's own (checkpointed) generator


def test_d2am_means_are_the_sums_over_batch_and_pixels():
    batch = d2am_batch()
    sums, means = tiny_d2am(), tiny_d2am(reduction="mean")
    means.load_state_dict(sums.state_dict())
    a, b = sums.objective(batch, [2, 0], 1), means.objective(batch, [2, 0], 1)
    per_domain, pixels = 4, batch["depth"][0].numel()  # 4 samples per domain, 2 x 2 maps
    assert float(a["cls_train"]) == pytest.approx(per_domain * float(b["cls_train"]), rel=1e-9)
    assert float(a["dep_train"]) == pytest.approx(per_domain * pixels * float(b["dep_train"]), rel=1e-9)
    assert float(a["entropy"]) == pytest.approx(per_domain * float(b["entropy"]), rel=1e-9)
    assert float(a["probe"]) == pytest.approx(float(b["probe"]), rel=1e-9)  # the probe's fit is a mean in both
    with pytest.raises(ValueError, match="reduction"):
        tiny_d2am(reduction="total")


@pytest.mark.parametrize("epoch", [0, 1])
def test_d2am_clusters_the_raw_domain_features_unless_zscore_is_asked(epoch):
    """d2am.md: K-means on df(x) (the first epoch on all samples, later per class); a wide noise column then
    outweighs a narrow informative one, which standardising the columns first brings back."""
    rng = np.random.default_rng(0)
    groups, labels = np.repeat([0, 1], 40), np.tile([1, 0], 40)
    raw, zscore = tiny_d2am(domains=2, select=False), tiny_d2am(domains=2, select=False, cluster_features="zscore")
    widths = [d.probe.in_features for d in raw.feature.drlm]
    features = np.zeros((80, 3 * sum(widths)))
    features[:, 0] = rng.uniform(0, 100, 80)  # the first DRLM's first channel mean: wide, no structure
    features[:, 1] = groups + 0.01 * rng.standard_normal(80)  # its second channel mean: two tight groups
    previous = None if epoch == 0 else groups
    assert agreement(zscore.assign_domains(features, labels, previous, epoch), groups) == 1.0
    assert agreement(raw.assign_domains(features, labels, previous, epoch), groups) < 0.2
    with pytest.raises(ValueError, match="cluster_features"):
        tiny_d2am(cluster_features="pca")


# -- ERM -----------------------------------------------------------------------------------------------------
def test_erm_is_pooled_bce_plus_the_weighted_depth_mse():
    """The baseline: BCE over every source domain pooled (a batch mean) + depth_weight x the depth MSE (0 by
    default); Adam at 1e-3, as RFM."""
    from fas_train.methods import ERM, ERMConfig
    from test_rfm import TinyFeature, TinyMeta as RFMTinyMeta
    batch = rfm_batch()
    for weight in (0.0, 10.0):
        torch.manual_seed(0)
        method = ERM(TinyFeature(), nn.Conv2d(3, 1, 1), RFMTinyMeta(), ERMConfig(depth_weight=weight)).double()
        h, _ = method.feature(batch["image"])
        cls = F.binary_cross_entropy_with_logits(method.meta(h), batch["label"].double())
        dep = F.mse_loss(method.depth(h), batch["depth"])
        got = method.losses(batch)
        assert float(got["cls"]) == pytest.approx(float(cls), rel=1e-12)
        assert float(got["dep"]) == pytest.approx(float(dep) if weight else 0.0, rel=1e-12)
        assert float(got["total"]) == pytest.approx(float(cls + weight * dep), rel=1e-12)
    assert ERMConfig().depth_weight == 0.0 and ERMConfig().lr == 1e-3 and ERMConfig().per_class == 10
    assert method.optimizer.param_groups[0]["lr"] == 1e-3 and type(method.optimizer) is torch.optim.Adam


def test_meta_pattern_end_to_end_and_colour_lbp_are_one_sgd_step_on_the_whole_batch():
    """The ablations without Algorithm 1: ``end-to-end`` trains Phi and Theta jointly (SGD 1e-3, momentum 0.9)
    on the paper's loss; ``second_stream=lbp`` (HFN + ColorLBP) feeds the stored map, channels 3-5, to the HFN
    and has no Phi."""
    batch = toy_batch(6, per_class=2, size=32)
    batch["image"] = batch["image"].double()
    for config in (MetaPatternConfig(variant="end-to-end", pretrained="none"),
                   MetaPatternConfig(second_stream="lbp", pretrained="none")):
        torch.manual_seed(0)
        method = MetaPattern(config, "small", seed=0).double()
        assert method.batch_chunks == 1 and set(method.optimizers()) == {"theta"}
        reference = copy.deepcopy(method)
        reference.train()
        image, y = batch["image"], batch["label"]
        second = image[:, 3:6] if reference.pattern is None else reference.pattern(image[:, :3])
        logits, pixel_map = reference.hfn(image[:, :3], second)
        loss = F.cross_entropy(logits, y) + F.mse_loss(pixel_map, y.double()[:, None, None, None].expand_as(pixel_map))
        params = list(reference.parameters())
        grads = torch.autograd.grad(loss, params, allow_unused=True)
        expected = sgd_step([p.detach() for p in params], grads, {}, 1e-3, 0.9)
        assert float(method.update(batch)["total"]) == pytest.approx(float(loss), rel=1e-6)  # logged as float32
        moved = 0
        for (name, got), want, before in zip(method.named_parameters(), expected, params):
            assert torch.allclose(got, want, rtol=1e-7, atol=1e-10), name
            moved += name.startswith("pattern.") and not torch.equal(got, before.detach())
        assert (moved > 0) == (config.second_stream == "mp")  # end-to-end moves Phi with Theta
    assert MetaPattern.channels(MetaPatternConfig(second_stream="lbp")) == ("rgb", "lbp")
    assert MetaPattern.channels(MetaPatternConfig()) == ("rgb",)


def test_d2am_clusters_jointly_first_and_per_class_later():
    """d2am.md: the first epoch divides all samples into K domains; later epochs cluster the live and the spoof
    samples apart. With the class the widest column, joint K-means splits by class, per-class K-means by the
    other column."""
    rng = np.random.default_rng(1)
    groups, labels = np.repeat([0, 1], 40), np.tile([1, 0], 40)
    method = tiny_d2am(domains=2, select=False)
    widths = [d.probe.in_features for d in method.feature.drlm]
    features = np.zeros((80, 3 * sum(widths)))
    features[:, 0] = 100 * labels + rng.uniform(0, 1, 80)
    features[:, 1] = 10 * groups + 0.01 * rng.standard_normal(80)
    first = method.assign_domains(features, labels, None, epoch=0)
    assert agreement(first, labels) == 1.0 and agreement(first, groups) < 0.05
    later = method.assign_domains(features, labels, groups, epoch=1)
    assert np.array_equal(later, groups)  # matched to the previous labels, per class


def test_two_source_domains_are_enough_and_one_is_refused():
    """The limited-source protocols (M&I->C, M&I->O) train on two domains: one meta-train, one meta-test."""
    from fas_train.methods.rfm import draw_meta_split
    generator = torch.Generator().manual_seed(0)
    two = torch.tensor([3, 3, 5, 5])
    splits = {(tuple(train), test) for train, test in (draw_meta_split(two, generator, "RFM") for _ in range(20))}
    assert splits == {((3,), 5), ((5,), 3)}
    meta_pattern = make("metapattern")
    assert {(held, tuple(others)) for held, others in (meta_pattern.split_domains(two) for _ in range(20))} == \
        {(3, (5,)), (5, (3,))}
    for refuse in (lambda: draw_meta_split(torch.tensor([4, 4]), generator, "RFM"),
                   lambda: meta_pattern.split_domains(torch.tensor([4, 4]))):
        with pytest.raises(ValueError, match=r"at least two .*domains in a batch, got \[4\]"):
            refuse()


def test_ccdd_class_conditional_heads_on_a_batch_of_unequal_classes():
    """Eq. 1's L_l over the live rows with the live head and L_s over the spoof rows with the spoof head, when a
    domain's draw is not class-balanced (``balanced=false``): 3 live and 1 spoof per domain, or no spoof."""
    torch.manual_seed(0)
    method = CCDD.create(CCDDConfig(pretrained="none", dropout=0.0), "small", [0, 1, 2], seed=0).double()
    method.train()
    g = torch.Generator().manual_seed(2)
    labels, domains = torch.tensor([1, 1, 1, 0] * 3), torch.arange(3).repeat_interleave(4)
    features = torch.randn(12, method.encoder.out_features, generator=g, dtype=torch.float64)
    got = method.adversarial(method.discriminator, features, labels, domains)
    assert float(got) == pytest.approx(float(ccdd_energy(method, features, labels, domains, method.discriminator, 1.0)),
                                       rel=1e-12)
    live_only = method.adversarial(method.discriminator, features[labels == 1], labels[labels == 1],
                                   domains[labels == 1])
    shared = method.discriminator.common(features[labels == 1])
    expected = F.cross_entropy(method.discriminator.live_head(shared), domains[labels == 1], reduction="sum")
    assert float(live_only) == pytest.approx(float(expected), rel=1e-12)
    means = CCDD.create(CCDDConfig(pretrained="none", dropout=0.0, reduction="mean"), "small", [0, 1, 2], 0).double()
    means.load_state_dict(method.state_dict())
    means.train()
    assert torch.isfinite(means.adversarial(means.discriminator, features[labels == 1], labels[labels == 1],
                                            domains[labels == 1]))  # no spoof row: no NaN from an empty mean
    with pytest.raises(ValueError, match=r"domains \[7\] are not all sources \[0, 1, 2\]"):
        method.domain_index(torch.tensor([7]))


def test_first_order_options_drop_the_second_order_term_in_the_method_itself():
    method, batch = tiny_rfm(meta_gradient="first-order"), rfm_batch()
    ours = method.objective(batch, [[2], [0]], 1)
    reference, *_ = by_hand(method, batch, [2, 0], 1, second_order=False)
    assert torch.allclose(gradient(ours["total"], method), gradient(reference, method), rtol=1e-9, atol=1e-12)
    second = by_hand(method, batch, [2, 0], 1)[0]
    assert not torch.allclose(gradient(second, method), gradient(reference, method), rtol=1e-6)
    batch = d2am_batch()
    grads = {}
    for order in ("second-order", "first-order"):
        d2am = tiny_d2am(meta_gradient=order)
        d2am.generator.manual_seed(0)
        grads[order] = gradient(d2am.objective(batch, [2, 0], 1)["total"], d2am)
    assert not torch.allclose(grads["second-order"], grads["first-order"], rtol=1e-6)
    with pytest.raises(ValueError, match=r"unknown meta_gradient 'zeroth'; known: \['second-order', 'first-order'\]"):
        tiny_rfm(meta_gradient="zeroth")
    with pytest.raises(ValueError, match=r"unknown meta_gradient 'zeroth'; known: \['first-order', 'second-order'\]"):
        tiny_d2am(meta_gradient="zeroth")


def test_method_construction_keeps_config_seed_generator_and_flags():
    for name in ("rfm", "erm", "pdl", "d2am", "ccdd", "ccdd-video", "metapattern"):
        method = make(name, **({"per_class": 3} if name != "erm" else {"lr": 5e-4}))
        assert (method.config.per_class == 3) if name != "erm" else (method.config.lr == 5e-4)
        assert isinstance(method.generator, torch.Generator)
    assert make("d2am").pseudo_domains is True and make("d2am", pseudo=False).pseudo_domains is False
    assert make("pdl").pseudo_domains is True and make("rfm").pseudo_domains is False
    mp = make("metapattern")
    assert mp.optimizers() == {"theta": mp.theta_optimizer, "phi": mp.phi_optimizer}
    d2am = tiny_d2am()
    x = d2am_batch()["image"]
    assert torch.equal(d2am.domain_features({"image": x}, epoch=0), input_style_statistics(x))
    assert d2am.domain_source(0) == "input style statistics (first_epoch=style, asked for)"
    assert d2am.domain_source(1) == "model: DRLM domain features"


def test_pdl_assigns_pseudo_domains_by_pca_and_kmeans_seeded_per_epoch(pca_widths):
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1, 2], 20)
    features = rng.standard_normal((60, 12)) * 0.05 + groups[:, None]
    pdl = make("pdl")
    first = pdl.assign_domains(features, np.tile([1, 0], 30), None, epoch=0)
    assert agreement(first, groups) == 1.0
    # epoch 1 keeps the previous epoch's names, whatever names K-means gives its groups this time
    renamed = (first + 1) % 3
    assert np.array_equal(pdl.assign_domains(features, np.tile([1, 0], 30), renamed, epoch=1), renamed)
    gmm = make("pdl", clustering="gmm", pca_dims=4)
    assert agreement(gmm.assign_domains(features, np.tile([1, 0], 30), None, epoch=0), groups) == 1.0
    # the config's PCA width (256 by default), capped by the 12 features
    assert [asked for asked, _ in pca_widths] == [12, 12, 4]
    with pytest.raises(ValueError, match="unknown clustering 'dbscan'"):
        make("pdl", clustering="dbscan").assign_domains(features, np.tile([1, 0], 30), None, epoch=0)
