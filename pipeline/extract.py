"""Per-video face extraction, run on dask workers: decode and sample frames, detect, crop, depth, channels.

Each video's result is two files, named by the video's sha256 (so a changed source is extracted again), each
written atomically: its images (``.npz``: the arrays that go into the shards), then its record (``.json``:
frame indices, depth sources, rejects and metadata, with its own sha256). The record marks the video
finished: it is never redone. The build removes the images once the shards holding them are committed
(pipeline.tasks.WriteShards); the record stays. A video that cannot be decoded is recorded
as a reject; a missing source file, or one whose bytes no longer hash to the index's sha256, raises (that is
not a property of the data, so it is not recorded).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_json
from .channels import channels
from .config import BuildConfig, DepthConfig, FaceConfig
from .depth import FanLandmarks, generic_depth, landmark_depth, to_uint8
from .face_mesh import FaceMeshLandmarks
from .faces import FaceDetector, crop_face, crop_matrix, find_upright, transform_points
from .frames import DecodedFrames, VideoError, read_frames, truncation
from .hashing import content_sha256, sha256_file

_MODELS: dict = {}  # per worker process: landmark network and a detector per sizing, loaded once


class ResultError(RuntimeError):
    """A per-video result file that cannot be read (truncated or changed after it was written)."""


class SourceChanged(RuntimeError):
    """A source file whose bytes differ from those the index hashed: the build would record the wrong file."""


@dataclass(frozen=True)
class VideoJob:
    video_id: str
    path: str
    label: str
    sha256: str
    dataset: str


class ImagesRemoved(ResultError):
    """A result whose images were removed after the shards holding them were committed."""


def result_path(build_dir: Path, job: VideoJob) -> Path:
    """Where a video's extraction result (its record) lives; its images are at :func:`images_path`."""
    return Path(build_dir) / "videos" / f"{job.video_id}.{job.sha256[:16]}.json"


def images_path(result: str | Path) -> Path:
    """The images file beside a result's record."""
    return Path(result).with_suffix(".npz")


def resolve_device(device: str) -> str:
    if device != "auto":
        return device
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


def _models(config: BuildConfig, backend: str, dataset: str):
    """This process's face detector for ``dataset``'s sizing and landmark model, each loaded once."""
    key = (config.config_hash(), backend)
    if key not in _MODELS:
        import torch
        torch.set_num_threads(max(1, config.compute.threads_per_worker))
        landmarks = (FanLandmarks(config.depth.weights_dir, resolve_device(config.compute.device))
                     if backend == "face-alignment" else FaceMeshLandmarks() if backend == "mediapipe" else None)
        _MODELS.clear()
        _MODELS[key] = ({}, landmarks)
    detectors, landmarks = _MODELS[key]
    face = config.face.for_dataset(dataset)
    sizing = (face.max_side, face.min_face_size)
    if sizing not in detectors:
        detectors[sizing] = FaceDetector(face, resolve_device(config.compute.device))
    return detectors[sizing], landmarks


def extract_video(job: VideoJob, config: BuildConfig, backend: str, build_dir: str) -> dict:
    """Extract one video to its result file (if not there yet); return a small summary."""
    outcome, = extract_videos([job], config, backend, build_dir, 1)
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


