"""MTCNN throughput at 640 x 480, stock facenet-pytorch settings against the pipeline's settings, batched,
with a check that the faster settings lose no face on the demo corpus; then per dataset, on its own frames,
the stock settings, the pipeline's defaults and the sizing ``python -m pipeline face-sizes`` recommends.

    .venv/bin/python bench/mtcnn.py [--device cuda] [--batch 64] [--corpus build/demo/raw]

Faces in the FAS datasets fill a large part of the frame (the demo's are at least a fifth of the short side),
so the pipeline detects on frames downscaled to ``face.max_side`` with a larger minimum face, which cuts
the image pyramid's small scales, where most of MTCNN's time goes.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.config import FaceConfig, FrameConfig  # noqa: E402
from pipeline.demo import DemoConfig, write_demo_corpus  # noqa: E402
from pipeline.face_sizes import STOCK, measure, recommend  # noqa: E402
from pipeline.faces import FaceDetector  # noqa: E402
from pipeline.frames import read_frames  # noqa: E402

SETTINGS = {
    "stock (min face 20, full size)": FaceConfig(min_face_size=20, max_side=10_000),
    "pipeline default (min 40, side 640)": FaceConfig(),
    "tuned (min face 40, side 320)": FaceConfig(min_face_size=40, max_side=320),
}


def demo_frames(corpus: Path, per_video: int) -> list[np.ndarray]:
    frames = []
    for path in sorted(p for p in corpus.rglob("*") if p.suffix.lower() in (".avi", ".mov", ".mp4")
                       and not p.name.startswith(".")):
        for frame in read_frames(path, FrameConfig(count=per_video)).frames:
            frames.append(cv2.resize(frame, (640, 480), interpolation=cv2.INTER_LINEAR))
    return frames


def timed_detect(detector: FaceDetector, frames: list, batch: int, device: str) -> tuple[float, list]:
    """(frames/s, detections) over ``frames`` in batches of ``batch`` (one size per batch)."""
    detector.detect(frames[:batch])  # warm-up
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    detections = []
    for i in range(0, len(frames), batch):
        detections += detector.detect(frames[i:i + batch])
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(frames) / (time.perf_counter() - start), detections


def per_dataset(corpus: Path, per_video: int, device: str) -> None:
    """Each dataset's frames at their own sizes: stock settings, defaults, and the recommended sizing."""
    print(f"\nper dataset, frames at their own size ({per_video} per video), faces lost against the stock settings:")
    print(f"  {'dataset':<8} {'settings':<34} {'frames/s':>9} {'faces':>7} {'lost':>5}")
    for dataset in ("casia", "replay", "msu", "oulu"):
        root = corpus / dataset
        advice = recommend(measure(dataset, str(root), quiet=True))
        by_size = {}
        for path in sorted(p for p in root.rglob("*") if p.suffix.lower() in (".avi", ".mov", ".mp4")):
            for frame in read_frames(path, FrameConfig(count=per_video)).frames:
                by_size.setdefault(frame.shape, []).append(frame)
        found = {}
        for label, config in (("stock (min 20, full size)", STOCK), ("default (min 40, side 640)", FaceConfig()),
                              (f"recommended (min {advice['min_face_size']}, side {advice['max_side']})",
                               FaceConfig(**advice))):
            detector, rates, hits = FaceDetector(config, device), [], []
            for frames in by_size.values():
                rate, detections = timed_detect(detector, frames, 64, device)
                rates.append((len(frames), len(frames) / rate))
                hits += [d is not None and d.score >= config.min_score for d in detections]
            found[label] = np.array(hits)
            n, seconds = sum(k for k, _ in rates), sum(t for _, t in rates)
            lost = int((found[next(iter(found))] & ~found[label]).sum())
            print(f"  {dataset:<8} {label:<34} {n / seconds:>9.1f} {int(found[label].sum()):>7} {lost:>5}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--per-video", type=int, default=2)
    parser.add_argument("--corpus", type=Path, default=Path("build/demo/raw"))
    args = parser.parse_args()
    if not (args.corpus / "demo_corpus.json").exists():
        write_demo_corpus(args.corpus, DemoConfig(), quiet=True)
    frames = demo_frames(args.corpus, args.per_video)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU, {torch.get_num_threads()} threads"
    print(f"{len(frames)} demo frames at 640 x 480, batches of {args.batch}, on {name}")
    found = {}
    for label, config in SETTINGS.items():
        rate, detections = timed_detect(FaceDetector(config, args.device), frames, args.batch, args.device)
        found[label] = [d is not None and d.score >= config.min_score for d in detections]
        print(f"  {label:<38} {rate:8.1f} frames/s   faces found {sum(found[label])}/{len(frames)}")
    stock = np.array(found[next(iter(SETTINGS))])
    for label, hits in list(found.items())[1:]:
        lost = int((stock & ~np.array(hits)).sum())
        print(f"  faces the stock settings find but '{label}' loses: {lost}")
    per_dataset(args.corpus, args.per_video, args.device)


if __name__ == "__main__":
    main()
