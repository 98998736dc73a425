"""The pieces the methods share: gradient reversal, the entropy loss, MMD, pseudo-domain clustering and
relabelling, ImageNet weight loading."""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torchvision

from fas_train.losses import binary_enhancement_entropy, enhancement_entropy, gaussian_mmd, reverse_gradient
from fas_train.models.backbones import find_weights, resnet
from fas_train.pseudo_domains import (agreement, cluster_by_class, cluster_joint, cluster_pca, instance_statistics,
                                      match_labels)


def test_gradient_reversal_flips_and_scales_the_gradient_exactly():
    x = torch.randn(5, 3, requires_grad=True)
    upstream = torch.randn(5, 3)
    y = reverse_gradient(x, 0.2)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.equal(x.grad, -0.2 * upstream)


def test_entropy_losses_follow_eq7_and_the_two_sided_form():
    logits = torch.linspace(-6, 6, 2401)
    paper, binary = enhancement_entropy(logits), binary_enhancement_entropy(logits)
    assert paper.shape == binary.shape == logits.shape  # per sample: the method reduces over its batch
    # Eq. 7 as written, P log P, is smallest at P = 1/e (value -1/e); the two-sided form at P = 1/2 (-log 2)
    assert torch.sigmoid(logits[paper.argmin()]) == pytest.approx(np.exp(-1), abs=2e-3)
    assert paper.min() == pytest.approx(-np.exp(-1), abs=1e-6)
    assert logits[binary.argmin()].abs() < 1e-6 and binary.min() == pytest.approx(-np.log(2), abs=1e-6)
    p = torch.tensor([0.3, 0.9])  # by hand: 0.3 ln 0.3 = -0.361192, 0.9 ln 0.9 = -0.094825, 0.7 ln 0.7 = -0.249672
    assert torch.allclose(enhancement_entropy(torch.logit(p)), torch.tensor([-0.361192, -0.094825]), atol=1e-6)
    assert torch.allclose(binary_enhancement_entropy(torch.logit(p)), torch.tensor([-0.610864, -0.325083]), atol=1e-6)


def test_mmd_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(400, 8, generator=g), torch.randn(400, 8, generator=g)
    same = float(gaussian_mmd(a, b))
    shifts = [float(gaussian_mmd(a, b + s)) for s in (0.5, 1.0, 2.0)]
    assert abs(same) < 0.02 and gaussian_mmd(a, a) == pytest.approx(0.0, abs=1e-6)
    assert same < shifts[0] < shifts[1] < shifts[2]


def test_hungarian_relabelling_keeps_or_permutes_labels():
    previous = np.array([0, 0, 1, 1, 2, 2, 2])
    assert np.array_equal(match_labels(previous, previous, 3), previous)
    renamed = np.array([2, 2, 0, 0, 1, 1, 1])  # the same partition under other names
    assert np.array_equal(match_labels(renamed, previous, 3), previous)
    changed = np.array([2, 0, 0, 0, 1, 1, 2])
    matched = match_labels(changed, previous, 3)
    mapping = {c: m for c, m in zip(changed, matched)}  # a permutation, applied consistently
    assert sorted(mapping.values()) == [0, 1, 2] and np.array_equal(matched, [mapping[c] for c in changed])


def planted(seed=0, per_group=60, dims=40):
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 4, (3, dims))
    groups = np.repeat(np.arange(3), per_group)
    return centres[groups] + rng.normal(0, 1, (len(groups), dims)), groups


@pytest.mark.parametrize("method", ["kmeans", "gmm"])
def test_pca_and_clustering_recover_planted_groups(method):
    features, groups = planted()
    labels = cluster_pca(features, 3, seed=0, dims=16, method=method)
    assert agreement(labels, groups) > 0.99
    again = cluster_pca(features, 3, seed=5, dims=16, method=method, previous=labels)
    assert np.array_equal(again, labels)  # matched to the previous epoch's names