def extract_videos(jobs: list[VideoJob], config: BuildConfig, backend: str, build_dir: str,
                   videos_per_task: int) -> list:
    """Extract one task's videos (one dataset's, consecutive in index order, cut ``videos_per_task`` at a time)
    to their result files; return per video its summary, or the exception that stopped it (the others go on).

    Their frames are detected together, one detector call per frame size, so that a GPU gets many frames per
    call. The same videos always make the same batches (batched float arithmetic differs in the last bits
    with the batch): a task some of whose videos are finished decodes and detects them again, writing nothing
    for them; a task whose videos are all finished does nothing. Each result records the device and
    ``videos_per_task`` that detected its faces."""
    build_dir = Path(build_dir)
    if all(result_path(build_dir, job).exists() for job in jobs):
        return [summarize(result_path(build_dir, job), job) for job in jobs]
    outcomes = []
    for job in jobs:
        try:
            outcomes.append(_decode(job, config, build_dir))
        except Exception as err:  # noqa: BLE001 - reported per video by the build, which goes on
            outcomes.append(err)
    places = [i for i, o in enumerate(outcomes) if isinstance(o, DecodedClip)]
    if places:
        detector, landmarks = _models(config, backend, jobs[0].dataset)
        found = detect_together(detector, [outcomes[i].decoded.frames for i in places])
        for i, detections in zip(places, found):
            clip, out = outcomes[i], result_path(build_dir, outcomes[i].job)
            clip.meta["detection"] = {"device": detector.device, "videos_per_task": videos_per_task}
            try:
                outcomes[i] = summarize(out, clip.job) if out.exists() else \
                    _extract(clip, detections, detector, landmarks, config, backend, out)
            except Exception as err:  # noqa: BLE001 - as above
                outcomes[i] = err
    return outcomes


def detect_together(detector: FaceDetector, clips: list[list[np.ndarray]]) -> list[list]:
    """Detections for the frames of several clips: one detector call per frame size, in clip order."""
    by_shape: dict = {}
    for c, frames in enumerate(clips):
        for f, frame in enumerate(frames):
            by_shape.setdefault(frame.shape, []).append((c, f))
    found = [[None] * len(frames) for frames in clips]
    for places in by_shape.values():
        for (c, f), detection in zip(places, detector.detect([clips[c][f] for c, f in places])):
            found[c][f] = detection
    return found


@dataclass
class DecodedClip:
    """A video's sampled frames, ready for detection."""

    job: VideoJob
    decoded: DecodedFrames
    meta: dict


def _decode(job: VideoJob, config: BuildConfig, build_dir: Path) -> DecodedClip | dict:
    """A video's frames after checking its bytes against the index; a video that cannot be decoded or is
    rejected as truncated gets its result written here, and its summary is returned instead."""
    out = result_path(build_dir, job)
    if not os.path.exists(job.path):
        raise FileNotFoundError(f"{job.path}: source video is missing (indexed as {job.video_id})")
    digest = sha256_file(job.path)  # the bytes about to be decoded are the bytes the index hashed
    if digest != job.sha256:
        raise SourceChanged(f"{job.path}: changed since it was indexed (sha256 now {digest}, the index says "
                            f"{job.sha256}); index the dataset again if the new file is meant")
    try:
        decoded = read_frames(job.path, config.frames)
    except VideoError as err:  # recorded without the path: the video_id says which file it was
        if not out.exists():
            _save(out, _empty(config), [(-1, str(err).removeprefix(f"{job.path}: "))],
                  {"decoded_frames": 0, "header_frames": None})
        return summarize(out, job)
    truncated = truncation(decoded, config.frames)
    meta = {"decoded_frames": decoded.decoded_count, "header_frames": decoded.header_count, "truncated": truncated}
    if truncated and config.frames.truncated == "reject":
        if not out.exists():
            _save(out, _empty(config), [(-1, truncated)], meta)
        return summarize(out, job)
    return DecodedClip(job, decoded, meta)


