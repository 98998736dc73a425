"""The pieces the methods share: gradient reversal, the entropy loss, MMD, pseudo-domain clustering and
relabelling, ImageNet weight loading."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision

from fas_train.losses import enhancement_entropy, gaussian_mmd, reverse_gradient
from fas_train.models.backbones import find_weights, resnet
from fas_train.pseudo_domains import agreement, cluster_by_class, cluster_pca, instance_statistics, match_labels


def test_gradient_reversal_flips_and_scales_the_gradient_exactly():
    x = torch.randn(5, 3, requires_grad=True)
    upstream = torch.randn(5, 3)
    y = reverse_gradient(x, 0.2)
    assert torch.equal(y, x)
    y.backward(upstream)
    assert torch.equal(x.grad, -0.2 * upstream)


def test_entropy_loss_is_smallest_at_one_half():
    logits = torch.linspace(-6, 6, 241)
    values = torch.stack([enhancement_entropy(v.reshape(1)) for v in logits])
    assert logits[values.argmin()].abs() < 1e-6
    assert values.min() == pytest.approx(-np.log(2), abs=1e-6)
    p = torch.tensor([0.3])
    expected = p * p.log() + (1 - p) * (1 - p).log()
    assert enhancement_entropy(torch.logit(p)) == pytest.approx(float(expected), abs=1e-6)


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


def test_clustering_by_class_pairs_live_and_spoof_clusters():
    features, groups = planted(dims=12)
    labels = np.tile([1, 0], len(groups) // 2)  # both classes in every planted group
    assigned = cluster_by_class(features, labels, 3, seed=0)
    assert agreement(assigned, groups) > 0.99  # the live and spoof halves of a group share one pseudo-domain
    for d in range(3):
        assert set(labels[assigned == d]) == {0, 1}


def test_instance_statistics_are_channel_means_and_stds():
    x = torch.randn(2, 3, 5, 5)
    stats = instance_statistics(x)
    assert torch.allclose(stats[:, :3], x.mean((2, 3)))
    assert torch.allclose(stats[:, 3:], x.std((2, 3), unbiased=False), atol=1e-4)


def test_imagenet_weights_load_from_a_local_file_and_otherwise_say_so(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.delenv("FAS_WEIGHTS_DIR", raising=False)
    model, source = resnet("resnet18", "auto")
    assert find_weights("resnet18") is None and source.startswith("random")
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


def test_d2am_first_epoch_uses_local_imagenet_weights_when_present(tmp_path, monkeypatch):
    from fas_train.methods import D2AM, D2AMConfig
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setenv("FAS_WEIGHTS_DIR", str(tmp_path))
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18-f37072fd.pth")
    method = D2AM.create(D2AMConfig(first_epoch_backbone="resnet18"), "small", [0, 1, 2], seed=0)
    assert method.domain_source(0) == f"resnet18 imagenet: {tmp_path / 'resnet18-f37072fd.pth'}"
    x = {"image": torch.rand(4, 6, 64, 64)}
    with torch.no_grad():
        first = method.domain_features(x, epoch=0)
        later = method.domain_features(x, epoch=1)
    assert first.shape == (4, 2 * (64 + 128 + 256 + 512))  # mean and std of the four ResNet stages
    assert later.shape == (4, 3 * 2 * 16)  # the lowest-attention half of 32 channels, three DRLMs
    assert "_imagenet" not in dict(method.named_modules()) and not any("resnet" in k for k in method.state_dict())