def test_first_clustering_is_joint_and_later_ones_follow_the_previous_epoch_per_class():
    features, groups = planted(dims=12)
    labels = np.tile([1, 0], len(groups) // 2)  # both classes in every planted group
    joint = cluster_joint(features, 3, seed=0)
    assert agreement(joint, groups) > 0.99
    # live and spoof samples of one group sit far apart (another offset per class): clustering per class
    # then pairing live and spoof clusters by centre distance would be arbitrary; the previous epoch decides
    shifted = features + np.where(labels[:, None] == 1, 0.0, 40.0) * np.eye(12)[0]
    previous = np.array([2, 0, 1])[groups]  # last epoch's names for the planted groups
    assigned = cluster_by_class(shifted, labels, 3, seed=0, previous=previous)
    assert np.array_equal(assigned, previous)  # each class's clusters keep the previous names
    noisy = previous.copy()
    noisy[:5] = (noisy[:5] + 1) % 3  # a few samples moved last epoch: the majority still decides the names
    assert np.array_equal(cluster_by_class(shifted, labels, 3, seed=1, previous=noisy), previous)
    with pytest.raises(ValueError, match="cannot form 3 pseudo-domains"):
        cluster_by_class(shifted[:6], np.array([1, 1, 0, 0, 0, 0]), 3, seed=0, previous=previous[:6])


def test_instance_statistics_are_channel_means_and_stds():
    x = torch.randn(2, 3, 5, 5)
    stats = instance_statistics(x)
    assert torch.allclose(stats[:, :3], x.mean((2, 3)))
    assert torch.allclose(stats[:, 3:], x.std((2, 3), unbiased=False), atol=1e-4)


def test_imagenet_weights_load_from_a_local_file_and_are_never_silently_random(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv("FAS_WEIGHTS_DIR", raising=False)
    with pytest.raises(FileNotFoundError) as missing:
        resnet("resnet18", "auto")
    searched = str(tmp_path / "hub" / "hub" / "checkpoints")  # $TORCH_HOME/hub/checkpoints
    assert "resnet18-*.pth" in str(missing.value) and searched in str(missing.value)
    assert "pretrained=none" in str(missing.value)
    model, source = resnet("resnet18", "none")
    assert find_weights("resnet18") is None and source.startswith("random") and "asked for" in source
    torch.manual_seed(1)
    reference = torchvision.models.resnet18(weights=None)  # weights we made, in torchvision's file name
    folder = tmp_path / "weights"
    folder.mkdir()
    torch.save(reference.state_dict(), folder / "resnet18-f37072fd.pth")
    monkeypatch.setenv("FAS_WEIGHTS_DIR", str(folder))
    model, source = resnet("resnet18", "auto")
    assert source == f"imagenet: {folder / 'resnet18-f37072fd.pth'}"
    assert torch.equal(model.conv1.weight, reference.conv1.weight)
    with pytest.raises(ValueError, match="not resnet50 ImageNet weights"):
        resnet("resnet50", str(folder / "resnet18-f37072fd.pth"))
    with pytest.raises(FileNotFoundError, match="missing.pth"):
        resnet("resnet18", str(folder / "missing.pth"))


@pytest.mark.parametrize("name", ["d2am", "ccdd", "metapattern"])
def test_methods_with_imagenet_parts_stop_without_weights_unless_asked(name, tmp_path, monkeypatch):
    from fas_train.methods import METHODS
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv("FAS_WEIGHTS_DIR", raising=False)
    cls, config_cls = METHODS[name]
    with pytest.raises(FileNotFoundError, match="ImageNet weights for resnet"):
        cls.create(config_cls(), "small", [0, 1, 2], seed=0)
    explicit = {"d2am": {"first_epoch": "style"}}.get(name, {"pretrained": "none"})
    method = cls.create(config_cls(**explicit), "small", [0, 1, 2], seed=0)
    assert any("asked for" in str(v) for v in method.provenance.values()), method.provenance


def test_d2am_domain_channels_are_one_set_for_the_whole_pass():
    from fas_train.methods.d2am import select_domain_channels
    # one DRLM with C = 4 channels; [mean | std | attention] per row; attention rankings differ per row
    mean = np.array([[1.0, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    std = mean / 10
    attention = np.array([[0.1, 0.2, 0.9, 0.8],  # row 0 alone would pick channels 0, 1
                          [0.9, 0.1, 0.8, 0.2],  # row 1 alone: channels 1, 3
                          [0.3, 0.9, 0.1, 0.2]])  # row 2 alone: channels 2, 3
    features = np.concatenate([mean, std, attention], 1)
    picked = select_domain_channels(features, [4], select=True)
    # mean attention: 0.433, 0.4, 0.6, 0.4 -> channels 1 and 3 for every row
    assert np.array_equal(picked, np.concatenate([mean[:, [1, 3]], std[:, [1, 3]]], 1))
    assert np.array_equal(select_domain_channels(features, [4], select=False), np.concatenate([mean, std], 1))
    assert np.array_equal(select_domain_channels(features[[2, 0, 1]], [4], select=True), picked[[2, 0, 1]])
    with pytest.raises(ValueError, match="expected 24"):
        select_domain_channels(features, [4, 4], select=True)


def test_d2am_first_epoch_uses_local_imagenet_weights_and_later_ones_one_channel_set(tmp_path, monkeypatch):
    from fas_train.methods import D2AM, D2AMConfig
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setenv("FAS_WEIGHTS_DIR", str(tmp_path))
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18-f37072fd.pth")
    method = D2AM.create(D2AMConfig(first_epoch_backbone="resnet18"), "small", [0, 1, 2], seed=0)
    assert method.domain_source(0) == f"resnet18 imagenet: {tmp_path / 'resnet18-f37072fd.pth'}"
    x = torch.rand(6, 6, 64, 64)
    x[3:] = x[3:] ** 4
    method.eval()
    with torch.no_grad():
        first = method.domain_features({"image": x}, epoch=0)
        later = method.domain_features({"image": x}, epoch=1).numpy()
        parts = method.feature(x)[2]
    assert first.shape == (6, 2 * (64 + 128 + 256 + 512))  # mean and std of the four ResNet stages
    selected = method.clustering_features(later)
    assert selected.shape == (6, 3 * 2 * 16)  # the lowest-attention half of 32 channels, three DRLMs
    columns = []
    for f_minus, a in parts:  # one channel set for every sample: the lowest mean attention over the pass
        chosen = torch.from_numpy(np.sort(np.argsort(a.numpy().mean(0), kind="stable")[:16]))
        stats = instance_statistics(f_minus)
        columns += [stats[:, chosen], stats[:, 32 + chosen]]
    assert np.allclose(selected, torch.cat(columns, 1).numpy(), atol=1e-6)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        permuted = method.clustering_features(method.domain_features({"image": x[order]}, epoch=1).numpy())
    assert np.allclose(permuted, selected[order.numpy()], atol=1e-6)  # rows move, columns keep their channels
    assert "_imagenet" not in dict(method.named_modules()) and not any("resnet" in k for k in method.state_dict())


def test_mmd_equals_the_biased_estimate_with_five_gaussians_written_out():
    """Eq. 9's ||mean phi(h_s) - mean phi(h_t)||^2 with k(a, b) = sum_s exp(-|a - b|^2 / (2 s^2 d)), s in 1, 2, 4,
    8, 16, as pairwise sums over two small samples of unequal size (the estimate is not symmetric in n, m)."""
    g = torch.Generator().manual_seed(1)
    x, y = torch.randn(3, 2, generator=g, dtype=torch.float64), torch.randn(5, 2, generator=g, dtype=torch.float64) + 1

    def k(a, b):
        return sum(math.exp(-float(((a - b) ** 2).sum()) / (2 * s * s * 2)) for s in (1, 2, 4, 8, 16))

    xx = sum(k(a, b) for a in x for b in x) / 9
    yy = sum(k(a, b) for a in y for b in y) / 25
    xy = sum(k(a, b) for a in x for b in y) / 15
    assert float(gaussian_mmd(x, y)) == pytest.approx(xx + yy - 2 * xy, rel=1e-12)


def test_d2am_input_style_statistics_are_three_scales_of_mean_and_std():
    """first_epoch=style: per-channel mean and std of the input, of its 4x mean-pooled copy, and of the input
    minus its 5 x 5 box blur (the blur averaging the in-image pixels only)."""
    from fas_train.methods.d2am import input_style_statistics
    x = torch.rand(2, 3, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    blurred = torch.empty_like(x)
    for i in range(8):
        for j in range(8):
            blurred[..., i, j] = x[..., max(i - 2, 0):i + 3, max(j - 2, 0):j + 3].mean((-2, -1))

    def stats(t):
        flat = t.flatten(2)
        return torch.cat([flat.mean(2), (flat.var(2, unbiased=False) + 1e-5).sqrt()], 1)

    pooled = x.reshape(2, 3, 2, 4, 2, 4).mean((3, 5))
    expected = torch.cat([stats(x), stats(pooled), stats(x - blurred)], 1)
    assert torch.allclose(input_style_statistics(x).double(), expected, atol=1e-6)


def test_depth_errors_sum_or_average_the_pixels_against_a_pooled_target():
    """||D(F(x)) - I||^2 per example over its pixels (sum) or their mean; a 4 x 4 target meets a 2 x 2 map
    through 2 x 2 average pooling."""
    from fas_train.losses import depth_errors
    target = torch.arange(32, dtype=torch.float64).reshape(2, 1, 4, 4)
    predicted = torch.zeros(2, 1, 2, 2, dtype=torch.float64)
    pooled = target.reshape(2, 1, 2, 2, 2, 2).mean((3, 5))  # [[2.5, 4.5], [10.5, 12.5]] and +16
    squares = pooled.square().flatten(1)
    assert torch.allclose(depth_errors(predicted, target, "sum"), squares.sum(1))
    assert torch.allclose(depth_errors(predicted, target, "mean"), squares.mean(1))
    assert float(depth_errors(predicted, target, "sum")[0]) == pytest.approx(2.5 ** 2 + 4.5 ** 2 + 10.5 ** 2 + 12.5 ** 2)
    same = torch.ones(1, 1, 2, 2, dtype=torch.float64)
    assert torch.equal(depth_errors(same * 3, same, "sum"), torch.tensor([16.0], dtype=torch.float64))


def test_standardised_features_have_zero_mean_and_unit_std_per_column():
    from fas_train.pseudo_domains import _standardise
    features = np.array([[1.0, 10.0], [3.0, 30.0], [5.0, 20.0]])
    z = _standardise(features)
    assert np.allclose(z.mean(0), 0) and np.allclose(z.std(0), 1, atol=1e-6)
    assert np.allclose(z[:, 0], [-np.sqrt(1.5), 0, np.sqrt(1.5)])
    assert np.all(np.isfinite(_standardise(np.ones((4, 2)))))  # a constant column stays finite (0)


def test_per_class_clustering_needs_k_samples_of_each_class_and_no_more():
    features = np.array([[0.0], [5.0], [10.0], [0.1], [5.1], [10.1]])
    labels, previous = np.array([1, 1, 1, 0, 0, 0]), np.array([0, 1, 2, 0, 1, 2])
    assert np.array_equal(cluster_by_class(features, labels, 3, seed=0, previous=previous), previous)
    with pytest.raises(ValueError, match="2 spoof samples cannot form 3 pseudo-domains"):
        cluster_by_class(features[:5], labels[:5], 3, seed=0, previous=previous[:5])
    with pytest.raises(ValueError, match="2 live samples cannot form 3 pseudo-domains"):
        cluster_by_class(features[1:], labels[1:], 3, seed=0, previous=previous[1:])


def test_clustering_defaults_standardise_and_names_follow_the_previous_assignment():
    rng = np.random.default_rng(0)
    groups = np.repeat([0, 1], 30)
    features = np.column_stack([rng.uniform(0, 100, 60), groups + 0.01 * rng.standard_normal(60)])
    assert agreement(cluster_joint(features, 2, seed=0), groups) == 1.0  # z-scored by default
    assert agreement(cluster_joint(features, 2, seed=0, standardise=False), groups) < 0.2
    labels = np.tile([1, 0], 30)
    assert agreement(cluster_by_class(features, labels, 2, seed=0, previous=groups), groups) == 1.0
    named = 1 - groups  # the previous assignment under the other names: the result takes them
    assert np.array_equal(cluster_joint(features, 2, seed=0, previous=named), named)
    wide = np.repeat([0.0, 5.0], 6)[:, None] + rng.standard_normal((12, 300)) * 0.01
    assert agreement(cluster_pca(wide, 2, seed=0), np.repeat([0, 1], 6)) == 1.0  # 300 features, 12 samples


def test_pdl_reduces_to_its_pca_width_or_the_data_s_rank_whichever_is_smaller(pca_widths):
    """pdl-fas.txt: PCA before clustering; 256 dimensions here (a choice), fewer when the samples or features
    are fewer: the widths the PCA is fitted with, and the dimensions K-means then sees."""
    seen = pca_widths
    rng = np.random.default_rng(1)
    for shape, dims, width in (((12, 300), 256, 12), ((50, 8), 256, 8), ((50, 300), 16, 16)):
        seen.clear()
        cluster_pca(rng.standard_normal(shape), 2, seed=0, dims=dims)
        assert seen == [(width, width)], (shape, dims)
    seen.clear()
    cluster_pca(rng.standard_normal((258, 257)), 2, seed=0)
    assert seen == [(256, 256)]  # the default width