def _extract(clip: DecodedClip, detections: list, detector: FaceDetector, landmarks, config: BuildConfig,
             backend: str, out: Path) -> dict:
    """Crops, depth and channels of a decoded video's faces, written to ``out``; its summary."""
    job, decoded, meta = clip.job, clip.decoded, clip.meta
    frames = decoded.frames
    if config.face.orientation == "auto":
        turn, frames, detections, evidence = find_upright(detector, frames, detections, config.face.min_score)
        meta["rotation"] = turn  # clockwise degrees the frames were turned to be upright
        meta["orientation"] = evidence  # each orientation's upright evidence and how it was decided
    meta["rotation_tag"] = decoded.rotation_tag
    size, depth_size, store_estimate = config.face.size, config.depth.size, config.depth.store_estimate
    kept = {k: [] for k in ("rgb", "hsv", "lbp", "depth", "frame_index", "box", "landmarks", "score", "depth_source")}
    if store_estimate:
        kept["depth_estimate"] = []
    faces, rejects = usable_faces(frames, decoded.indices, detections, config.face)
    live = job.label == "live"
    crops = [crop_face(frame, matrix, size, config.face.template) for frame, _, _, matrix in faces]
    estimates = (depth_estimates(faces, crops, backend, landmarks, config.face, config.depth) if live or store_estimate
                 else [(None, "none")] * len(faces))
    blank = np.zeros((depth_size, depth_size), np.uint8)
    for (frame, index, det, matrix), crop, (estimate, source) in zip(faces, crops, estimates):
        if estimate is None and source != "none":  # no map could be made, and the config says reject
            rejects.append((index, source))
            continue
        for name, array in channels(crop, config.face.hsv).items():
            kept[name].append(array)
        kept["depth"].append((estimate if live else blank)[None])
        if store_estimate:
            kept["depth_estimate"].append(estimate[None])
        kept["depth_source"].append(source)
        kept["frame_index"].append(index)
        kept["box"].append(det.box.astype(np.float32))
        kept["landmarks"].append(det.landmarks.astype(np.float32))
        kept["score"].append(np.float32(det.score))
    if not kept["rgb"]:
        rejects.append((-1, f"no usable frame among {len(decoded.indices)} sampled"))
        arrays = _empty(config)
    else:
        arrays = {k: np.stack(v) for k, v in kept.items() if k != "depth_source"}
        arrays["frame_index"] = arrays["frame_index"].astype(np.int32)
        arrays["depth_source"] = np.array(kept["depth_source"], dtype=str)  # sized to the longest reason
    _save(out, arrays, rejects, meta)
    return summarize(out, job)


def usable_faces(frames: list, indices: list, detections: list, face: FaceConfig) -> tuple[list, list]:
    """The frames whose face the build keeps, as [(frame, index, detection, crop matrix)], and the others as
    [(index, reason)]: no face detected, a face score below ``face.min_score``, or a face that cannot be
    cropped. The build and ``fas-train predict`` both decide with this."""
    faces, rejects = [], []
    for frame, index, det in zip(frames, indices, detections):
        if det is None:
            rejects.append((index, "no face detected"))
        elif det.score < face.min_score:
            rejects.append((index, f"face score {det.score:.3f} below min_score {face.min_score}"))
        else:
            try:
                faces.append((frame, index, det, crop_matrix(det, face)))
            except ValueError as err:
                rejects.append((index, str(err)))
    return faces, rejects


def depth_estimates(faces: list, crops: list, backend: str, landmarks, face: FaceConfig, depth: DepthConfig) -> list:
    """(uint8 depth map, what made it) of each of a video's kept faces, whatever their label: the 3D landmarks
    of face-alignment (the video's faces in one batch) or of Face Mesh (on each crop), or the generic surface,
    in the crop's frame. A face whose landmarks cannot be used gets the generic surface with the reason in its
    source (``depth.fallback: generic``), or (None, reason) (``reject``). The build and ``fas-train predict``
    both make them so."""
    size, depth_size = face.size, depth.size

    def generic(det, matrix):
        return to_uint8(generic_depth(transform_points(det.landmarks, matrix), size, depth_size))

    def rendered(points, det, matrix):
        try:
            return to_uint8(landmark_depth(points, size, depth_size)), backend
        except ValueError as err:
            return fallback(det, matrix, str(err))

    def fallback(det, matrix, why: str):
        if depth.fallback == "reject":
            return None, why
        return generic(det, matrix), f"generic fallback: {why}"

    if backend == "mediapipe":
        out = []
        for crop, (_, _, det, matrix) in zip(crops, faces):
            points = landmarks.predict(crop)
            out.append(rendered(points, det, matrix) if points is not None
                       else fallback(det, matrix, "Face Mesh found no face in the crop"))
        return out
    if backend == "face-alignment":
        out = []
        for points, (_, _, det, matrix) in zip(landmarks.predict([f[0] for f in faces], [f[2].box for f in faces]),
                                               faces):
            points[:, :2] = transform_points(points[:, :2], matrix)
            points[:, 2] *= np.sqrt(abs(np.linalg.det(matrix[:, :2])))  # the crop's scale applies to depth too
            out.append(rendered(points, det, matrix))
        return out
    return [(generic(det, matrix), "generic") for _, _, det, matrix in faces]


