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
- Operating points (ISO/IEC 30107-3 and the recent papers): BPCER at APCER = 1, 5 and 10% (the lowest
  threshold whose APCER over all attacks is at most the rate: the fewest live rejected), APCER at BPCER = 1, 5
  and 10% (the highest threshold whose BPCER is at most the rate), each with its threshold; TPR at FPR = 1% and
  0.1% (FLIP's and SSAN's convention: live accepted when at most that fraction of attacks is), which is
  1 - BPCER at that APCER.
- Failure to acquire (frames or videos without a usable face, from a build's rejects) is counted; with
  ``fta_rejected`` those presentations count as rejected (ISO/IEC 30107-3): a live one is a bona fide
  presentation rejected (BPCER), an attack one an attack not accepted (APCER's denominator grows). AUC and EER
  are over the acquired samples either way.
Video level: a video's score fuses its frames' scores, by their mean unless another ``FUSIONS`` is asked for.
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
    k = int(np.argmax(diff >= 0))  # >= 1: diff[0] is -1 (no score reaches an infinite threshold)
    if diff[k] == 0:
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


FUSIONS = ("mean", "median", "max", "min")  # how a video's frame scores make its score
APCER_RATES = (0.01, 0.05, 0.10)
BPCER_RATES = (0.01, 0.05, 0.10)
FPR_RATES = (0.01, 0.001)
_SLACK = 1e-12  # a rate equal to the asked one (1/20 = 5%) is at most it, whatever the float rounding


def rate_name(rate: float) -> str:
    """1%, 5%, 0.1%: how a rate is named in reports and tables."""
    return f"{rate * 100:g}%"


@dataclass(frozen=True)
class Curve:
    """Every distinct operating point of a score set: at ``thresholds[i]`` (descending; the first accepts
    nothing) ``apcer[i]`` of the attacks are accepted and ``bpcer[i]`` of the live samples rejected, failures
    to acquire counted as rejected when given."""

    thresholds: np.ndarray
    apcer: np.ndarray
    bpcer: np.ndarray


def curve(scores, labels, fta_live: int = 0, fta_attack: int = 0) -> Curve:
    """The operating points of ``scores`` (``fta_live``/``fta_attack``: presentations without a usable face,
    counted as rejected)."""
    scores, labels = _check(scores, labels)
    thresholds = np.unique(scores)[::-1]
    live, attack = np.sort(scores[labels == 1]), np.sort(scores[labels == 0])
    accepted_live = len(live) - np.searchsorted(live, thresholds, side="left")
    accepted_attack = len(attack) - np.searchsorted(attack, thresholds, side="left")
    above = np.nextafter(thresholds[0], np.inf)  # accepts nothing
    n_live, n_attack = len(live) + fta_live, len(attack) + fta_attack
    return Curve(np.concatenate([[above], thresholds]),
                 np.concatenate([[0], accepted_attack]) / n_attack,
                 1 - np.concatenate([[0], accepted_live]) / n_live)


def bpcer_at_apcer(points: Curve, rate: float) -> tuple[float, float]:
    """(BPCER, threshold) at the lowest threshold whose APCER is at most ``rate``."""
    i = int(np.flatnonzero(points.apcer <= rate + _SLACK)[-1])
    return float(points.bpcer[i]), float(points.thresholds[i])


def apcer_at_bpcer(points: Curve, rate: float) -> tuple[float | None, float | None]:
    """(APCER, threshold) at the highest threshold whose BPCER is at most ``rate``; (None, None) when no
    threshold gets there (failures to acquire counted as rejected can keep BPCER above it)."""
    found = np.flatnonzero(points.bpcer <= rate + _SLACK)
    if not len(found):
        return None, None
    return float(points.apcer[found[0]]), float(points.thresholds[found[0]])


def operating_points(scores, labels, fta_live: int = 0, fta_attack: int = 0) -> dict:
    """BPCER at APCER = 1/5/10%, APCER at BPCER = 1/5/10% and TPR at FPR = 1/0.1%, each with its threshold."""
    points = curve(scores, labels, fta_live, fta_attack)
    out = {"bpcer_at_apcer": {}, "apcer_at_bpcer": {}, "tpr_at_fpr": {}}
    for rate in APCER_RATES:
        value, threshold = bpcer_at_apcer(points, rate)
        out["bpcer_at_apcer"][rate_name(rate)] = {"bpcer": value, "threshold": threshold}
    for rate in BPCER_RATES:
        value, threshold = apcer_at_bpcer(points, rate)
        out["apcer_at_bpcer"][rate_name(rate)] = {"apcer": value, "threshold": threshold}
    for rate in FPR_RATES:
        value, threshold = bpcer_at_apcer(points, rate)
        out["tpr_at_fpr"][rate_name(rate)] = {"tpr": 1 - value, "threshold": threshold}
    return out


def threshold_from(criterion: str, scores, labels) -> float:
    """A threshold fixed on development scores by a named criterion: ``eer``, ``min-hter`` (the lowest
    threshold of least (APCER + BPCER) / 2), ``apcer=R`` (the lowest threshold with APCER at most R) or
    ``bpcer=R`` (the highest threshold with BPCER at most R)."""
    name, _, value = criterion.partition("=")
    if name == "eer" and not value:
        return eer(scores, labels)[1]
    points = curve(scores, labels)
    if name == "min-hter" and not value:
        hter = (points.apcer + points.bpcer) / 2
        return float(points.thresholds[int(np.flatnonzero(hter <= hter.min() + _SLACK)[-1])])
    try:
        rate = float(value)
    except ValueError:
        rate = -1.0
    if name in ("apcer", "bpcer") and 0 <= rate <= 1:
        threshold = (bpcer_at_apcer if name == "apcer" else apcer_at_bpcer)(points, rate)[1]
        if threshold is None:
            raise ValueError(f"--threshold-from {criterion}: no threshold of the development scores gets BPCER "
                             f"to {rate}")
        return threshold
    raise ValueError(f"--threshold-from {criterion!r}: use eer, min-hter, apcer=RATE or bpcer=RATE (RATE in [0, 1])")


def video_level(frames: pd.DataFrame, fusion: str = "mean") -> pd.DataFrame:
    """One score per video, its frames' scores fused by ``fusion`` (mean, median, max or min); columns
    video_id, label, attack (and attack_detail when given), score, frames. A video whose frames disagree on
    label or attack is an error."""
    if fusion not in FUSIONS:
        raise ValueError(f"fusion {fusion!r}: use one of {list(FUSIONS)}")
    grouped = frames.groupby("video_id", sort=True)
    inconsistent = grouped["label"].nunique().gt(1) | grouped["attack"].nunique().gt(1)
    if inconsistent.any():
        raise ValueError(f"videos with frames of different labels or attacks: {inconsistent[inconsistent].index[:5].tolist()}")
    columns = {"label": ("label", "first"), "attack": ("attack", "first")}
    if "attack_detail" in frames:
        columns["attack_detail"] = ("attack_detail", "first")
    return grouped.agg(**columns, score=("score", fusion), frames=("score", "size")).reset_index()


@dataclass(frozen=True)
class Acquisition:
    """Presentations without a usable face: ``live`` and per attack species (``<family>/<detail>`` or the
    family), and whether they count as rejected (``as_rejected``)."""

    live: int = 0
    attacks: tuple = ()  # ((species, family, count), ...)
    as_rejected: bool = False

    @property
    def attack(self) -> int:
        return sum(n for _, _, n in self.attacks)

    def counted(self) -> tuple[int, int]:
        """(live, attack) counts that enter the error rates."""
        return (self.live, self.attack) if self.as_rejected else (0, 0)


def level_metrics(table: pd.DataFrame, source_threshold: float | None = None,
                  failures: Acquisition | None = None) -> dict:
    """Every metric of one table of scores (frames, or videos): AUC, EER, HTER at the table's own EER
    threshold, the operating points and, when ``source_threshold`` is given, HTER, APCER per attack and worst,
    BPCER and ACER there. ``failures``: presentations without a usable face (counted, and with
    ``as_rejected`` entering APCER's and BPCER's denominators as rejected ones)."""
    failures = failures or Acquisition()
    fta_live, fta_attack = failures.counted()
    scores, labels, attacks = table["score"].to_numpy(), table["label"].to_numpy(), table["attack"].to_numpy()
    rate, oracle = eer(scores, labels)
    entry = {"samples": int(len(table)), "auc": auc(scores, labels), "eer": rate,
             "oracle_threshold": oracle, "hter_at_target_eer_threshold": error_rates(scores, labels, oracle).hter,
             **operating_points(scores, labels, fta_live, fta_attack),
             "failure_to_acquire": {"live": failures.live, "attack": failures.attack,
                                    "counted_as_rejected": failures.as_rejected}}
    if source_threshold is not None:
        kinds = species(attacks, table["attack_detail"] if "attack_detail" in table else [""] * len(table))
        per_family = _apcer_counted(scores, labels, attacks, source_threshold, failures, by_family=True)
        per_species = _apcer_counted(scores, labels, kinds, source_threshold, failures, by_family=False)
        accepted_attack = int((scores[labels == 0] >= source_threshold).sum())
        rejected_live = int((scores[labels == 1] < source_threshold).sum())
        far = accepted_attack / ((labels == 0).sum() + fta_attack)
        frr = (rejected_live + fta_live) / ((labels == 1).sum() + fta_live)
        worst = max(per_species.values())
        entry.update({"source_threshold": float(source_threshold), "hter_at_source_threshold": (far + frr) / 2,
                      "apcer": per_family, "apcer_family_worst": max(per_family.values()),
                      "apcer_species": per_species, "apcer_worst": worst, "bpcer": frr, "acer": (worst + frr) / 2})
    return entry


def _apcer_counted(scores, labels, kinds, threshold: float, failures: Acquisition, by_family: bool) -> dict:
    """APCER per attack family or species; failures to acquire counted as rejected when asked for."""
    rates = apcer_by_attack(scores, labels, kinds, threshold)
    if not failures.as_rejected:
        return rates
    counts = {str(k): int(n) for k, n in zip(*np.unique(np.asarray(kinds)[np.asarray(labels) == 0],
                                                         return_counts=True))}
    extra: dict = {}
    for kind, family, n in failures.attacks:
        key = family if by_family else kind
        extra[key] = extra.get(key, 0) + n
    return {k: rates.get(k, 0.0) * counts.get(k, 0) / (counts.get(k, 0) + extra.get(k, 0))
            for k in sorted(set(rates) | set(extra))}


def report(frames: pd.DataFrame, source_threshold: float | None = None,
           video_source_threshold: float | None = None, fusion: str = "mean",
           failures: dict | None = None) -> dict:
    """Every metric at frame and video level. ``frames`` has video_id, label (1 live), attack, optionally
    attack_detail, and score. HTER is given at the target's own EER threshold (what the papers report: it
    looks at the test labels) and at thresholds fixed on source data (what a deployment gets):
    ``source_threshold`` for frames, ``video_source_threshold`` (from video-level validation scores, fused the
    same way) for videos. ``failures``: {"frame": Acquisition, "video": Acquisition}."""
    failures = failures or {}
    return {"fusion": fusion,
            "frame": level_metrics(frames, source_threshold, failures.get("frame")),
            "video": level_metrics(video_level(frames, fusion), video_source_threshold, failures.get("video"))}


def operating_summary(entry: dict) -> str:
    """One line of a level's operating points: BPCER at APCER = 1/5/10%, APCER at BPCER = 1/5/10%, TPR at
    FPR = 1/0.1% (in %)."""
    def pct(value):
        return "n/a" if value is None else f"{100 * value:.1f}"
    parts = [f"BPCER@APCER{k} {pct(v['bpcer'])}" for k, v in entry["bpcer_at_apcer"].items()]
    parts += [f"APCER@BPCER{k} {pct(v['apcer'])}" for k, v in entry["apcer_at_bpcer"].items()]
    parts += [f"TPR@FPR{k} {pct(v['tpr'])}" for k, v in entry["tpr_at_fpr"].items()]
    fta = entry.get("failure_to_acquire")
    if fta and (fta["live"] or fta["attack"]):
        parts.append(f"failures to acquire: {fta['live']} live, {fta['attack']} attack"
                     + (" (counted as rejected)" if fta["counted_as_rejected"] else ""))
    return "  ".join(parts) + " (%)"


def compared_metrics(result: dict, level: str) -> tuple[dict, str]:
    """The metrics a report's method is compared by, and their level: its video branch's when that is the
    method's own number (``compared: video_branch``, CCDD's full model), else the ``level`` ("video" or
    "frame") of its frame scores."""
    if result.get("compared") == "video_branch":
        return result["metrics"]["video_branch"], "video branch"
    return result["metrics"][level], level
