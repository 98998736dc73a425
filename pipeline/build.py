"""``python -m pipeline build``: run the Luigi graph with the local scheduler and summarise the build.

SIGTERM (a cluster's job ending) and SIGINT (Ctrl-C) stop a build cleanly: the dask cluster is closed (its
workers do not outlive the build; after ``kill -9`` dask's own parent pipe ends them), the finished work is counted,
and the status is 128 + the signal's number, as a shell reports a process ended by it. Every output is written
atomically, so a re-run resumes from what was finished.
"""
from __future__ import annotations

import json
import logging
import signal
import sys
import time
from pathlib import Path

import luigi
from luigi.execution_summary import LuigiStatusCode

from .cluster import close_clients, start_client
from .config import load_config
from .identity import check_outputs


def run_build(config_path, *, quiet: bool = False, as_json: bool = False, verbose: bool = False) -> int:
    """Build (or finish, or confirm) the shards of a config; return the exit status. ``as_json``: the closing
    summary (:func:`summary_record`) is printed as JSON, the only thing on stdout. ``verbose``: Luigi's and
    dask's INFO lines too (else their warnings, and dask's only from errors up: its nanny warns about every
    worker it stops at the end of a build); ``quiet``: errors only, no progress bars."""
    levels = log_levels(quiet, verbose)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)
    cfg = load_config(config_path)  # fail early, naming the file, on a bad config
    check_outputs(cfg)  # a changed config under an existing name: BuildConflict (a ValueError), nothing touched
    if (cfg.manifest_path / "manifest.json").is_file():  # BuildManifest's output: nothing left to do
        _report(summary_record(cfg, "already complete"), as_json)
        return 0
    start = time.perf_counter()
    from .tasks import BuildManifest
    start_client(cfg)  # the workers start (and import torch) while this process indexes the datasets
    task = BuildManifest(config=str(config_path), quiet=quiet)
    failures = []
    handler = luigi.Task.event_handler(luigi.Event.FAILURE)(lambda task, err: failures.append((task, err)))
    previous = {number: signal.signal(number, _stop) for number in (signal.SIGTERM, signal.SIGINT)}
    try:
        result = luigi.build([task], local_scheduler=True, detailed_summary=True,
                             log_level=logging.getLevelName(levels["luigi"]))
    except BuildStopped as stop:
        close_clients()
        print(f"build {cfg.name!r} stopped by {stop.signal_name} after {time.perf_counter() - start:.1f} s: "
              f"{finished_work(cfg)}; finished work is kept and a re-run resumes", file=sys.stderr)
        if as_json:
            print(json.dumps({"build": cfg.name, "status": f"stopped by {stop.signal_name}",
                              "seconds": round(time.perf_counter() - start, 1), "finished": finished_work(cfg)}))
        return 128 + stop.number
    finally:
        for number, handler_before in previous.items():
            signal.signal(number, handler_before)
        luigi.Task.remove_event_handler(luigi.Event.FAILURE, handler)
        close_clients()
    if result.status not in (LuigiStatusCode.SUCCESS, LuigiStatusCode.SUCCESS_WITH_RETRY):
        print(result.summary_text, file=sys.stderr if as_json else sys.stdout)
        for failed, err in failures:  # the reasons, after Luigi's tracebacks
            print(f"error in {failed.task_family}: {err}", file=sys.stderr)
        seconds = round(time.perf_counter() - start, 1)
        if as_json:
            print(json.dumps({"build": cfg.name, "status": "failed", "seconds": seconds,
                              "errors": [f"{failed.task_family}: {err}" for failed, err in failures],
                              "finished": finished_work(cfg)}))
        else:
            print(f"build {cfg.name!r} FAILED after {seconds} s; finished videos are kept, a re-run resumes")
        return 1
    _report(summary_record(cfg, "built"), as_json)
    return 0


def log_levels(quiet: bool, verbose: bool) -> dict:
    """The level of each library's logger during a build: Luigi's and dask's (distributed)."""
    if verbose:
        return {"luigi": logging.INFO, "distributed": logging.INFO}
    if quiet:
        return {"luigi": logging.ERROR, "distributed": logging.ERROR}
    return {"luigi": logging.WARNING, "distributed": logging.ERROR}


