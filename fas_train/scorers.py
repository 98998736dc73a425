"""What scores new faces: a run's own networks (``--run``) or an exported model (``--model``), behind one
interface (:class:`Scorer`), with the preprocessing and deployable thresholds that go with them."""
from __future__ import annotations

import json
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from pipeline.hashing import sha256_file


@dataclass
class Scorer:
    """Scores uint8 faces stacked as the build's shards hold them (N x 3K x S x S)."""

    image: object  # faces -> live probabilities (N,)
    video: object | None  # (1, L, 3K, S, S) -> (1,), for methods with a video branch
    channels: tuple
    size: int  # the stored crop side S
    input_size: int  # the network's input side (0: S)
    thresholds: dict  # frame, video (fused frame scores) and video_branch, fixed on source validation
    fusion: str  # how frame scores make a video's: mean, median, max or min
    preprocessing: dict  # the build's frames, face and depth settings and depth backend
    description: dict = field(default_factory=dict)  # method, options, thresholds, provenance
    method: object = None  # the run's method (None for an exported model)
    device: str = "cpu"

    @torch.no_grad()
    def score_faces(self, faces: torch.Tensor, batch_size: int = 64) -> np.ndarray:
        """Live probability of each face, ``batch_size`` at a time."""
        out = [self.image(faces[i:i + batch_size].to(self.device)).float().cpu().numpy()
               for i in range(0, len(faces), batch_size)]
        return np.concatenate(out) if out else np.zeros(0, np.float32)

    @torch.no_grad()
    def score_video(self, faces: torch.Tensor) -> float:
        """The video branch's live probability of one video's faces in frame order."""
        return float(self.video(faces[None].to(self.device)).float().cpu()[0])


def preprocessing_of(manifest: dict) -> dict:
    """What a build did to each video before its faces reached the shards, from its manifest."""
    config = manifest["config"]
    return {"build": manifest["build"], "config_hash": manifest["config_hash"],
            "frames": config["frames"], "face": config["face"],
            "depth": {k: v for k, v in config["depth"].items() if k != "weights_dir"},
            "depth_backend": manifest.get("depth_backend"), "depth_model": manifest.get("depth_model")}


def run_scorer(run: Path, build: str | None = None, device: str = "cpu") -> Scorer:
    """A finished run's best checkpoint as a :class:`Scorer` (its build is read for the preprocessing and the
    source domains the networks were made for)."""
    from .checkpoint import check_same_build, load_verified, resolve_build, saved_run
    from .inputs import run_data
    from .runtime import resolve_device
    from .settings import build_method, resolved
    report_path = run / "report.json"
    if not (run / "run.json").is_file() or not (run / "best.pt").is_file():
        raise FileNotFoundError(f"{run}: not a run folder (run.json and best.pt are needed)")
    if not report_path.is_file():
        raise FileNotFoundError(f"{report_path}: not there; the run has not finished (train it to the end, or "
                                f"run `fas-train eval --run {run}`)")
    started, cfg = saved_run(run)
    cfg = replace(cfg, build=resolve_build(run, cfg.build) if build is None else str(Path(build).resolve()),
                  device=device)
    check_same_build(run, started, cfg.build)
    manifest, protocol, channels, parts = run_data(cfg)
    method = build_method(cfg, sorted(set(parts[0][1].domains.tolist())))
    method.load_state_dict(load_verified(run / "best.pt", map_location="cpu"))
    cfg = resolved(cfg, method)
    method = method.to(resolve_device(device)).eval()
    report = json.loads(report_path.read_text())
    thresholds = {"frame": report["deployable_threshold"], "video": report["deployable_video_threshold"]}
    if "deployable_video_branch_threshold" in report:
        thresholds["video_branch"] = report["deployable_video_branch_threshold"]
    fusion = report.get("fusion", "mean")
    size = int(manifest["config"]["face"]["size"])
    from .export import ImageScorer, VideoScorer
    description = {"method": cfg.method, "options": list(cfg.options), "hparams": method.hparams(),
                   "network": cfg.network, "thresholds": thresholds, "fusion": fusion,
                   "provenance": {"run_json_sha256": sha256_file(run / "run.json"),
                                  "best_pt_sha256": sha256_file(run / "best.pt"),
                                  "build": manifest["build"], "config_hash": manifest["config_hash"],
                                  "build_manifest_content_sha256": started.get("build_manifest_content_sha256"),
                                  "protocol": report["protocol"], "variant": report["variant"],
                                  "selection": report["selection"], "best_step": report["best_step"],
                                  "trained_by": started.get("code"), "pretrained": method.provenance}}
    return Scorer(ImageScorer(method, cfg.input_size), VideoScorer(method, cfg.input_size) if method.clip_length
                  else None, tuple(channels), size, cfg.input_size, thresholds, fusion, preprocessing_of(manifest),
                  description, method, str(resolve_device(device)))


def model_scorer(folder: Path, device: str = "cpu") -> Scorer:
    """An exported model folder as a :class:`Scorer`."""
    from .export import load_model
    from .runtime import resolve_device
    device = str(resolve_device(device))
    model = load_model(folder, device)
    spec = model.spec
    return Scorer(model.image_scorer, model.video_scorer, tuple(spec["input"]["channels"]),
                  int(spec["input"]["stored_size"]), int(spec["input"]["input_size"]), spec["thresholds"],
                  spec["fusion"], model.preprocessing, {k: spec[k] for k in ("method", "options", "provenance")},
                  None, device)
