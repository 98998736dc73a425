"""Face anti-spoofing metrics on scores where higher means more likely live (label 1 = live, 0 = spoof).

At a threshold t a sample is accepted as live when ``score >= t``:
- FAR / APCER: the fraction of attacks accepted. ISO/IEC 30107-3 defines APCER per presentation attack
  instrument species: ``apcer_species`` holds it per species (``<family>/<attack_detail>``, e.g.
  ``print/printer2``, ``replay/highdef``; the family alone where a dataset names no species), and
  ``apcer_worst`` is the worst species; ``apcer`` keeps the per-family figures (print, replay, mask) and
  ``apcer_family_worst`` their worst. FRR / BPCER: the fraction of live samples rejected.
- HTER = (FAR + FRR) / 2 and ACER = (worst species' APCER + BPCER) / 2 at a named threshold, as OULU-NPU's
  protocols take the worst instrument.
- EER: the point where FAR = FRR on the ROC (interpolated between the two nearest ROC points).
Video level: a video's score is the mean of its frames' scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score, roc_curve


@dataclass(frozen=True)
class ErrorRates:
    threshold: float
    far: float  # attacks accepted (APCER over all attacks)
    frr: float  # live rejected (BPCER)

    @property
    def hter(self) -> float:
        return (self.far + self.frr) / 2


def _check(scores, labels):
    scores, labels = np.asarray(scores, np.float64), np.asarray(labels)
    if scores.shape != labels.shape or scores.ndim != 1:
        raise ValueError(f"scores {scores.shape} and labels {labels.shape} must be equal-length vectors")
    if not set(np.unique(labels)) <= {0, 1}:
        raise ValueError("labels must be 0 (spoof) or 1 (live)")
    if labels.min() == labels.max():
        raise ValueError("both live and spoof samples are needed")
    if not np.isfinite(scores).all():
        raise ValueError("scores contain NaN or Inf")
    return scores, labels.astype(int)


def error_rates(scores, labels, threshold: float) -> ErrorRates:
    """FAR and FRR at ``threshold`` (accept as live when score >= threshold)."""
    scores, labels = _check(scores, labels)
    accepted = scores >= threshold
    return ErrorRates(float(threshold), float(accepted[labels == 0].mean()), float((~accepted[labels == 1]).mean()))


def auc(scores, labels) -> float:
    """Area under the ROC curve, live as the positive class."""
    scores, labels = _check(scores, labels)
    return float(roc_auc_score(labels, scores))


def eer(scores, labels) -> tuple[float, float]:
    """(equal error rate, threshold at it). The rate is interpolated between the ROC points that bracket
    FAR = FRR; the threshold is that of the ROC point nearest to equality."""
    scores, labels = _check(scores, labels)
    far, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    frr = 1 - tpr
    diff = far - frr  # rises from -1 (threshold above every score) to +1
    k = int(np.argmax(diff >= 0))
    if k == 0 or diff[k] == 0:
        rate = (far[k] + frr[k]) / 2
    else:  # linear interpolation between points k-1 and k
        w = -diff[k - 1] / (diff[k] - diff[k - 1])
        rate = (far[k - 1] + w * (far[k] - far[k - 1]) + frr[k - 1] + w * (frr[k] - frr[k - 1])) / 2
    nearest = int(np.argmin(np.abs(diff)))
    threshold = thresholds[nearest]
    return float(rate), float(min(threshold, scores.max()) if np.isinf(threshold) else threshold)


def apcer_by_attack(scores, labels, attacks, threshold: float) -> dict[str, float]:
    """APCER of each attack family present (accept as live when score >= threshold)."""
    scores, labels = _check(scores, labels)
    attacks = np.asarray(attacks)
    return {str(a): float((scores[(labels == 0) & (attacks == a)] >= threshold).mean())
            for a in sorted(set(attacks[labels == 0]))}


def species(attacks, details) -> np.ndarray:
    """Attack instrument species names, ``<family>/<detail>`` (the family alone where the detail is empty)."""
    attacks = np.asarray(attacks, dtype=object).astype(str)
    details = pd.Series(details, dtype=object).fillna("").astype(str).to_numpy()
    return np.where(details == "", attacks, np.char.add(np.char.add(attacks, "/"), details.astype(str)))


def video_level(frames: pd.DataFrame) -> pd.DataFrame:
    """Mean frame score per video; columns video_id, label, attack (and attack_detail when given), score,
    frames. A video whose frames disagree on label or attack is an error."""
    grouped = frames.groupby("video_id", sort=True)
    inconsistent = grouped["label"].nunique().gt(1) | grouped["attack"].nunique().gt(1)
    if inconsistent.any():
        raise ValueError(f"videos with frames of different labels or attacks: {inconsistent[inconsistent].index[:5].tolist()}")
    columns = {"label": ("label", "first"), "attack": ("attack", "first")}
    if "attack_detail" in frames:
        columns["attack_detail"] = ("attack_detail", "first")
    return grouped.agg(**columns, score=("score", "mean"), frames=("score", "size")).reset_index()


def level_metrics(table: pd.DataFrame, source_threshold: float | None = None) -> dict:
    """Every metric of one table of scores (frames, or videos): AUC, EER, HTER at the table's own EER
    threshold and, when ``source_threshold`` is given, HTER, APCER per attack and worst, BPCER and ACER there."""
    scores, labels, attacks = table["score"].to_numpy(), table["label"].to_numpy(), table["attack"].to_numpy()
    rate, oracle = eer(scores, labels)
    entry = {"samples": int(len(table)), "auc": auc(scores, labels), "eer": rate,
             "oracle_threshold": oracle, "hter_at_target_eer_threshold": error_rates(scores, labels, oracle).hter}
    if source_threshold is not None:
        at = error_rates(scores, labels, source_threshold)
        per_family = apcer_by_attack(scores, labels, attacks, source_threshold)
        kinds = species(attacks, table["attack_detail"] if "attack_detail" in table else [""] * len(table))
        per_species = apcer_by_attack(scores, labels, kinds, source_threshold)
        worst = max(per_species.values())
        entry.update({"source_threshold": float(source_threshold), "hter_at_source_threshold": at.hter,
                      "apcer": per_family, "apcer_family_worst": max(per_family.values()),
                      "apcer_species": per_species, "apcer_worst": worst, "bpcer": at.frr, "acer": (worst + at.frr) / 2})
    return entry


def report(frames: pd.DataFrame, source_threshold: float | None = None,
           video_source_threshold: float | None = None) -> dict:
    """Every metric at frame and video level. ``frames`` has video_id, label (1 live), attack, optionally
    attack_detail, and score. HTER is given at the target's own EER threshold (what the papers report: it
    looks at the test labels) and at thresholds fixed on source data (what a deployment gets):
    ``source_threshold`` for frames, ``video_source_threshold`` (from video-level validation scores) for
    videos."""
    return {"frame": level_metrics(frames, source_threshold),
            "video": level_metrics(video_level(frames), video_source_threshold)}
