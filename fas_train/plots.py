"""The plots a reviewer expects beside a report: ROC (its legend gives each curve's AUC), DET on normal-deviate
axes, and the score histogram of each class with the thresholds marked."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.atomic import atomic_path

from .metrics import auc, curve, video_level

DET_TICKS = (0.001, 0.01, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99)


def _pyplot():
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot as plt
    return plt


def _save(fig, path: Path) -> None:
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp)
    _pyplot().close(fig)


def plot_scores(frames: pd.DataFrame, out: Path, title: str, fusion: str = "mean",
                thresholds: dict | None = None, prefix: str = "") -> list[Path]:
    """roc.png, det.png and histogram.png of labelled frame scores (and their videos' fused scores, where the
    table has video_id) in ``out``; ``thresholds`` ({"frame": t, "video": t}) are marked on the histograms."""
    levels = {"frame": frames}
    if "video_id" in frames:
        levels["video"] = video_level(frames, fusion)
    paths = [Path(out) / f"{prefix}{name}.png" for name in ("roc", "det", "histogram")]
    plot_roc(levels, paths[0], title)
    plot_det(levels, paths[1], title)
    plot_histograms(levels, paths[2], title, thresholds or {})
    return paths


def plot_roc(levels: dict, path: Path, title: str) -> None:
    from sklearn.metrics import roc_curve
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for level, table in levels.items():
        far, tpr, _ = roc_curve(table["label"], table["score"])
        ax.plot(far, tpr, label=f"{level} (AUC {auc(table['score'], table['label']):.4f})")
    ax.plot([0, 1], [0, 1], ":", color="grey")
    ax.set(xlabel="attacks accepted (FAR)", ylabel="live accepted (1 - FRR)", title=title)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def det_axis(rates: np.ndarray) -> np.ndarray:
    """Rates on a DET plot's normal-deviate axis (clipped inside (0, 1) so that 0 and 1 stay on the plot)."""
    from scipy.stats import norm
    return norm.ppf(np.clip(rates, 1e-4, 1 - 1e-4))


def plot_det(levels: dict, path: Path, title: str) -> None:
    """APCER against BPCER, both on normal-deviate scales (ISO/IEC 30107-3's DET)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for level, table in levels.items():
        points = curve(table["score"], table["label"])
        ax.plot(det_axis(points.apcer), det_axis(points.bpcer), label=level, drawstyle="steps-post")
    ticks = det_axis(np.array(DET_TICKS))
    labels = [f"{t * 100:g}" for t in DET_TICKS]
    ax.set_xticks(ticks, labels)
    ax.set_yticks(ticks, labels)
    ax.set(xlim=(ticks[0], ticks[-1]), ylim=(ticks[0], ticks[-1]), xlabel="APCER (%)", ylabel="BPCER (%)",
           title=title)
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_histograms(levels: dict, path: Path, title: str, thresholds: dict) -> None:
    """Scores of live and attack samples per level (one panel each), the thresholds as vertical lines."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(levels), figsize=(4.5 * len(levels), 3.5), squeeze=False)
    for ax, (level, table) in zip(axes[0], levels.items()):
        scores, labels = table["score"].to_numpy(), table["label"].to_numpy()
        bins = np.linspace(min(scores.min(), 0.0), max(scores.max(), 1.0), 41)
        ax.hist(scores[labels == 1], bins=bins, alpha=0.6, label="live")
        ax.hist(scores[labels == 0], bins=bins, alpha=0.6, label="attack")
        if level in thresholds and thresholds[level] is not None:
            ax.axvline(thresholds[level], color="black", linestyle="--", label=f"threshold {thresholds[level]:.3f}")
        ax.set(xlabel="live score", ylabel=f"{level}s", title=f"{title}: {level} level")
        ax.legend()
    fig.tight_layout()
    _save(fig, path)


def plot_unlabelled(scores: np.ndarray, path: Path, thresholds: dict, kinds: np.ndarray) -> None:
    """Scores of unlabelled inputs (``fas-train predict``): videos and images apart, each against its
    deployable threshold (video level for videos, frame level for images)."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(5, 3.5))
    bins = np.linspace(min(scores.min(), 0.0), max(scores.max(), 1.0), 41)
    for kind, level in (("video", "video"), ("image", "frame")):
        chosen = scores[kinds == kind]
        if len(chosen):
            ax.hist(chosen, bins=bins, alpha=0.6, label=f"{kind}s")
            ax.axvline(thresholds[level], linestyle="--", color="black" if kind == "video" else "grey",
                       label=f"{level} threshold {thresholds[level]:.3f}")
    ax.set(xlabel="live score", ylabel="inputs", title="predictions")
    ax.legend()
    fig.tight_layout()
    _save(fig, path)
