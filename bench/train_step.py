"""Training-step benchmark: seconds per step, images/s and peak memory of each method on random inputs (no data
loading), beside a straightforward fp32 eager run of the same RFM step (no autocast, contiguous tensors) in
the same process; the ratio is the figure. On CUDA the methods run as the trainer runs them: bf16 autocast
and channels-last. On the CPU both are fp32 and the ratio is about 1.

    .venv/bin/python bench/train_step.py [--network paper --size 256] [--per-class 10] [--domains 3] [--steps 5]
"""
from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fas_train.methods import METHODS  # noqa: E402
from fas_train.models import rfm_networks  # noqa: E402


def batch(args, device, channels_last):
    n = 2 * args.per_class * args.domains
    image = torch.rand(n, 6, args.size, args.size, device=device)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    labels = torch.tensor(([1] * args.per_class + [0] * args.per_class) * args.domains, device=device)
    domains = torch.arange(args.domains, device=device).repeat_interleave(2 * args.per_class)
    return {"image": image, "label": labels, "domain": domains,
            "depth": torch.rand(n, 1, 32, 32, device=device) * labels.view(-1, 1, 1, 1)}


def measure(name, args, device, fast: bool) -> tuple[float, float, float]:
    cls, config = METHODS[name]
    torch.manual_seed(0)
    method = cls(*rfm_networks(args.network), config()).to(device)
    channels_last = fast and device.type == "cuda"
    if channels_last:
        method = method.to(memory_format=torch.channels_last)
    data = batch(args, device, channels_last)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=fast and device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with autocast:
        method.update(data)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(args.steps):
        with autocast:
            method.update(data)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / args.steps
    memory = (torch.cuda.max_memory_allocated() if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
    return seconds, len(data["label"]) / seconds, memory


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=["paper", "small"], default=None)
    parser.add_argument("--size", type=int, default=None)
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--domains", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.network = args.network or ("paper" if device.type == "cuda" else "small")
    args.size = args.size or (256 if device.type == "cuda" else 64)
    where = torch.cuda.get_device_name() if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"{where}; {args.network} networks, 6 x {args.size} x {args.size}, {args.per_class} live + "
          f"{args.per_class} spoof x {args.domains} domains, {args.steps} timed steps")
    base = measure("rfm", args, device, fast=False)
    print(f"  {'straightforward RFM (fp32 eager)':<34} {base[0]:7.3f} s/step {base[1]:8.1f} images/s  peak {base[2]:.2f} GiB")
    for name in sorted(METHODS):
        seconds, rate, memory = measure(name, args, device, fast=True)
        print(f"  {name:<34} {seconds:7.3f} s/step {rate:8.1f} images/s  peak {memory:.2f} GiB"
              + (f"   x{rate / base[1]:.2f} vs straightforward" if name == "rfm" else ""))
    if device.type == "cpu":
        print("  (peak on the CPU is the process's maximum RSS so far, not per method)")


if __name__ == "__main__":
    main()
