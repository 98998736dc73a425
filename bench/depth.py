"""Depth benchmark: depth maps per second on one CPU core, from landmarks (the rendering), and landmark
inference (face-alignment's FAN + depth net) reported separately.

    .venv/bin/python bench/depth.py [--maps 2000]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.depth import DEPTH_WEIGHTS, FAN_WEIGHTS, FanLandmarks, generic_depth, landmark_depth  # noqa: E402
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


if __name__ == "__main__":
    main()
