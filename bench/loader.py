"""Loader benchmark: balanced random-access samples/s from a build's shards (RFM's input: rgb + hsv,
6 x 256 x 256 uint8, plus depth) with 0, 1 and 2 DataLoader workers.

    .venv/bin/python bench/loader.py [--build data_manifests/demo/builds/demo] [--per-class 10] [--batches 200]
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fas_train.data import ShardDataset, load_build, make_loader  # noqa: E402
from fas_train.sampler import BalancedBatchSampler  # noqa: E402
from pipeline.shards import DOMAINS  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", type=Path, default=Path("data_manifests/demo/builds/demo"))
    parser.add_argument("--per-class", type=int, default=10)
    parser.add_argument("--batches", type=int, default=200)
    args = parser.parse_args()
    manifest, samples = load_build(args.build)
    domains = samples["dataset"].map(DOMAINS).to_numpy()
    labels = (samples["label"] == "live").astype(int).to_numpy()
    dataset = ShardDataset(manifest["shard_dir"], samples)
    sampler = BalancedBatchSampler(domains, labels, args.per_class, seed=0, batches_per_epoch=args.batches)
    print(f"{len(samples)} samples in {len(manifest['shards'])} shards; batches of {sampler.batch_size} "
          f"({args.per_class} live + {args.per_class} spoof x {len(set(domains))} domains), {args.batches} batches")
    for workers in (0, 1, 2):
        loader = make_loader(dataset, sampler, workers)
        start = time.perf_counter()
        batches = iter(loader)
        n = len(next(batches)["label"])
        steady = time.perf_counter()
        m = sum(len(batch["label"]) for batch in batches)
        end = time.perf_counter()
        print(f"  {workers} workers: {m / (end - steady):8.0f} samples/s steady, {(n + m) / (end - start):8.0f} with "
              f"start-up ({n + m} samples)")


if __name__ == "__main__":
    main()
