"""Depth benchmark: depth maps per second on one CPU core per backend: the rendering from landmarks, and each
backend end to end with its landmark inference (Face Mesh on real faces; face-alignment's FAN + depth net).

    .venv/bin/python bench/depth.py [--maps 2000]
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.depth import DEPTH_WEIGHTS, FAN_WEIGHTS, FanLandmarks, generic_depth, landmark_depth  # noqa: E402
from pipeline.face_mesh import FaceMeshLandmarks  # noqa: E402
from pipeline.faces import template  # noqa: E402


def rate(fn, items) -> float:
    start = time.perf_counter()
    for item in items:
        fn(item)
    return len(items) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps", type=int, default=2000)
    parser.add_argument("--fan-images", type=int, default=5)
    args = parser.parse_args()
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})  # one core, whatever threads a library starts
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    five = [template(256, 0.37) + rng.normal(0, 3, (5, 2)) for _ in range(args.maps)]
    print(f"one CPU core, 32 x 32 maps from 256 x 256 crops ({args.maps} maps each)")
    print(f"  generic surface + 5 landmarks: {rate(lambda p: generic_depth(p, 256, 32), five):8.0f} maps/s")
    theta, radius = rng.uniform(0, 2 * np.pi, (args.maps, 68)), np.sqrt(rng.uniform(0, 1, (args.maps, 68))) * 100
    sixty_eight = [np.column_stack([128 + r * np.cos(t), 128 + r * np.sin(t), r / 10]) for t, r in zip(theta, radius)]
    print(f"  68 3D landmarks (Delaunay + render): {rate(lambda p: landmark_depth(p, 256, 32), sixty_eight):8.0f} maps/s")
    print("  (PRNet's griddata route, as users report it: 0.5-1 maps/s)")
    with tempfile.TemporaryDirectory() as tmp:  # speed does not depend on the weights' values
        from face_alignment.models import FAN, ResNetDepth
        torch.save(FAN(4).state_dict(), Path(tmp) / FAN_WEIGHTS)
        torch.save({"state_dict": ResNetDepth().state_dict()}, Path(tmp) / DEPTH_WEIGHTS)
        fan = FanLandmarks(tmp, "cpu")
        image = rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)
        box = np.array([40, 40, 216, 216.0])
        fan.predict([image], [box])  # warm-up
        batch = 4
        fan_rate = batch * rate(lambda _: fan.predict([image] * batch, [box] * batch), range(args.fan_images))
        print(f"landmark inference, face-alignment 3D FAN + depth net, CPU 1 thread, batches of {batch}: "
              f"{fan_rate:.2f} faces/s")
    crops = real_face_crops()
    mesh = FaceMeshLandmarks()
    fitted = [c for c in crops if mesh.predict(c) is not None]
    print(f"mediapipe Face Mesh on {len(crops)} aligned crops of scikit-image's real faces: {len(fitted)} fitted")
    repeats = fitted * max(1, 200 // len(fitted))
    print(f"  landmarks only: {rate(mesh.predict, repeats):8.0f} faces/s; landmarks + 468-point map: "
          f"{rate(lambda c: landmark_depth(mesh.predict(c), 256, 32), repeats):8.0f} faces/s (goal: 100)")


def real_face_crops() -> list:
    """256 px aligned crops (MTCNN, the public template) of the astronaut and 30 LFW faces, upscaled."""
    import cv2
    from skimage import data
    from pipeline.config import FaceConfig
    from pipeline.faces import FaceDetector, crop_face, crop_matrix
    lfw = data.lfw_subset()
    images = [cv2.resize(data.astronaut()[:300, 100:400], (300, 300))]
    images += [cv2.cvtColor(cv2.resize((lfw[i] * 255).astype(np.uint8), (250, 250), interpolation=cv2.INTER_CUBIC),
                            cv2.COLOR_GRAY2RGB) for i in range(0, 90, 3)]
    detector, config = FaceDetector(FaceConfig(), "cpu"), FaceConfig()
    crops = []
    for image in images:
        det = detector.detect([image])[0]
        if det is not None:
            crops.append(crop_face(image, crop_matrix(det, config), 256))
    return crops


if __name__ == "__main__":
    main()