SMALL = ("frame_index", "depth_source")  # the arrays a record holds; the images file holds the others


def load_result(path: Path, names: tuple | None = None) -> tuple[dict, list, dict]:
    """Arrays (all, or only those in ``names``: the images file is opened only when one of its arrays is asked
    for), rejects [(frame_index, reason)] and metadata of a result. ResultError names an unreadable file;
    ImagesRemoved, a result whose images the build removed."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
        if record.pop("sha256") != content_sha256(record):
            raise ValueError("its content does not match its sha256")
        arrays = {"frame_index": np.asarray(record["frame_index"], np.int32),
                  "depth_source": np.asarray(record["depth_source"], dtype=str)}
    except Exception as err:  # noqa: BLE001 - whatever makes it unreadable, named with the file
        raise ResultError(f"{path}: unreadable extraction result ({type(err).__name__}: {err})") from None
    arrays = {k: v for k, v in arrays.items() if names is None or k in names}
    if names is None or set(names) - set(SMALL):
        arrays.update(load_images(path, len(record["frame_index"]), names))
    return arrays, [tuple(r) for r in record["rejects"]], record["meta"]


def load_images(path: Path, samples: int, names: tuple | None = None) -> dict:
    """The arrays of a result's images file (all, or those in ``names``), checked against its record's sample
    count."""
    images = images_path(path)
    if not images.exists():
        raise ImagesRemoved(f"{images}: the images of this result were removed once the shards holding them were "
                            f"committed")
    try:
        with np.load(images, allow_pickle=False) as data:  # zip CRCs: a changed byte does not load
            arrays = {k: data[k] for k in data.files if names is None or k in names}
    except Exception as err:  # noqa: BLE001 - as above
        raise ResultError(f"{images}: unreadable extraction result ({type(err).__name__}: {err})") from None
    wrong = sorted(k for k, v in arrays.items() if len(v) != samples)
    if wrong:
        raise ResultError(f"{images}: unreadable extraction result ({wrong} do not hold the record's {samples} "
                          f"samples)")
    return arrays


def summarize(path: Path, job: VideoJob) -> dict:
    """Counts of a result, from its record."""
    arrays, rejects, meta = load_result(path, SMALL)
    return {"video_id": job.video_id, "samples": len(arrays["frame_index"]),
            "rejected_frames": sum(1 for i, _ in rejects if i >= 0),
            "video_rejected": any(i < 0 for i, _ in rejects), **meta}


def _empty(config: BuildConfig) -> dict:
    s, d = config.face.size, config.depth.size
    estimate = {"depth_estimate": np.zeros((0, 1, d, d), np.uint8)} if config.depth.store_estimate else {}
    return {**estimate, "rgb": np.zeros((0, 3, s, s), np.uint8), "hsv": np.zeros((0, 3, s, s), np.uint8),
            "lbp": np.zeros((0, 3, s, s), np.uint8), "depth": np.zeros((0, 1, d, d), np.uint8),
            "depth_source": np.zeros(0, dtype=str),
            "frame_index": np.zeros(0, np.int32), "box": np.zeros((0, 4), np.float32),
            "landmarks": np.zeros((0, 5, 2), np.float32), "score": np.zeros(0, np.float32)}


def _save(out: Path, arrays: dict, rejects: list, meta: dict) -> None:
    """Write a result: its images, then its record (which marks the video finished)."""
    with atomic_path(images_path(out), suffix=".tmp.npz") as tmp:
        np.savez(tmp, **{k: v for k, v in arrays.items() if k not in SMALL})
    record = {"frame_index": [int(i) for i in arrays["frame_index"]],
              "depth_source": [str(s) for s in arrays["depth_source"]],
              "rejects": [[int(i), str(why)] for i, why in rejects], "meta": meta}
    write_json(out, {**record, "sha256": content_sha256(record)})
