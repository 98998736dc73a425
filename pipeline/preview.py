"""A contact sheet of what a build holds: for a few samples, the face crop, its HSV and LBP channels, the depth
target and the stored depth estimate, each column labelled, with video, frame, label, MTCNN's face score and
depth source under each, so a data engineer can look at a cache before training on it."""
from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .atomic import atomic_path
from .audit import find_manifest
from .shards import open_shard

TILE = 128  # pixels per tile side
CAPTION = 34  # pixels of text under a sample's tiles
HEADER = 18  # pixels of column labels above the first row
COLUMNS = 2  # samples side by side
LABELS = ("crop", "HSV", "LBP (red)", "depth target", "depth estimate")  # one per tile, in tiles() order


def pick(samples: pd.DataFrame, n: int, dataset: str | None = None, label: str | None = None) -> pd.DataFrame:
    """``n`` samples spread evenly over the build order (after filtering by dataset and label)."""
    chosen = samples
    if dataset:
        chosen = chosen[chosen["dataset"] == dataset]
    if label:
        chosen = chosen[chosen["label"] == label]
    if chosen.empty:
        raise ValueError(f"no sample with dataset={dataset!r} label={label!r} in this build")
    index = np.unique(np.linspace(0, len(chosen) - 1, min(n, len(chosen))).round().astype(int))
    return chosen.iloc[index]


def tiles(sample: dict) -> list[np.ndarray]:
    """TILE x TILE RGB tiles of one sample: crop, HSV (its channels shown as RGB), LBP (red channel's codes),
    depth target and, when stored, the depth estimate."""
    def square(image: np.ndarray) -> np.ndarray:
        interpolation = cv2.INTER_AREA if image.shape[0] > TILE else cv2.INTER_NEAREST
        return cv2.resize(np.ascontiguousarray(image), (TILE, TILE), interpolation=interpolation)

    def gray(channel: np.ndarray) -> np.ndarray:
        return np.repeat(square(channel)[..., None], 3, axis=2)

    out = [square(sample["rgb"].transpose(1, 2, 0)), square(sample["hsv"].transpose(1, 2, 0)),
           gray(sample["lbp"][0]), gray(sample["depth"][0])]
    if "depth_estimate" in sample:
        out.append(gray(sample["depth_estimate"][0]))
    return out


def contact_sheet(build, n: int = 24, dataset: str | None = None,
                  label: str | None = None) -> tuple[np.ndarray, pd.DataFrame]:
    """(RGB image, the samples shown, in order) of a build."""
    manifest_path = find_manifest(build)
    manifest = json.loads(manifest_path.read_text())
    samples = pd.read_csv(manifest_path.parent / "samples.csv", dtype={"video_id": str, "subject": str},
                          keep_default_na=False)
    chosen = pick(samples, n, dataset, label)
    names = ("rgb", "hsv", "lbp", "depth", "depth_estimate", "score")
    blocks, handles = [], {}
    try:
        for row in chosen.itertuples():
            if row.shard not in handles:
                handles[row.shard] = open_shard(Path(manifest["shard_dir"]) / row.shard)
            f = handles[row.shard]
            sample = {k: f[k][int(row.row)] for k in names if k in f}
            strip = np.concatenate(tiles(sample), axis=1)
            caption = np.full((CAPTION, strip.shape[1], 3), 255, np.uint8)
            for line, text in enumerate(caption_lines(row, float(sample["score"]))):
                _write(caption, text[:90], 4, 13 + 15 * line)
            blocks.append(np.concatenate([strip, caption], axis=0))
    finally:
        for f in handles.values():
            f.close()
    while len(blocks) % COLUMNS:
        blocks.append(np.full_like(blocks[0], 255))
    rows = [np.concatenate(blocks[i:i + COLUMNS], axis=1) for i in range(0, len(blocks), COLUMNS)]
    header = np.full((HEADER, rows[0].shape[1], 3), 255, np.uint8)
    per_sample = blocks[0].shape[1] // TILE
    for column in range(COLUMNS * per_sample):
        _write(header, LABELS[column % per_sample], column * TILE + 4, 13)
    return np.concatenate([header, *rows], axis=0), chosen


def caption_lines(row, face_score: float) -> tuple[str, str]:
    """The two lines under a sample: video and frame; label, MTCNN's face score and what made its depth map."""
    return (f"{row.video_id} #{row.frame_index}",
            f"{row.label}  face score {face_score:.3f}  depth: {getattr(row, 'depth_source', '')}")


def _write(image: np.ndarray, text: str, x: int, y: int) -> None:
    cv2.putText(image, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, 0.38, (0, 0, 0), 1, cv2.LINE_AA)


def write_preview(build, out: str | Path, n: int = 24, dataset: str | None = None, label: str | None = None) -> Path:
    """Write the contact sheet as a PNG (atomically); return its path."""
    image, _ = contact_sheet(build, n, dataset, label)
    out = Path(out)
    with atomic_path(out, suffix=".tmp.png") as tmp:
        if not cv2.imwrite(str(tmp), cv2.cvtColor(image, cv2.COLOR_RGB2BGR)):
            raise OSError(f"{out}: could not write the PNG")
    return out
