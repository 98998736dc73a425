"""The work after extraction at the real datasets' size, without extracting 10,000 videos: a small real
extraction (the demo corpus's CASIA-FASD and MSU-MFSD, through Luigi and dask) is replicated under new video
ids and source hashes into a build folder of ``--videos`` videos (records and images copied, the index and
extraction tables extended to match), and ``python -m pipeline build`` is run on it: it finds every video
extracted, writes the shards and the manifest. Prints the orchestrator's seconds before the first shard task
(the build's ``shards-planning`` timing: reading the records, planning, checking what is committed), the
whole shard stage, the command's wall time, and the build folder's peak and final disk use over its shards'
bytes; then kills a second run part-way through the shards and times the resume.

    .venv/bin/python bench/shards.py [--videos 10000] [--samples-per-shard 512] [--json build/bench/shards.json]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from disk_watch import DiskPeak  # noqa: E402 - beside this script
from pipeline.atomic import write_csv, write_json  # noqa: E402
from pipeline.demo import DemoConfig, write_demo_corpus  # noqa: E402
from pipeline.index import read_table  # noqa: E402
from pipeline.provenance import code_version  # noqa: E402

DATASETS = ("casia", "msu")


def write_config(work: Path, corpus: Path, per_shard: int) -> Path:
    config = work / "scale.yaml"
    config.write_text(yaml.safe_dump({
        "name": "scale", "datasets": {d: str(corpus / d) for d in DATASETS},
        "output_dir": str(work / "out"), "manifest_dir": str(work / "manifests"),
        "frames": {"policy": "even", "count": 2}, "face": {"size": 64}, "depth": {"backend": "generic"},
        "shards": {"samples_per_shard": per_shard}, "compute": {"workers": "auto", "device": "cpu"}}))
    return config


def extract(config: Path) -> None:
    """ExtractFaces of every dataset, through Luigi and dask, as a build runs it."""
    tasks = ", ".join(f"ExtractFaces(config={str(config)!r}, dataset={d!r}, quiet=True)" for d in DATASETS)
    subprocess.run([sys.executable, "-c", f"import luigi, sys; from pipeline.tasks import ExtractFaces; "
                    f"sys.exit(not luigi.build([{tasks}], local_scheduler=True))"],
                   check=True, cwd=ROOT, capture_output=True)


def replicate(build: Path, videos: int) -> int:
    """Extend the extracted build to about ``videos`` videos: copies of each video under a new id and source
    hash, with its record and images; return the number of videos."""
    tables = {d: read_table(build / "index" / f"{d}.csv") for d in DATASETS}
    extracted = {d: pd.read_csv(build / "extract" / f"{d}.csv", dtype=str) for d in DATASETS}
    copies = max(1, -(-videos // sum(len(t) for t in tables.values())))
    total = 0
    for d in DATASETS:
        table, rows, results = tables[d], [], []
        result_of = dict(zip(extracted[d]["video_id"], extracted[d]["result"]))
        for copy in range(copies):
            for row in table.to_dict("records"):
                sha = row["sha256"] if copy == 0 else hashlib.sha256(f"{row['sha256']}/{copy}".encode()).hexdigest()
                video_id = row["video_id"] if copy == 0 else f"{row['video_id']}-copy{copy:04d}"
                result = f"{video_id}.{sha[:16]}.json"
                if copy:
                    source = build / "videos" / result_of[row["video_id"]]
                    for suffix in (".json", ".npz"):
                        shutil.copyfile(source.with_suffix(suffix), (build / "videos" / result).with_suffix(suffix))
                rows.append({**row, "video_id": video_id, "sha256": sha})
                results.append({"video_id": video_id, "result": result})
        write_csv(build / "index" / f"{d}.csv", pd.DataFrame(rows, columns=table.columns))
        write_csv(build / "extract" / f"{d}.csv", pd.DataFrame(results, columns=["video_id", "result"]))
        total += len(rows)
    return total


def run_build(config: Path, out: Path, kill_after_records: int = 0) -> dict:
    """Run the build; with ``kill_after_records``, SIGKILL it once that many shards are committed."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "build", "--config", str(config), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=ROOT, start_new_session=True)
    records = out / "shards" / "records"
    with DiskPeak(out, lambda: process.poll() is None) as disk:
        while kill_after_records and process.poll() is None:
            if records.is_dir() and len(list(records.glob("*.json"))) >= kill_after_records:
                os.killpg(process.pid, signal.SIGKILL)
                break
            time.sleep(0.02)
        process.wait()
    seconds = time.perf_counter() - start
    if process.returncode and not kill_after_records:
        raise SystemExit(f"build failed (exit {process.returncode}): {process.stderr.read()[-2000:]}")
    return {"seconds": seconds, "peak_bytes": disk.peak, "final_bytes": disk.final}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--videos", type=int, default=10000)
    parser.add_argument("--samples-per-shard", dest="per_shard", type=int, default=512)
    parser.add_argument("--json", type=Path, default=Path("build/bench/shards.json"), help="where the figures go")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        write_demo_corpus(work / "corpus", DemoConfig(frames=6), quiet=True)
        config = write_config(work, work / "corpus", args.per_shard)
        extract(config)
        out = work / "out" / "scale"
        videos = replicate(out, args.videos)
        pristine = work / "pristine"
        shutil.copytree(out, pristine)
        first = run_build(config, out)
        manifest = json.loads((work / "manifests/scale/manifest.json").read_text())
        timings = json.loads((work / "manifests/scale/timings.json").read_text())
        shard_bytes = sum(shard["bytes"] for shard in manifest["shards"])
        shutil.rmtree(out)
        shutil.rmtree(work / "manifests")
        shutil.copytree(pristine, out)
        run_build(config, out, kill_after_records=max(1, len(manifest["shards"]) // 2))
        committed = len(list((out / "shards" / "records").glob("*.json")))
        resumed = run_build(config, out)
        resumed_timings = json.loads((work / "manifests/scale/timings.json").read_text())
    figures = {"code": code_version(), "videos": videos, "samples": manifest["samples"],
               "shards": len(manifest["shards"]), "shard_bytes": shard_bytes,
               "planning_seconds": timings["shards-planning"], "shard_stage_seconds": timings["shards"],
               "build_seconds": first["seconds"], "peak_over_shards": first["peak_bytes"] / shard_bytes,
               "final_over_shards": first["final_bytes"] / shard_bytes,
               "resume": {"committed_before_kill": committed, "seconds": resumed["seconds"],
                          "planning_seconds": resumed_timings["shards-planning"],
                          "peak_over_shards": resumed["peak_bytes"] / shard_bytes}}
    print(f"{videos} videos (replicated), {figures['samples']} samples in {figures['shards']} shards of "
          f"{args.per_shard}, {shard_bytes / 2**20:.0f} MiB")
    print(f"  orchestrator before the first shard task: {figures['planning_seconds']:.1f} s of a "
          f"{figures['shard_stage_seconds']:.1f} s shard stage; the command took {first['seconds']:.1f} s")
    print(f"  disk over the shards' bytes: peak {figures['peak_over_shards']:.3f}x, after the build "
          f"{figures['final_over_shards']:.3f}x")
    resume = figures["resume"]
    print(f"  killed with {committed} of {figures['shards']} shards committed: the resume took "
          f"{resumed['seconds']:.1f} s (planning {resume['planning_seconds']:.1f} s), disk peak "
          f"{resume['peak_over_shards']:.3f}x")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.json, figures)
    print(f"figures: {args.json}")


if __name__ == "__main__":
    main()
