"""``fas-train predict``: score new videos and images with a run (``--run``) or an exported model (``--model``).

Each input goes through the preprocessing its build applied, read from the build manifest (or the model's
preprocessing.json): the frame policy, MTCNN with the build's sizing (``--sizing DATASET`` picks a dataset's
own), the upright search, the crop template and size, the channels, and (for methods that read it) the depth
estimate. Faces are scored in batches, on CUDA when present. Per input, ``<name>.csv`` (one row per sampled
frame: whether a face was found, its face score and box, the live score and the decision at the deployable
frame threshold, or why the frame failed to acquire) and ``<name>.json`` (the input's fused score and decision at
the deployable video threshold, or "failure to acquire" when no frame had a usable face; CCDD's video branch
beside it); ``predictions.csv`` and ``predictions.json`` sum up every input, and ``histogram.png`` shows the
inputs' scores against the threshold. An input that cannot be read is reported and skipped; the others go on.
"""
from __future__ import annotations

import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from pipeline.atomic import atomic_path, write_json
from pipeline.config import DepthConfig, FaceConfig, FrameConfig
from pipeline.extract import depth_estimates, detect_together, usable_faces
from pipeline.faces import FaceDetector, crop_face, find_upright
from pipeline.frames import VideoError, read_frames
from pipeline.hashing import sha256_file
from pipeline.channels import channels as face_channels

from .data import stack_inputs
from .metrics import video_level

VIDEO_SUFFIXES = {".avi", ".mov", ".mp4", ".m4v", ".mkv", ".wmv", ".3gp", ".webm", ".mpg", ".mpeg", ".flv"}
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"}
FAILED = "failure to acquire"


class InputError(RuntimeError):
    """An input that cannot be read as a video or an image."""


@dataclass
class Preprocessing:
    """The build's settings, as sections, and the models they need (loaded once)."""

    frames: FrameConfig
    face: FaceConfig
    depth: DepthConfig
    backend: str | None
    detector: FaceDetector
    landmarks: object = None

    @classmethod
    def of(cls, spec: dict, channels: tuple, sizing: str | None, device: str) -> "Preprocessing":
        face = FaceConfig(**spec["face"])
        if sizing is not None:
            if sizing not in face.sizing:
                raise ValueError(f"--sizing {sizing}: the build sized no dataset so; its own sizings: "
                                 f"{sorted(face.sizing) or 'none (every dataset used the face settings)'}")
            face = face.for_dataset(sizing)
        depth = DepthConfig(**spec["depth"])
        backend = spec.get("depth_backend")
        landmarks = None
        if "depth_estimate" in channels:  # the method reads depth estimates: the build's 3D face model makes them
            from pipeline.depth import FanLandmarks
            from pipeline.face_mesh import FaceMeshLandmarks
            landmarks = (FanLandmarks(depth.weights_dir, device) if backend == "face-alignment"
                         else FaceMeshLandmarks() if backend == "mediapipe" else None)
        return cls(FrameConfig(**spec["frames"]), face, depth, backend, FaceDetector(face, device), landmarks)