def _report(record: dict, as_json: bool) -> None:
    print(json.dumps(record, indent=2, sort_keys=True) if as_json else format_summary(record))


class BuildStopped(KeyboardInterrupt):
    """SIGTERM or SIGINT during a build: a KeyboardInterrupt, which Luigi lets through (no task records it as
    its own failure, no other task starts)."""

    def __init__(self, number: int):
        super().__init__(number)
        self.number, self.signal_name = number, signal.Signals(number).name


def _stop(number, frame):
    raise BuildStopped(number)


def finished_work(cfg) -> str:
    """What an interrupted build had finished: per-video results (their records) and committed shards."""
    results = sum(1 for p in (cfg.build_dir / "videos").rglob("*.json") if not p.name.startswith("."))
    shards = sum(1 for _ in (cfg.build_dir / "shards").glob("shard-*.h5"))
    return f"{results} video(s) extracted, {shards} shard(s) written"


def summary_record(cfg, status: str) -> dict:
    """What a finished build made and skipped, from its manifest: plain values (``--json`` prints them)."""
    manifest = json.loads((cfg.manifest_path / "manifest.json").read_text())
    return {"build": cfg.name, "status": status, "samples": manifest["samples"],
            "shards": len(manifest["shards"]), "shard_dir": manifest["shard_dir"],
            "videos": {d: s["videos"] for d, s in manifest["sources"].items()},
            "depth_backend": manifest["depth_backend"], "depth_sources": manifest.get("depth_sources", {}),
            "depth_estimates": "depth_estimate" in manifest.get("shard_datasets", ()),
            "config_hash": manifest["config_hash"], "rejects": manifest["rejects"],
            "rotated_videos": manifest.get("rotated_videos", {}), "orientation": manifest.get("orientation", {}),
            "stage_seconds": json.loads((cfg.manifest_path / "timings.json").read_text()),
            "manifest": str(cfg.manifest_path / "manifest.json")}


def format_summary(record: dict) -> str:
    """:func:`summary_record` as the lines a terminal shows."""
    rejects = record["rejects"]
    lines = [f"build {record['build']!r} is already complete: nothing to do"] \
        if record["status"] == "already complete" else []
    lines += [f"build {record['build']!r}: {record['samples']} samples in {record['shards']} shard(s) under "
              f"{record['shard_dir']}",
              "  sources: " + ", ".join(f"{d} {n} videos" for d, n in record["videos"].items()),
              f"  depth backend: {record['depth_backend']} ("
              + (", ".join(f"{n} {v}" for n, v in record["depth_sources"].items()) or "no maps") + " samples)"
              + ("; depth estimates stored" if record["depth_estimates"] else "")
              + f"; config hash {record['config_hash'][:12]}",
              f"  skipped: {rejects['frames']} frame(s), {rejects['videos']} video(s); flagged: "
              f"{rejects.get('flagged_videos', 0)} video(s) whose frames are kept (see rejects.csv)",
              "  turned upright: " + (", ".join(f"{n} video(s) by {d} degrees" for d, n in
                                                 record["rotated_videos"].items()) or "none")]
    orientation = record["orientation"]
    if orientation:
        lines.append(f"  orientation: {orientation['sure']} video(s) upright in every sampled frame, "
                     f"{orientation['compared']} compared turned by 90, 180 and 270 degrees"
                     + (f"; kept as they are although a turn showed more upright faces (within the margin): "
                        + ", ".join(f"{v} {e}" for v, e in list(orientation["close"].items())[:5])
                        + (f" and {len(orientation['close']) - 5} more" if len(orientation["close"]) > 5 else "")
                        if orientation["close"] else ""))
    lines += [f"    {n} x {reason}" for reason, n in rejects["by_reason"].items()]
    lines.append("  stage seconds (this and earlier runs): "
                 + ", ".join(f"{k} {v:.1f}" for k, v in record["stage_seconds"].items()))
    lines.append(f"  manifest: {record['manifest']} (check with: python -m pipeline audit "
                 f"{Path(record['manifest']).parent})")
    return "\n".join(lines)
