"""A run's final report: the kept checkpoint scored on the protocol's target at the source thresholds
(``scores.csv``, ``video_scores.csv``, ``report.json``, the ROC plot), with the target's failures to acquire;
and ``fas-train eval`` of a run folder."""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from pipeline.atomic import atomic_path, write_json

from .checkpoint import check_same_build, load_checkpoint, load_verified, resolve_build, saved_run
from .inputs import check_build, run_data
from .metrics import Acquisition, level_metrics, report, species
from .runtime import resolve_device, use_bf16
from .scoring import frame_table, score, video_scores
from .selection import branch_thresholds, selection_name, selection_scores, thresholds
from .settings import build_method, resolved


def final_report(cfg, device, method, state, target_set, target_rows, out, protocol, val_set, val_rows) -> dict:
    """Score the target with the kept checkpoint (``best.pt``) at its source thresholds; write ``scores.csv``,
    ``video_scores.csv`` (methods with a video branch), ``report.json`` and the plots; return the report."""
    method.load_state_dict(load_verified(out / "best.pt", map_location=device))
    best = state["best"]
    if best.get("fusion", "mean") != cfg.fusion or "video_threshold" not in best:  # another fusion asked for
        #                                  at evaluation, or a checkpoint from before video-level thresholds
        best = {**best, **thresholds(selection_scores(method, cfg, device, val_set, val_rows, target_set,
                                                      target_rows), cfg.fusion)}
    frames = frame_table(target_rows, score(method, target_set, cfg, device))
    with atomic_path(out / "scores.csv") as tmp:
        frames.to_csv(tmp, index=False)
    failures = acquisition_failures(cfg.build, protocol, target_rows, cfg.fta_rejected)
    metrics = report(frames, source_threshold=best["threshold"], video_source_threshold=best["video_threshold"],
                     fusion=cfg.fusion, failures=failures)
    branch_threshold = None
    if method.clip_length:  # the video branch scores whole videos; its threshold comes from source videos
        if "video_branch_threshold" not in best:
            best = {**best, **branch_thresholds(video_scores(method, val_set, cfg, device))}
        branch_threshold = best["video_branch_threshold"]
        videos = video_scores(method, target_set, cfg, device)
        with atomic_path(out / "video_scores.csv") as tmp:
            videos.to_csv(tmp, index=False)
        metrics["video_branch"] = level_metrics(videos, branch_threshold, failures["video"])
    selected_on = [k for k in ("eer", "auc", "video_eer", "video_auc", "video_branch_eer", "video_branch_auc") if k in best]
    result = {"protocol": protocol.name, "protocol_group": protocol.group, "variant": protocol.variant,
              "method": cfg.method, "selection": selection_name(cfg, protocol), "steps": int(state["step"]),
              "best_step": best["step"], "compared": "video_branch" if method.scores_videos else "frame_scores",
              "selection_scores": {k: best[k] for k in selected_on},  # at the kept checkpoint
              "deployable_threshold": best["threshold"], "deployable_video_threshold": best["video_threshold"],
              **({"deployable_video_branch_threshold": branch_threshold} if branch_threshold is not None else {}),
              "fusion": cfg.fusion, "fta_rejected": cfg.fta_rejected,
              "provenance": method.provenance, "precision": "bf16" if use_bf16(cfg, device) else "fp32",
              "metrics": metrics}
    write_json(out / "report.json", result)
    from .plots import plot_scores
    plot_scores(frames, out, f"{cfg.method} {protocol.name} ({protocol.variant})", cfg.fusion,
                {"frame": best["threshold"], "video": best["video_threshold"]})
    return result


def acquisition_failures(build: str, protocol, target_rows: pd.DataFrame, as_rejected: bool) -> dict:
    """The target's presentations without a usable face, at frame level (frames the build rejected, of
    videos the protocol tests on) and video level (those videos with no sample left), from the build's
    rejects.csv and sources.csv: {"frame": Acquisition, "video": Acquisition}."""
    folder = Path(build)
    paths = (folder / "sources.csv", folder / "rejects.csv")
    if not all(p.is_file() for p in paths):  # builds older than their manifest folder's tables
        return {"frame": Acquisition(as_rejected=as_rejected), "video": Acquisition(as_rejected=as_rejected)}
    sources = pd.read_csv(paths[0], dtype=str, keep_default_na=False)
    rejects = pd.read_csv(paths[1], dtype=str, keep_default_na=False)
    tested = protocol.target_samples(sources).set_index("video_id")
    rejected = rejects[(rejects["action"] == "rejected") & rejects["video_id"].isin(tested.index)]
    frame_rows = tested.loc[rejected.loc[rejected["frame_index"].astype(int) >= 0, "video_id"]]
    video_rows = tested[~tested.index.isin(target_rows["video_id"])]
    return {"frame": _acquisition(frame_rows, as_rejected), "video": _acquisition(video_rows, as_rejected)}


def _acquisition(rows: pd.DataFrame, as_rejected: bool) -> Acquisition:
    """Counts of presentations (rows of a source table) by live and attack species."""
    attacks = rows[rows["label"] != "live"]
    kinds = species(attacks["attack"], attacks["attack_detail"]) if len(attacks) else []
    counted = pd.Series(list(zip(kinds, attacks["attack"]))).value_counts() if len(attacks) else {}
    return Acquisition(int((rows["label"] == "live").sum()),
                       tuple(sorted((str(k), str(f), int(n)) for (k, f), n in dict(counted).items())), as_rejected)


def evaluate_run(out: Path, verify: bool = True, build: str | Path | None = None, fusion: str | None = None,
                 fta_rejected: bool | None = None) -> dict:
    """Evaluate a finished (or interrupted) run's best checkpoint on its protocol's target (after checking the
    build against its manifest, unless ``verify`` is false). ``build``: where the run's build is now (a moved
    or copied build, accepted when its manifest content is the one the run was trained on). ``fusion`` and
    ``fta_rejected``: other settings than the run's for the frame-to-video fusion (the video threshold is then
    fixed again on the validation scores) and the failures to acquire."""
    meta_path = out / "run.json"
    if not meta_path.is_file() or not (out / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"{out}: not a run folder (run.json and checkpoint.pt are needed)")
    started, cfg = saved_run(out)
    build = resolve_build(out, cfg.build) if build is None else str(Path(build).resolve())
    cfg = replace(cfg, build=build, verify=verify, fusion=cfg.fusion if fusion is None else fusion,
                  fta_rejected=cfg.fta_rejected if fta_rejected is None else fta_rejected)
    check_same_build(out, started, cfg.build)
    check_build(cfg)
    device = resolve_device(cfg.device)
    _, protocol, _, parts = run_data(cfg)
    (_, train_set), (val_rows, val_set), (target_rows, target_set) = parts
    method = build_method(cfg, sorted(set(train_set.domains.tolist()))).to(device)
    cfg = resolved(cfg, method)
    state = load_checkpoint(out / "checkpoint.pt", method, per_epoch=1)  # evaluation ignores the position
    return final_report(cfg, device, method, state, target_set, target_rows, out, protocol, val_set, val_rows)
