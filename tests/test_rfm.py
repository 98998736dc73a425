"""RFM's meta-gradient against the objective written out by hand, the first-order gap, the ablations, and
the released networks' shapes."""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from fas_train.methods.rfm import RFM, RFMConfig
from fas_train.models import create_model

ALPHA = 0.3  # large, so that the second-order term is far above round-off


class TinyFeature(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1)

    def forward(self, x):
        h = torch.tanh(self.conv(x))
        return h, h


class TinyMeta(nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden, self.out = nn.Linear(3, 4), nn.Linear(4, 1)

    def forward(self, h):
        return self.out(torch.tanh(self.hidden(h.mean(dim=(2, 3))))).squeeze(1)


def tiny_rfm(**overrides):
    torch.manual_seed(0)
    config = RFMConfig(**{"inner_lr": ALPHA, **overrides})
    return RFM(TinyFeature(), nn.Conv2d(3, 1, 1), TinyMeta(), config).double()


def toy_batch(seed=1):
    g = torch.Generator().manual_seed(seed)
    domains = torch.arange(3).repeat_interleave(4)
    labels = torch.tensor([1, 1, 0, 0] * 3)
    image = torch.rand(12, 2, 6, 6, generator=g, dtype=torch.float64) + 0.5 * labels.view(-1, 1, 1, 1)
    depth = torch.rand(12, 1, 6, 6, generator=g, dtype=torch.float64) * labels.view(-1, 1, 1, 1)
    return {"image": image, "label": labels, "domain": domains, "depth": depth}


def by_hand(method, batch, train_domains, test_domain, second_order=True, depth_weight=10, sums=False):
    """RFM's objective written out: the meta learner's forward by hand, the inner step unrolled; batch means
    (RFM's code: BCE mean, depth MSE over the batch and the pixels) or, with ``sums``, the sums of PDL-FAS's
    Eqs. 4-7 (BCE summed over the batch, ||D(F(x)) - I||^2 summed over the batch and the pixels)."""
    W1, b1, W2, b2 = (method.meta.hidden.weight, method.meta.hidden.bias, method.meta.out.weight, method.meta.out.bias)

    def meta(h, w1, c1, w2, c2):
        return (torch.tanh(h.mean(dim=(2, 3)) @ w1.T + c1) @ w2.T + c2).squeeze(1)

    def feature(x):
        return torch.tanh(F.conv2d(x, method.feature.conv.weight, method.feature.conv.bias, padding=1))

    def depth(h):
        return F.conv2d(h, method.depth.weight, method.depth.bias)

    def bce(logit, y):
        return F.binary_cross_entropy_with_logits(logit, y, reduction="sum" if sums else "mean")

    def depth_error(h, target):
        return F.mse_loss(depth(h), target, reduction="sum" if sums else "mean")

    x, y, d, target = batch["image"], batch["label"].double(), batch["domain"], batch["depth"]
    total, fast_weights, inner_grads = 0, [], []
    for dom in train_domains:
        h = feature(x[d == dom])
        cls = bce(meta(h, W1, b1, W2, b2), y[d == dom])
        grads = torch.autograd.grad(cls, (W1, b1, W2, b2), create_graph=True)
        inner_grads.append(grads)
        used = grads if second_order else [g.detach() for g in grads]
        fast_weights.append([p - ALPHA * g for p, g in zip((W1, b1, W2, b2), used)])
        total = total + cls + depth_weight * depth_error(h, target[d == dom])
    h = feature(x[d == test_domain])
    total = total + depth_weight * depth_error(h, target[d == test_domain])
    test_losses = [bce(meta(h, *fast), y[d == test_domain]) for fast in fast_weights]
    return total + sum(test_losses), inner_grads, fast_weights, test_losses


def gradient(loss, method):
    return torch.cat([g.reshape(-1) for g in torch.autograd.grad(loss, list(method.parameters()), retain_graph=True)])


def test_meta_gradient_equals_the_unrolled_objective():
    method, batch = tiny_rfm(), toy_batch()
    ours = method.objective(batch, [[2], [0]], 1)
    reference, *_ = by_hand(method, batch, [2, 0], 1)
    assert torch.allclose(ours["total"], reference, rtol=1e-12)
    assert torch.allclose(gradient(ours["total"], method), gradient(reference, method), rtol=1e-9, atol=1e-12)


def test_first_order_differs_exactly_by_the_second_order_term():
    method, batch = tiny_rfm(), toy_batch()
    full = gradient(method.objective(batch, [[0], [1]], 2)["total"], method)
    first_order = tiny_rfm(meta_gradient="first-order")
    first_order.load_state_dict(method.state_dict())
    fo = gradient(first_order.objective(batch, [[0], [1]], 2)["total"], first_order)
    # the dropped term: -alpha * sum_i J_i^T v_i, J_i the Jacobian of inner gradient i w.r.t. every parameter and
    # v_i the gradient of the meta-test loss at the adapted weights (a Hessian-vector product)
    _, inner, fast, test_losses = by_hand(method, batch, [0, 1], 2)
    dots = 0
    for grads, weights, loss in zip(inner, fast, test_losses):
        v = torch.autograd.grad(loss, weights, retain_graph=True)
        dots = dots + sum((g * vi.detach()).sum() for g, vi in zip(grads, v))
    term = -ALPHA * torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(
        torch.autograd.grad(dots, list(method.parameters()), allow_unused=True), method.parameters())])
    assert term.abs().max() > 1e-4  # the term is not negligible here
    assert torch.allclose(full - fo, term, rtol=1e-8, atol=1e-12)


