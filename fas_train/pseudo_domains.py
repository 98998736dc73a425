"""Pseudo-domains: clustering training samples by style statistics, as D²AM and PDL-FAS do each epoch.

- :func:`instance_statistics`: per-channel mean and standard deviation over space (instance-norm statistics).
- :func:`cluster_joint` (D²AM's first epoch): K-means on all samples together.
- :func:`cluster_by_class` (D²AM's later epochs): K-means on live and on spoof samples separately, each
  class's clusters relabelled to agree best with that class's previous assignment (Kuhn-Munkres), which
  also pairs live and spoof clusters into one pseudo-domain.
- :func:`cluster_pca` (PDL-FAS): PCA then K-means or a Gaussian mixture on all samples.
- :func:`match_labels`: the relabelling on its own; :func:`agreement`: normalised mutual information.
"""
from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA
from sklearn.metrics import normalized_mutual_info_score
from sklearn.mixture import GaussianMixture


def instance_statistics(feature: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(N, 2C): the mean and standard deviation of each channel of an (N, C, H, W) map over space."""
    flat = feature.flatten(2).float()
    mean = flat.mean(2)
    std = (flat.var(2, unbiased=False) + eps).sqrt()
    return torch.cat([mean, std], 1)


def match_labels(labels: np.ndarray, previous: np.ndarray | None, k: int) -> np.ndarray:
    """``labels`` renamed by the permutation of 0..k-1 that maximises agreement with ``previous``
    (Kuhn-Munkres on the contingency table); unchanged when there is no previous assignment."""
    labels = np.asarray(labels, np.int64)
    if previous is None:
        return labels
    overlap = np.zeros((k, k), np.int64)
    np.add.at(overlap, (labels, np.asarray(previous, np.int64)), 1)
    rows, cols = linear_sum_assignment(-overlap)
    rename = np.empty(k, np.int64)
    rename[rows] = cols
    return rename[labels]


def _standardise(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, np.float64)
    return (features - features.mean(0)) / (features.std(0) + 1e-8)


def _scaled(features: np.ndarray, standardise: bool) -> np.ndarray:
    features = np.asarray(features, np.float64)
    return _standardise(features) if standardise else features


def cluster_joint(features: np.ndarray, k: int, seed: int, previous: np.ndarray | None = None,
                  standardise: bool = True) -> np.ndarray:
    """K-means (k clusters) on every sample together (each feature z-scored first unless ``standardise`` is
    false), matched to ``previous`` when given."""
    labels = KMeans(k, n_init=10, random_state=seed).fit_predict(_scaled(features, standardise))
    return match_labels(labels, previous, k)


def cluster_by_class(features: np.ndarray, labels: np.ndarray, k: int, seed: int,
                     previous: np.ndarray, standardise: bool = True) -> np.ndarray:
    """D²AM's assignment after the first epoch: K-means (k clusters) on the live and on the spoof samples
    apart; each class's clusters get the names of the previous epoch's pseudo-domains they overlap most
    among that class's samples (Kuhn-Munkres), so live cluster j and spoof cluster j form one pseudo-domain
    because they continue the same previous one. Features are z-scored first unless ``standardise`` is
    false."""
    features, labels = _scaled(features, standardise), np.asarray(labels)
    previous = np.asarray(previous, np.int64)
    out = np.empty(len(labels), np.int64)
    for c in (1, 0):
        members = np.flatnonzero(labels == c)
        if len(members) < k:
            raise ValueError(f"{len(members)} {'live' if c else 'spoof'} samples cannot form {k} pseudo-domains")
        found = KMeans(k, n_init=10, random_state=seed).fit_predict(features[members])
        out[members] = match_labels(found, previous[members], k)
    return out


def cluster_pca(features: np.ndarray, k: int, seed: int, dims: int = 256, method: str = "kmeans",
                previous: np.ndarray | None = None) -> np.ndarray:
    """PDL-FAS's assignment: PCA to ``dims`` dimensions (fewer if there are fewer samples or features),
    then K-means or a Gaussian mixture (``method``) into ``k`` groups, matched to ``previous``."""
    features = _standardise(features)
    dims = min(dims, features.shape[0], features.shape[1])
    reduced = PCA(dims, random_state=seed).fit_transform(features)
    if method == "kmeans":
        labels = KMeans(k, n_init=10, random_state=seed).fit_predict(reduced)
    elif method == "gmm":
        labels = GaussianMixture(k, covariance_type="diag", random_state=seed).fit_predict(reduced)
    else:
        raise ValueError(f"unknown clustering {method!r}: use 'kmeans' or 'gmm'")
    return match_labels(labels, previous, k)


def agreement(a, b) -> float:
    """Normalised mutual information of two labelings (1: the same partition)."""
    return float(normalized_mutual_info_score(a, b))
