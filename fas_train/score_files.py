"""Score files for ``fas-train metrics``, from this trainer or from elsewhere.

Columns read (higher score = more likely live):

- ours (a run's ``scores.csv`` or ``video_scores.csv``): ``label`` (1 or ``live`` for bona fide, 0 or ``spoof``
  for attacks), ``score``, optionally ``attack`` (family), ``attack_detail`` (species), ``video_id`` (rows of
  one video are fused into its video-level score) and ``frame_index``;
- bob.pad's score CSV: ``is_bonafide`` (True/False), ``attack_type`` (the species; empty for bona fide) and
  ``score``; each row is one presentation.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .metrics import level_metrics, operating_summary, threshold_from, video_level

TRUE = {"true", "1", "yes", "live", "bonafide", "bona fide", "genuine", "real"}
FALSE = {"false", "0", "no", "spoof", "attack", "fake"}


def read_scores(path: Path) -> pd.DataFrame:
    """A score file as columns label (1 live), attack, attack_detail, score (and video_id when it has one)."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: score file not found")
    raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    if "score" not in raw or not ({"label", "is_bonafide"} & set(raw.columns)):
        raise ValueError(f"{path}: a score file needs a score column and label (ours) or is_bonafide (bob.pad); "
                         f"it has {list(raw.columns)}")
    if raw.empty:
        raise ValueError(f"{path}: holds no scores (a header only)")
    bob = "is_bonafide" in raw
    flags = raw["is_bonafide" if bob else "label"].str.strip().str.lower()
    unknown = sorted(set(flags) - TRUE - FALSE)
    if unknown:
        raise ValueError(f"{path}: {'is_bonafide' if bob else 'label'} values {unknown[:5]} are neither bona fide "
                         f"(True, 1, live) nor attack (False, 0, spoof)")
    try:
        scores = raw["score"].astype(float)
    except ValueError:
        raise ValueError(f"{path}: the score column holds values that are not numbers") from None
    label = flags.isin(TRUE).astype(int)
    if label.nunique() == 1:
        raise ValueError(f"{path}: only {'bona fide' if label.iloc[0] else 'attack'} presentations ({len(label)}); "
                         f"metrics, and a threshold fixed on the file, need both")
    if bob:
        kind = raw.get("attack_type", pd.Series([""] * len(raw))).str.strip()
        attack, detail = np.where(label == 1, "none", kind.replace("", "attack")), [""] * len(raw)
    else:
        attack = raw["attack"] if "attack" in raw else np.where(label == 1, "none", "attack")
        detail = raw["attack_detail"] if "attack_detail" in raw else [""] * len(raw)
    table = pd.DataFrame({"label": label, "attack": attack, "attack_detail": detail, "score": scores})
    if "video_id" in raw:
        table.insert(0, "video_id", raw["video_id"])
    return table


def levels_of(table: pd.DataFrame, fusion: str) -> dict:
    """The file's levels: frames and their fused videos where it has video ids, else presentations."""
    if "video_id" not in table:
        return {"presentation": table}
    if table["video_id"].duplicated().any():
        return {"frame": table, "video": video_level(table, fusion)}
    return {"video": table}


def score_file_metrics(scores: Path, dev: Path | None = None, criterion: str = "eer", fusion: str = "mean",
                       plots: str | None = None) -> dict:
    """Every metric of a score file at each of its levels, at the threshold ``criterion`` fixes on ``dev`` (the
    development scores; without them, on the scores themselves, which is an oracle threshold and said so)."""
    test = levels_of(read_scores(scores), fusion)
    development = levels_of(read_scores(dev), fusion) if dev is not None else test
    out = {"scores": str(scores), "dev": None if dev is None else str(dev), "threshold_from": criterion,
           "threshold_on": "development scores" if dev is not None else "the scores themselves (oracle)",
           "fusion": fusion, "levels": {}}
    for level, table in test.items():
        if level not in development:
            raise ValueError(f"{dev}: has no {level} level to fix the threshold of {scores}'s {level} scores")
        fixed = development[level]
        threshold = threshold_from(criterion, fixed["score"].to_numpy(), fixed["label"].to_numpy())
        out["levels"][level] = level_metrics(table, threshold)
    if plots:
        from .plots import plot_scores
        Path(plots).mkdir(parents=True, exist_ok=True)
        table = next(iter(test.values())) if "frame" not in test else test["frame"]
        plot_scores(table, Path(plots), Path(scores).name, fusion,
                    {level: entry["source_threshold"] for level, entry in out["levels"].items()})
    return out


def format_metrics(result: dict) -> str:
    """The metrics as text, one block per level."""
    lines = [f"{result['scores']}: threshold by {result['threshold_from']} on {result['threshold_on']}"]
    for level, m in result["levels"].items():
        species = ", ".join(f"{k} {100 * v:.1f}" for k, v in m["apcer_species"].items())
        lines += [f"  {level} level ({m['samples']} samples): AUC {m['auc']:.4f}  EER {100 * m['eer']:.2f}%",
                  f"    at threshold {m['source_threshold']:.6g}: HTER {100 * m['hter_at_source_threshold']:.2f}%  "
                  f"APCER (worst species) {100 * m['apcer_worst']:.2f}%  BPCER {100 * m['bpcer']:.2f}%  "
                  f"ACER {100 * m['acer']:.2f}%",
                  f"    APCER per species (%): {species}",
                  f"    {operating_summary(m)}"]
    return "\n".join(lines)
