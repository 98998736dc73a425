"""Loader benchmark: balanced random-access samples/s from a build's shards (RFM's input: rgb + hsv,
6 x 256 x 256 uint8, plus depth), read in the training process (1 or 2 reader threads) and by 1 or 2
DataLoader worker processes; then whether prefetching hides reading behind a training step (simulated by a
sleep of the same length as a GPU step, which like CUDA work leaves the GIL free).

    .venv/bin/python bench/loader.py [--build data_manifests/demo/builds/demo] [--per-class 10] [--batches 200]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fas_train.data import ShardDataset, load_build, make_loader, prefetch  # noqa: E402
from fas_train.sampler import BalancedBatchSampler  # noqa: E402
from pipeline.shards import DOMAINS  # noqa: E402


def rate(batches) -> tuple[float, float]:
    """(steady samples/s after the first batch, samples/s including start-up)."""
    start = time.perf_counter()
    batches = iter(batches)
    n = len(next(batches)["label"])
    steady = time.perf_counter()
    m = sum(len(batch["label"]) for batch in batches)
    end = time.perf_counter()
    return m / (end - steady), (n + m) / (end - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=Path("data_manifests/demo/builds/demo"))
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--batches", type=int, default=200)
    parser.add_argument("--step-ms", type=float, default=74.0, help="simulated training step (RFM's on an H100)")
    args = parser.parse_args()
    manifest, samples = load_build(args.build)
    domains = samples["dataset"].map(DOMAINS).to_numpy()
    labels = (samples["label"] == "live").astype(int).to_numpy()
    sampler = BalancedBatchSampler(domains, labels, args.per_class, seed=0, batches_per_epoch=args.batches)
    print(f"{len(samples)} samples in {len(manifest['shards'])} shards; batches of {sampler.batch_size} "
          f"({args.per_class} live + {args.per_class} spoof x {len(set(domains))} domains), {args.batches} batches")
    for threads in (1, 2):
        dataset = ShardDataset(manifest["shard_dir"], samples, read_threads=threads)
        steady, total = rate(make_loader(dataset, sampler, 0))
        print(f"  in-process, {threads} reader thread(s): {steady:8.0f} samples/s steady, {total:8.0f} with start-up")
    if "depth_estimate" in manifest.get("shard_datasets", ()):  # HFN + Depth: 32 x 32 maps resized in the loader
        dataset = ShardDataset(manifest["shard_dir"], samples, ("rgb", "depth_estimate"))
        steady, total = rate(make_loader(dataset, sampler, 0))
        print(f"  rgb + depth_estimate, 2 threads:   {steady:8.0f} samples/s steady, {total:8.0f} with start-up")
    else:
        print("  (this build has no depth_estimate: the HFN + Depth input is not measured)")
    dataset = ShardDataset(manifest["shard_dir"], samples)
    for workers in (1, 2):
        steady, total = rate(make_loader(dataset, sampler, workers))
        print(f"  {workers} worker process(es):        {steady:8.0f} samples/s steady, {total:8.0f} with start-up")
    seconds = args.step_ms / 1000
    for name, batches in (("sequential", make_loader(dataset, sampler, 0)),
                          ("prefetched", prefetch(make_loader(dataset, sampler, 0)))):
        start = time.perf_counter()
        for _ in batches:
            time.sleep(seconds)
        spent = time.perf_counter() - start
        print(f"  {name} with a {args.step_ms:.0f} ms step: {spent / args.batches * 1000:6.1f} ms per step "
              f"({(spent / args.batches - seconds) * 1000:5.1f} ms waiting for data)")


if __name__ == "__main__":
    main()
