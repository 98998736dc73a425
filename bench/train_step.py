"""Training-step benchmark: seconds per step, images/s and peak memory of every method at its paper's batch
size on random inputs (no data loading), beside a straightforward fp32 eager run of the same RFM step (no
autocast, contiguous tensors); the ratio is RFM's figure. Each method runs in a fresh process, so peak
memory is its own (GPU: peak allocated; CPU: maximum RSS). On CUDA the methods run as the trainer runs them:
bf16 autocast and channels-last; on the CPU both are fp32 and the ratio is about 1.

    .venv/bin/python bench/train_step.py [--network paper|small] [--size 256] [--steps 5] [--methods rfm ccdd]

Batch = the images a step draws from the sampler: ``per_class`` x 2 x domains x the method's chunks (Meta
Pattern draws K + 1 chunks and uses K of one domain and 1 of the others); ccdd-video adds its clips.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fas_train.methods import METHODS  # noqa: E402

# timing only: random backbones and D²AM's label-free first clustering, asked for by name (no weights needed)
TIMING_OPTIONS = (("pretrained", "none"), ("first_epoch", "style"))


def make_batch(method, per_class: int, domains: int, size: int, device, channels_last: bool) -> dict:
    channels = 3 * len(type(method).channels(method.config))
    n = 2 * per_class * domains
    image = torch.rand(n, channels, size, size, device=device)
    if channels_last:
        image = image.contiguous(memory_format=torch.channels_last)
    labels = torch.tensor(([1] * per_class + [0] * per_class) * domains, device=device)
    batch = {"image": image, "label": labels, "domain": torch.arange(domains, device=device).repeat_interleave(2 * per_class),
             "depth": torch.rand(n, 1, 32, 32, device=device) * labels.view(-1, 1, 1, 1)}
    if method.clip_length:
        clips = method.config.clips_per_class
        batch["clip"] = {"image": torch.rand(2 * clips * domains, method.clip_length, channels, size, size, device=device),
                         "label": torch.tensor(([1] * clips + [0] * clips) * domains, device=device),
                         "domain": torch.arange(domains, device=device).repeat_interleave(2 * clips)}
    return batch


def measure(name: str, network: str, size: int | None, steps: int, fast: bool) -> dict:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cls, config_cls = METHODS[name]
    names = {f.name for f in dataclasses.fields(config_cls)}
    config = config_cls(**{k: v for k, v in TIMING_OPTIONS if k in names})
    torch.manual_seed(0)
    method = cls.create(config, network, [0, 1, 2], seed=0).to(device)
    use_fast = fast and device.type == "cuda"
    if use_fast:
        method = method.to(memory_format=torch.channels_last)
    size = size or ((cls.input_size or 256) if device.type == "cuda" else 64)
    data = make_batch(method, config.per_class * method.batch_chunks, 3, size, device, use_fast)
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_fast)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with autocast:
        method.update(data)  # warm-up
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(steps):
        with autocast:
            method.update(data)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = (time.perf_counter() - start) / steps
    images = len(data["label"]) + (data["clip"]["image"].shape[:2].numel() if "clip" in data else 0)
    memory = (torch.cuda.max_memory_allocated() if device.type == "cuda"
              else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024) / 2**30
    return {"method": name, "seconds": seconds, "images": images, "rate": images / seconds, "peak_gib": memory,
            "size": size, "device": torch.cuda.get_device_name() if device.type == "cuda"
            else f"CPU, {torch.get_num_threads()} threads"}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--network", choices=["paper", "small"], default=None)
    parser.add_argument("--size", type=int, default=None, help="input size (default: the paper's on CUDA, 64 on CPU)")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--methods", nargs="+", default=sorted(METHODS), choices=sorted(METHODS))
    parser.add_argument("--one", nargs=2, metavar=("METHOD", "FAST"), help=argparse.SUPPRESS)  # child process
    args = parser.parse_args()
    network = args.network or ("paper" if torch.cuda.is_available() else "small")
    if args.one:
        print(json.dumps(measure(args.one[0], network, args.size, args.steps, args.one[1] == "1")))
        return

    def child(name: str, fast: bool) -> dict:
        command = [sys.executable, __file__, "--one", name, "1" if fast else "0", "--network", network,
                   "--steps", str(args.steps)] + (["--size", str(args.size)] if args.size else [])
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode:
            raise SystemExit(f"{name}: {done.stderr.strip().splitlines()[-1]}")
        return json.loads(done.stdout.strip().splitlines()[-1])

    base = child("rfm", fast=False)
    print(f"{base['device']}; {network} networks; each method at its paper's batch size, {args.steps} timed steps")
    line = "  {:<34} {:>4} px {:>4} img {:7.3f} s/step {:8.1f} images/s  peak {:6.2f} GiB"
    print(line.format("straightforward RFM (fp32 eager)", base["size"], base["images"], base["seconds"], base["rate"],
                      base["peak_gib"]))
    for name in args.methods:
        r = child(name, fast=True)
        print(line.format(name, r["size"], r["images"], r["seconds"], r["rate"], r["peak_gib"])
              + (f"   x{r['rate'] / base['rate']:.2f} vs straightforward" if name == "rfm" else ""))


if __name__ == "__main__":
    main()
