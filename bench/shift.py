"""How large the demo corpus's controlled domain shift is: ERM on the four MICO leave-one-out protocols of
corpora made at several ``shift`` values, per protocol its source-validation AUC (the held-out source
subjects that pick the checkpoint) against its target AUC (frame level, mean over seeds).

    .venv/bin/python bench/shift.py [--shifts 0 1] [--seeds 0 1 2] [--steps 60] [--workers 2] \
        [--out build/bench/shift] [--json build/bench/shift.json]

Corpora, builds and runs are kept under --out and reused: a second call only redoes what is missing.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.atomic import write_json  # noqa: E402
from pipeline.demo import DemoConfig, write_demo_corpus  # noqa: E402
from pipeline.provenance import code_version  # noqa: E402

PROTOCOLS = ["mico_OCI_to_M", "mico_OMI_to_C", "mico_OCM_to_I", "mico_ICM_to_O"]
DATASETS = ("casia", "replay", "msu", "oulu")


def build(shift: float, out: Path, workers: int) -> Path:
    """The corpus at ``shift`` and its build (4 frames per video, 64 px crops, generic depth); its manifest."""
    folder = out / f"shift{shift:g}"
    write_demo_corpus(folder / "raw", DemoConfig(shift=shift), quiet=True)
    config = folder / "build.yaml"
    config.write_text(yaml.safe_dump({
        "name": "shift", "datasets": {d: str(folder / "raw" / d) for d in DATASETS},
        "output_dir": str(folder / "out"), "manifest_dir": str(folder / "manifests"),
        "frames": {"policy": "even", "count": 4}, "face": {"size": 64}, "depth": {"backend": "generic"},
        "compute": {"workers": workers, "device": "cpu"}}))
    subprocess.run([sys.executable, "-m", "pipeline", "build", "--config", str(config), "--quiet"], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return folder / "manifests" / "shift"


def erm_sweep(manifest: Path, folder: Path, seeds: list, steps: int, workers: int) -> Path:
    """ERM on the four MICO protocols; the sweep's folder."""
    sweep = folder / "erm.yaml"
    sweep.write_text(yaml.safe_dump({
        "name": "erm", "build": str(manifest), "out": str(folder / "erm"), "protocols": PROTOCOLS, "seeds": seeds,
        "methods": ["erm"], "settings": {"steps": steps, "eval_every": max(1, steps // 3), "per_class": 4,
                                         "network": "small", "input_size": 64, "device": "cpu"}}))
    subprocess.run([sys.executable, "-m", "fas_train", "sweep", str(sweep), "--workers", str(workers)], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return folder / "erm"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shifts", type=float, nargs="+", default=[0.0, 1.0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("build/bench/shift"))
    parser.add_argument("--json", type=Path, default=Path("build/bench/shift.json"))
    args = parser.parse_args()
    figures = {"code": code_version(), "seeds": args.seeds, "steps": args.steps, "shifts": {}}
    print(f"ERM, small network, 64 px, {args.steps} steps, seeds {args.seeds}; frame-level AUC, mean over seeds")
    print(f"  {'shift':>5} {'protocol':<10} {'source-val AUC':>15} {'target AUC':>11} {'gap':>7}")
    for shift in args.shifts:
        start = time.perf_counter()
        manifest = build(shift, args.out, args.workers)
        runs = erm_sweep(manifest, args.out / f"shift{shift:g}", args.seeds, args.steps, args.workers)
        rows = {}
        for protocol in PROTOCOLS:
            reports = [json.loads((runs / "erm" / protocol / f"seed{s}" / "report.json").read_text())
                       for s in args.seeds]
            source = float(np.mean([r["selection_scores"]["auc"] for r in reports]))
            target = float(np.mean([r["metrics"]["frame"]["auc"] for r in reports]))
            rows[reports[0]["protocol"]] = {"source_validation_auc": source, "target_auc": target,
                                            "target_video_auc": float(np.mean([r["metrics"]["video"]["auc"]
                                                                               for r in reports]))}
            print(f"  {shift:>5g} {reports[0]['protocol']:<10} {source:>15.3f} {target:>11.3f} {source - target:>7.3f}")
        figures["shifts"][f"{shift:g}"] = {"protocols": rows, "seconds": time.perf_counter() - start}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.json, figures)
    print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
