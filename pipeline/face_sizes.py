"""Face sizes per dataset, measured on a sample of a copy's videos, and the detector sizing they allow.

MTCNN's time goes to the image pyramid's first levels, whose area is the frame's area x (12 / smallest face)^2:
what costs is how small, relative to the frame, the smallest face searched is. The faces here are found with
facenet-pytorch's stock settings (full frames, faces down to 20 px); the recommendation searches faces down to
``margin`` x the smallest one seen, at ``min_face_size`` pixels of a frame downscaled as far as that allows.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from tqdm import tqdm

from .config import FaceConfig, FrameConfig
from .datasets import get_indexer
from .faces import FaceDetector
from .frames import VideoError, read_frames

STOCK = FaceConfig(min_face_size=20, max_side=100_000)  # facenet-pytorch's defaults, frames at full size


@dataclass
class FaceSizes:
    """One dataset's measured faces: per face, the longer box side in frame pixels and the frame's size."""

    dataset: str
    videos: int
    frames: int
    sides: np.ndarray  # longer side of each face box, frame pixels
    frame_sizes: np.ndarray  # (height, width) of the frame of each face
    unreadable: list

    @property
    def fractions(self) -> np.ndarray:
        """Each face's longer side as a fraction of its frame's shorter side."""
        return self.sides / self.frame_sizes.min(axis=1)


def measure(dataset: str, root: str, videos: int = 24, frames: int = 3, device: str = "cpu",
            quiet: bool = False) -> FaceSizes:
    """Detect faces with the stock settings on ``frames`` frames of ``videos`` videos spread over the copy
    (every k-th in index order, so splits, cameras and attacks are all drawn)."""
    records = get_indexer(dataset).scan(root).records
    if not records:
        raise ValueError(f"{root}: no {dataset} videos found")
    picked = [records[i] for i in sorted({round(i) for i in np.linspace(0, len(records) - 1, min(videos, len(records)))})]
    detector = FaceDetector(STOCK, device)
    sides, sizes, unreadable, decoded = [], [], [], 0
    for record in tqdm(picked, unit="video", desc=f"{dataset}: faces", disable=quiet, dynamic_ncols=True):
        try:
            clip = read_frames(f"{root}/{record.relpath}", FrameConfig(policy="even", count=frames))
        except VideoError as err:
            unreadable.append(str(err))
            continue
        decoded += len(clip.frames)
        for frame, found in zip(clip.frames, detector.detect(clip.frames)):
            if found is not None:
                x1, y1, x2, y2 = found.box
                sides.append(max(x2 - x1, y2 - y1))
                sizes.append(frame.shape[:2])
    return FaceSizes(dataset, len(picked), decoded, np.array(sides, float), np.array(sizes, float).reshape(-1, 2),
                     unreadable)


def recommend(sizes: FaceSizes, margin: float = 0.5, min_face_size: int = 40) -> dict:
    """``face.sizing`` for the dataset: the smallest face searched is ``margin`` x the smallest measured, at
    ``min_face_size`` detector pixels; frames are not upscaled (at full size the face bound is taken as is)."""
    if not len(sizes.sides):
        raise ValueError(f"{sizes.dataset}: no face found on the sampled frames; nothing to size the detector by")
    smallest = margin * sizes.sides.min()  # frame pixels
    long_sides = sizes.frame_sizes.max(axis=1)
    if smallest < min_face_size:  # the frames cannot be downscaled: search smaller faces at full size
        return {"max_side": int(long_sides.max()), "min_face_size": max(12, math.floor(smallest))}
    # the frames' longer side so that a face of `smallest` frame pixels is `min_face_size` detector pixels
    return {"max_side": int(math.ceil(long_sides.max() * min_face_size / smallest)), "min_face_size": min_face_size}


def smallest_searched(face: FaceConfig, height: int, width: int) -> float:
    """The smallest face, in frame pixels, that ``face``'s sizing searches on a frame of this size."""
    return face.min_face_size / min(1.0, face.max_side / max(height, width))


def report(sizes: FaceSizes, current: FaceConfig, margin: float) -> str:
    """Lines for one dataset: the measured sizes, what the current settings search, the recommendation."""
    if not len(sizes.sides):
        return f"{sizes.dataset}: {sizes.videos} videos, {sizes.frames} frames: no face found"
    q = np.percentile(sizes.sides, [0, 5, 50])
    f = np.percentile(sizes.fractions, [0, 5, 50])
    resolutions = sorted({(int(w), int(h)) for h, w in sizes.frame_sizes}, reverse=True)
    searched = ", ".join(f"{w}x{h}: {smallest_searched(current, h, w):.0f} px" for w, h in resolutions)
    advice = recommend(sizes, margin)
    return "\n".join([
        f"{sizes.dataset}: {sizes.videos} videos, {sizes.frames} frames, {len(sizes.sides)} faces"
        + (f", {len(sizes.unreadable)} unreadable video(s)" if sizes.unreadable else ""),
        f"  face box side, px: min {q[0]:.0f}, 5% {q[1]:.0f}, median {q[2]:.0f}; "
        f"of the frame's short side: min {f[0]:.2f}, 5% {f[1]:.2f}, median {f[2]:.2f}",
        f"  current settings search faces from: {searched}",
        f"  recommended (down to {margin:g} x the smallest face): {advice}"])
