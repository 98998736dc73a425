"""Pseudo-domains: clustering training samples by style statistics, as D²AM and PDL-FAS do each epoch.

- :func:`instance_statistics`: per-channel mean and standard deviation over space (instance-norm statistics).
- :func:`cluster_by_class` (D²AM): K-means on live and on spoof samples separately, clusters combined by
  index, then relabelled to agree best with the previous assignment (Hungarian algorithm).
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


def cluster_by_class(features: np.ndarray, labels: np.ndarray, k: int, seed: int,
                     previous: np.ndarray | None = None) -> np.ndarray:
    """D²AM's assignment: K-means (k clusters) on the live and on the spoof samples apart. The spoof
    clusters are matched to the live ones (Hungarian algorithm on the distance of their centres, so that
    pseudo-domain j pairs the most alike live and spoof clusters), then the combined labels are matched
    to ``previous``."""
    features, labels = _standardise(features), np.asarray(labels)
    out = np.empty(len(labels), np.int64)
    centres = {}
    for c in (1, 0):
        members = np.flatnonzero(labels == c)
        if len(members) < k:
            raise ValueError(f"{len(members)} {'live' if c else 'spoof'} samples cannot form {k} pseudo-domains")
        model = KMeans(k, n_init=10, random_state=seed).fit(features[members])
        out[members], centres[c] = model.labels_, model.cluster_centers_
    cost = ((centres[0][:, None, :] - centres[1][None, :, :]) ** 2).sum(-1)  # spoof cluster x live cluster
    rows, cols = linear_sum_assignment(cost)
    rename = np.empty(k, np.int64)
    rename[rows] = cols
    spoof = labels == 0
    out[spoof] = rename[out[spoof]]
    return match_labels(out, previous, k)


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