def expand_inputs(paths: list) -> list[Path]:
    """Files to score: each path given, and the videos and images under each folder (sorted, recursive)."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in
                            VIDEO_SUFFIXES | IMAGE_SUFFIXES)
        else:
            found.append(path)
    return found


def read_input(path: Path, frames: FrameConfig) -> tuple[str, list, list]:
    """(kind, RGB frames, their indices) of a video (the build's frame policy) or an image (its one frame)."""
    if not path.is_file():
        raise InputError(f"{path}: no such file")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise InputError(f"{path}: not an image OpenCV can read")
        return "image", [cv2.cvtColor(image, cv2.COLOR_BGR2RGB)], [0]
    try:
        decoded = read_frames(path, frames)
    except VideoError as err:
        raise InputError(str(err)) from None
    return "video", decoded.frames, decoded.indices


def acquire(path: Path, prep: Preprocessing, channels: tuple, size: int):
    """(kind, rows per sampled frame, uint8 inputs of the usable faces, rotation) of one input."""
    kind, frames, indices = read_input(path, prep.frames)
    detections = detect_together(prep.detector, [frames])[0]
    rotation = 0
    if prep.face.orientation == "auto":
        rotation, frames, detections, _ = find_upright(prep.detector, frames, detections, prep.face.min_score)
    faces, rejects = usable_faces(frames, indices, detections, prep.face)
    crops = [crop_face(frame, matrix, prep.face.size, prep.face.template) for frame, _, _, matrix in faces]
    arrays = {c: [] for c in channels}
    if "depth_estimate" in channels:
        estimates = depth_estimates(faces, crops, prep.backend, prep.landmarks, prep.face, prep.depth)
        kept = [i for i, (estimate, _) in enumerate(estimates) if estimate is not None]
        rejects += [(faces[i][1], why) for i, (estimate, why) in enumerate(estimates) if estimate is None]
        faces, crops = [faces[i] for i in kept], [crops[i] for i in kept]  # as the build: no map, no sample
        arrays["depth_estimate"] = [estimates[i][0][None] for i in kept]
    for crop in crops:
        made = face_channels(crop, prep.face.hsv)
        for c in channels:
            if c != "depth_estimate":
                arrays[c].append(made[c])
    reasons = dict(rejects)
    scored = {index for _, index, _, _ in faces}
    rows = []
    for index, det in zip(indices, detections):  # det: the most confident face, kept or not
        box = det.box if det is not None else [np.nan] * 4
        rows.append({"frame_index": int(index), "face": index in scored,
                     "face_score": float(det.score) if det is not None else np.nan,
                     "x1": float(box[0]), "y1": float(box[1]), "x2": float(box[2]), "y2": float(box[3]),
                     "failure": reasons.get(index, "")})
    inputs = (stack_inputs({c: np.stack(v) for c, v in arrays.items()}, channels, size) if crops
              else torch.zeros(0, 3 * len(channels), size, size, dtype=torch.uint8))
    return kind, rows, inputs, rotation


def output_names(inputs: list[Path]) -> list[str]:
    """A distinct file stem per input: its name without suffix, with as many parent folders before it (joined
    by ``__``) as it takes to tell it from the other inputs; the same file given twice gets ``.1``, ``.2``."""
    parts = [[p for p in path.with_suffix("").parts if p not in ("/", "..", ".")] or ["input"] for path in inputs]

    def suffix(k: int, i: int) -> str:
        return "__".join(parts[i][-k:])

    counts: dict = {}  # k -> how many inputs share each k-component suffix

    def shared(k: int, i: int) -> bool:
        if k not in counts:
            counts[k] = Counter(suffix(k, j) for j in range(len(parts)))
        return counts[k][suffix(k, i)] > 1

    names, seen = [], {}
    for i in range(len(parts)):
        k = 1
        while k < len(parts[i]) and shared(k, i):
            k += 1
        stem = suffix(k, i)
        count = seen.get(stem, 0)
        seen[stem] = count + 1
        names.append(stem if count == 0 else f"{stem}.{count}")
    return names


def predict(scorer, inputs: list, out: Path, sizing: str | None = None, batch_size: int = 64,
            quiet: bool = False) -> dict:
    """Score ``inputs`` (files and folders) with ``scorer`` (:mod:`fas_train.scorers`), writing per-input CSV
    and JSON and the predictions table to ``out``; return the summary."""
    paths = expand_inputs(inputs)
    if not paths:
        raise FileNotFoundError(f"no videos or images in {', '.join(map(str, inputs))}")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    prep = Preprocessing.of(scorer.preprocessing, scorer.channels, sizing, scorer.device)
    thresholds, started, frames_seen = scorer.thresholds, time.perf_counter(), 0
    summary_rows, errors = [], []
    bar = tqdm(total=len(paths), unit="input", desc="predict", disable=quiet, dynamic_ncols=True)
    for path, name in zip(paths, output_names(paths)):
        try:
            kind, rows, faces, rotation = acquire(path, prep, scorer.channels, scorer.size)
        except (InputError, OSError, ValueError) as err:
            errors.append(str(err))
            summary_rows.append({"input": str(path), "kind": "unreadable", "error": str(err)})
            tqdm.write(f"error: {err}", file=sys.stderr)
            bar.update(1)
            continue
        scores = scorer.score_faces(faces, batch_size)
        frames_seen += len(rows)
        table = pd.DataFrame(rows)
        table.insert(0, "input", str(path))
        table["score"] = np.nan
        table.loc[table["face"], "score"] = scores
        table["decision"] = np.where(~table["face"], FAILED,
                                     np.where(table["score"] >= thresholds["frame"], "live", "spoof"))
        result = _input_result(path, kind, table, scores, faces, scorer, rotation)
        with atomic_path(out / f"{name}.csv") as tmp:
            table.to_csv(tmp, index=False)
        write_json(out / f"{name}.json", result)
        summary_rows.append({k: result[k] for k in ("input", "kind", "frames_sampled", "frames_scored", "score",
                                                     "threshold", "decision")} | {"error": ""})
        bar.set_postfix(frames=frames_seen, refresh=False)
        bar.update(1)
    bar.close()
    seconds = time.perf_counter() - started
    table = pd.DataFrame(summary_rows)
    with atomic_path(out / "predictions.csv") as tmp:
        table.to_csv(tmp, index=False)
    decisions = table["decision"] if "decision" in table else pd.Series("", index=table.index)  # all unreadable
    counts = decisions.value_counts().to_dict()
    summary = {"inputs": len(paths), "live": int(counts.get("live", 0)), "spoof": int(counts.get("spoof", 0)),
               "failure_to_acquire": int(counts.get(FAILED, 0)), "unreadable": len(errors), "errors": errors,
               "frames": frames_seen, "seconds": round(seconds, 3),
               "frames_per_second": round(frames_seen / seconds, 2) if seconds else None,
               "model": scorer.description, "thresholds": thresholds, "fusion": scorer.fusion,
               "out": str(out)}
    write_json(out / "predictions.json", summary)
    scored = table[decisions.isin(["live", "spoof"])]
    if len(scored):
        from .plots import plot_unlabelled
        plot_unlabelled(scored["score"].to_numpy(float), out / "histogram.png", thresholds, scored["kind"].to_numpy())
    return summary


def _input_result(path: Path, kind: str, table: pd.DataFrame, scores: np.ndarray, faces, scorer,
                  rotation: int) -> dict:
    """The per-input JSON: fused score and decision at the level's deployable threshold, failures counted."""
    level = "frame" if kind == "image" else "video"
    threshold = scorer.thresholds[level]
    result = {"input": str(path), "sha256": sha256_file(path), "kind": kind, "frames_sampled": int(len(table)),
              "frames_scored": int(len(scores)), "failure_to_acquire_frames": int((~table["face"]).sum()),
              "rotation": rotation, "fusion": scorer.fusion, "threshold": threshold, "threshold_level": level}
    if len(scores):
        fused = video_level(pd.DataFrame({"video_id": 0, "label": 0, "attack": "", "score": scores}),
                            scorer.fusion)["score"].iloc[0] if kind == "video" else scores[0]
        result.update(score=float(fused), decision="live" if fused >= threshold else "spoof")
    else:
        result.update(score=None, decision=FAILED)
    if scorer.video is not None and kind == "video" and len(scores):
        branch = scorer.score_video(faces)
        result["video_branch"] = {"score": branch, "threshold": scorer.thresholds.get("video_branch"),
                                  "decision": "live" if branch >= scorer.thresholds.get("video_branch", 0.5)
                                  else "spoof"}
    return result