def test_first_order_is_reptiles_approximation_for_the_meta_learner():
    """The paper's "Ours (First-order)" uses Reptile's approximation: for each meta-train domain i, the meta
    learner moves along (theta - theta~_i) / alpha, theta~_i = theta after an SGD step on T_i, then one on T."""
    method, batch = tiny_rfm(meta_gradient="first-order"), toy_batch()
    x, y, d = batch["image"], batch["label"].double(), batch["domain"]
    meta_params = list(method.meta.parameters())
    ours = torch.autograd.grad(method.objective(batch, [[0], [1]], 2)["total"], meta_params)
    with torch.no_grad():
        h = {dom: method.feature(x[d == dom])[1] for dom in range(3)}
    direction = [torch.zeros_like(p) for p in meta_params]
    for dom in (0, 1):
        fast = [p.detach().clone().requires_grad_() for p in meta_params]
        for step_on in (dom, 2):  # SGD on the meta-train domain, then on the meta-test domain
            logit = torch.func.functional_call(method.meta, dict(zip(dict(method.meta.named_parameters()), fast)),
                                               (h[step_on],))
            grads = torch.autograd.grad(F.binary_cross_entropy_with_logits(logit, y[d == step_on]), fast)
            fast = [(p - ALPHA * g).detach().requires_grad_() for p, g in zip(fast, grads)]
        direction = [acc + (p.detach() - f.detach()) / ALPHA for acc, p, f in zip(direction, meta_params, fast)]
    for got, want in zip(ours, direction):
        assert torch.allclose(got, want, rtol=1e-9, atol=1e-12)
    second = tiny_rfm()
    full = torch.autograd.grad(second.objective(batch, [[0], [1]], 2)["total"], list(second.meta.parameters()))
    assert any(not torch.allclose(a, b, atol=1e-6) for a, b in zip(full, direction))  # second order differs


def test_ablations_change_the_objective_as_described():
    batch = toy_batch()
    full = tiny_rfm()
    aggregated = tiny_rfm(aggregated=True)
    assert aggregated.split_domains(batch["domain"])[0].__len__() == 1
    assert len(full.split_domains(batch["domain"])[0]) == 2
    plain = tiny_rfm(meta=False).objective(batch, [[0], [1]], 2)
    assert plain["cls_test"] == 0 and plain["dep_test"] == 0
    joint = F.binary_cross_entropy_with_logits(full.meta(full.feature(batch["image"])[1]), batch["label"].double())
    assert torch.allclose(plain["cls_train"], joint)  # one group of every domain: plain classification
    no_depth = tiny_rfm(depth=False).objective(batch, [[0], [1]], 2)
    assert no_depth["dep_train"] == 0 and no_depth["dep_test"] == 0 and no_depth["cls_test"] > 0


def test_loss_decreases_on_a_separable_toy_batch():
    method, batch = tiny_rfm(lr=0.05), toy_batch()
    first = method.objective(batch, [[0], [1]], 2)["total"].item()
    for _ in range(30):
        method.update(batch)
    assert method.objective(batch, [[0], [1]], 2)["total"].item() < 0.7 * first


def test_released_networks_shapes():
    feature = create_model("rfm_feature_extractor")
    for_depth, for_meta = feature(torch.rand(2, 6, 256, 256))
    assert for_depth.shape == (2, 384, 32, 32) and for_meta.shape == (2, 128, 32, 32)
    assert create_model("rfm_depth_estimator")(for_depth).shape == (2, 1, 32, 32)
    assert create_model("rfm_meta_learner")(for_meta).shape == (2,)
