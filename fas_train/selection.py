"""Honest model selection: every ``eval_every`` steps the source validation part (the protocol's holdout) is
scored and the best checkpoint (lowest validation EER, then highest AUC, of the method's own number: its
frame scores, or the video branch's per-video scores for a method whose number that is, ``ccdd-video``) and
its EER thresholds (the deployable ones) are kept. The target is looked at only once, at the end, unless
``select_on_target`` (the oracle mode of the public code) is asked for, which every output then says."""
from __future__ import annotations

import pandas as pd

from .checkpoint import save_verified
from .metrics import auc, eer, video_level
from .metrics_log import log
from .scoring import frame_table, score, video_scores
from .settings import RunConfig


def selection_name(cfg: RunConfig, protocol) -> str:
    return ("ORACLE: checkpoint selected on the target test set" if cfg.select_on_target else protocol.selection)


def selection_scores(method, cfg, device, val_set, val_rows, target_set, target_rows) -> pd.DataFrame:
    """The frame scores model selection looks at: source validation, or the target in ORACLE mode."""
    if cfg.select_on_target:
        return frame_table(target_rows, score(method, target_set, cfg, device))
    return frame_table(val_rows, score(method, val_set, cfg, device))


def thresholds(frames: pd.DataFrame, fusion: str = "mean") -> dict:
    """EER, AUC and EER threshold of frame scores, and the EER, AUC and threshold of their video-level scores
    (frame scores fused by ``fusion``): each level's deployable threshold comes from that level's validation
    scores."""
    labels = frames["label"].to_numpy()
    rate, threshold = eer(frames["score"].to_numpy(), labels)
    videos = video_level(frames, fusion)
    video_rate, video_threshold = eer(videos["score"].to_numpy(), videos["label"].to_numpy())
    return {"eer": rate, "auc": auc(frames["score"].to_numpy(), labels), "threshold": threshold,
            "video_eer": video_rate, "video_auc": auc(videos["score"].to_numpy(), videos["label"].to_numpy()),
            "video_threshold": video_threshold, "fusion": fusion}


def branch_thresholds(videos: pd.DataFrame) -> dict:
    """EER, AUC and EER threshold of a video branch's scores (one per video)."""
    scores, labels = videos["score"].to_numpy(), videos["label"].to_numpy()
    rate, threshold = eer(scores, labels)
    return {"video_branch_eer": rate, "video_branch_auc": auc(scores, labels), "video_branch_threshold": threshold}


def selection_keys(method) -> tuple[str, str]:
    """The (EER, AUC) entries model selection ranks checkpoints by: the video branch's for a method whose own
    number it is, else the frame scores'."""
    return ("video_branch_eer", "video_branch_auc") if method.scores_videos else ("eer", "auc")


def evaluate_and_select(method, cfg, device, state, val_set, val_rows, target_set, target_rows, out):
    frames = selection_scores(method, cfg, device, val_set, val_rows, target_set, target_rows)
    entry = {"step": state["step"], "kind": "select_on_target" if cfg.select_on_target else "validation",
             **thresholds(frames, cfg.fusion)}
    if method.scores_videos:  # the video branch on the same videos (source validation, or the target if ORACLE)
        entry.update(branch_thresholds(video_scores(method, target_set if cfg.select_on_target else val_set,
                                                    cfg, device)))
    log(out, entry)
    best = state["best"]
    rate, area = selection_keys(method)
    if best is None or rate not in best or (entry[rate], -entry[area]) < (best[rate], -best[area]):
        state["best"] = entry
        save_verified(out / "best.pt", method.state_dict())
