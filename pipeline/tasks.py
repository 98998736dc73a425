"""The build as a Luigi task graph; each task has one output, written atomically:

    IndexSource(dataset) -> ExtractFaces(dataset) -> WriteShards -> BuildManifest

ExtractFaces hands the videos to dask (a LocalCluster, or the scheduler named in the config) in tasks of a few
videos, and each video's result is its own atomic file, so a killed build resumes without redoing finished
videos; WriteShards has the workers write the shards, one task per shard.
Run with ``python -m pipeline build --config FILE`` or
``luigi --module pipeline.tasks BuildManifest --config FILE --local-scheduler``; Luigi's own command line then
exits non-zero on a failed build from any folder (:data:`EXIT_CODES`, unless a luigi.cfg says otherwise).
"""
from __future__ import annotations

import hashlib
import json
import math
import os
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import luigi
import numpy as np
import pandas as pd
from tqdm import tqdm

from .assemble import (Part, ShardPlan, cut, is_current, plan_digest, read_record, read_small, record_path,
                       remove_images, restore_images, write_planned_shard)
from .atomic import write_csv, write_json
from .cluster import close_clients, dask_client
from .config import BuildConfig, load_config
from .depth import backend_model, resolve_backend
from .extract import SourceChanged, VideoJob, extract_videos, images_path, resolve_device, result_path
from .hashing import content_sha256, sha256_file
from .identity import check_outputs, claim_build_dir
from .index import index_dataset, read_known, read_table, write_index
from .provenance import code_version, package_versions
from .shards import ATTACKS, DOMAINS, LABELS, PER_SAMPLE, ensure_space, shard_bytes

# Luigi's command line exits 0 whatever happened unless [retcode] is configured: a failed or unschedulable build
# exits non-zero so that batch jobs see it. Set when this module is imported (luigi --module pipeline.tasks),
# for the options a luigi.cfg does not set.
EXIT_CODES = {"already_running": 10, "missing_data": 20, "not_run": 25, "task_failed": 30, "scheduling_error": 35,
              "unhandled_exception": 40}


def _exit_codes_by_default() -> None:
    config = luigi.configuration.get_config()
    for option, code in EXIT_CODES.items():
        if not config.has_option("retcode", option):
            config.set("retcode", option, str(code))


_exit_codes_by_default()


class BuildTask(luigi.Task):
    config = luigi.Parameter(description="build config YAML")
    quiet = luigi.BoolParameter(default=False, significant=False)

    @cached_property
    def cfg(self) -> BuildConfig:
        return load_config(self.config)

    def complete(self) -> bool:
        check_outputs(self.cfg)
        return super().complete()

    def record_time(self, stage: str, seconds: float) -> None:
        path = self.cfg.build_dir / "timings" / f"{stage}.json"
        write_json(path, {"stage": stage, "seconds": round(seconds, 3)})


class IndexSource(BuildTask):
    dataset = luigi.Parameter()

    def output(self):
        return luigi.LocalTarget(str(self.cfg.build_dir / "index" / f"{self.dataset}.csv"))

    def run(self):
        start = time.perf_counter()
        cfg = self.cfg
        if self.dataset not in cfg.datasets:
            raise ValueError(f"{self.config}: dataset {self.dataset!r} is not in datasets")
        claim_build_dir(cfg)
        with warnings.catch_warnings():
            warnings.simplefilter("always")
            root = cfg.datasets[self.dataset]
            table = cfg.index_tables.get(self.dataset)
            known = read_known(table, self.dataset, root) if table else None
            index = index_dataset(self.dataset, root, quiet=self.quiet, known=known)
        write_index(index, self.output().path)
        self.record_time(f"index-{self.dataset}", time.perf_counter() - start)


class ExtractFaces(BuildTask):
    dataset = luigi.Parameter()

    def requires(self):
        return IndexSource(config=self.config, dataset=self.dataset, quiet=self.quiet)

    def output(self):
        return luigi.LocalTarget(str(self.cfg.build_dir / "extract" / f"{self.dataset}.csv"))

    def complete(self) -> bool:
        """Its table is written and every result the table lists is there (WriteShards removes unreadable ones,
        to be extracted again)."""
        if not super().complete():
            return False
        videos = self.cfg.build_dir / "videos"
        return all((videos / result).is_file() for result in pd.read_csv(self.output().path, dtype=str)["result"])

    def run(self):
        start = time.perf_counter()
        cfg = self.cfg
        table = read_table(self.input().path)
        root = Path(cfg.datasets[self.dataset])
        jobs = [VideoJob(r.video_id, str(root / r.relpath), r.label, r.sha256, self.dataset) for r in table.itertuples()]
        backend = depth_backend(cfg)
        claim_build_dir(cfg)
        remove_leftovers(cfg.build_dir / "videos" / self.dataset)
        finished = {j.video_id for j in jobs if result_path(cfg.build_dir, j).exists()}
        if len(finished) == len(jobs):
            todo, client, size = [], None, 0  # finished before its table was written: no cluster needed
        else:
            client = dask_client(cfg)
            size = videos_per_task(cfg, workers_device(client, cfg))
            tasks = [jobs[i:i + size] for i in range(0, len(jobs), size)]  # fixed by the index: the same batches
            todo = [task for task in tasks if not all(j.video_id in finished for j in task)]
        futures = {client.submit(extract_videos, task, cfg, backend, str(cfg.build_dir), size, pure=False,
                                 key=f"extract-{task[0].sha256[:16]}-{task[0].video_id}-{len(task)}"): task
                   for task in todo}
        left = sum(len(task) for task in todo)
        with tqdm(total=len(jobs), initial=len(jobs) - left, unit="video", desc=f"{self.dataset}: faces",
                  disable=self.quiet, dynamic_ncols=True) as bar:
            failures = collect(client, futures, cfg, bar)
        if failures:
            raise RuntimeError(f"{len(failures)} video(s) of {self.dataset} could not be processed; the others "
                               f"are kept and a re-run resumes:\n" + "\n".join(f"  {f}" for f in failures))
        videos = cfg.build_dir / "videos"
        rows = [{"video_id": j.video_id, "result": result_path(cfg.build_dir, j).relative_to(videos).as_posix()}
                for j in jobs]
        write_csv(self.output().path, pd.DataFrame(rows, columns=["video_id", "result"]))
        self.record_time(f"extract-{self.dataset}", time.perf_counter() - start)


def workers_device(client, cfg: BuildConfig) -> str:
    """The device the workers extract on: ``compute.device``, or for ``auto`` what the workers themselves see
    (each is asked at once: they import torch for the detector anyway, and the orchestrator never does); "cpu"
    when they disagree. With no worker for ``compute.worker_timeout`` seconds, NoWorkers."""
    if cfg.compute.device != "auto":
        return cfg.compute.device
    from dask.distributed import wait
    pins = [{"workers": [w]} for w in client.scheduler_info()["workers"]] or [{}]  # none yet: whoever comes
    probes = [client.submit(resolve_device, "auto", pure=False, **pin) for pin in pins]
    try:
        wait(probes, timeout=cfg.compute.worker_timeout)
    except TimeoutError:
        pass
    answered = [probe for probe in probes if probe.status == "finished"]
    client.cancel([probe for probe in probes if probe not in answered])
    if not answered:
        raise NoWorkers(f"no dask worker at {client.scheduler.address} answered within "
                        f"{cfg.compute.worker_timeout:.0f} s (compute.worker_timeout); nothing was extracted yet")
    devices = set(ClusterWatch(client, cfg, "nothing was extracted yet").gather(answered, []))
    return devices.pop() if len(devices) == 1 else "cpu"


def videos_per_task(cfg: BuildConfig, device: str) -> int:
    """``compute.videos_per_task``, or automatically enough videos for DETECT_BATCH frames of ``device`` per
    task when the frame policy says how many frames a video gives (else one)."""
    if cfg.compute.videos_per_task:
        return cfg.compute.videos_per_task
    per_video = cfg.frames.count if cfg.frames.policy == "even" else cfg.frames.max_frames
    return max(1, math.ceil(DETECT_BATCH[device] / per_video)) if per_video else 1


# frames per task, at least: a GPU is fed 64 frames per detector call; on the CPU, tasks of 16 frames spend a
# third less of the orchestrator's and a tenth less of the workers' time on dask than a task per video
# (measured on the demo corpus at 4 frames per video), and MTCNN runs 6% faster on 16 frames than on 4
DETECT_BATCH = {"cuda": 64, "cpu": 16}


def collect(client, futures: dict, cfg: BuildConfig, bar) -> list[str]:
    """Wait for the extraction tasks (each a list of videos); return the failures, each naming its video and
    file. A source that changed since indexing stops the dataset's extraction (the other tasks are cancelled;
    finished videos are kept)."""
    failures = []
    for done in as_they_finish(client, futures, cfg, "finished videos are kept and a re-run resumes"):
        for future, outcome in done:
            task = futures[future]
            bar.update(len(task))
            outcomes = [outcome] * len(task) if isinstance(outcome, BaseException) else outcome
            for job, outcome in zip(task, outcomes):
                if isinstance(outcome, Exception):
                    failures.append(f"{job.video_id} ({job.path}): {outcome}")
            if any(isinstance(outcome, SourceChanged) for outcome in outcomes):
                client.cancel([f for f in futures if not f.done()])
                return failures
    return failures


def as_they_finish(client, futures, cfg: BuildConfig, kept: str):
    """Yield, in rounds as they finish, [(future, its result or its exception)]. Every wait on the cluster is
    bounded, the gathering of finished results included (a worker killed after finishing takes their results
    with it, and dask computes them again): with no dask worker for ``compute.worker_timeout`` seconds, the rest
    is cancelled and NoWorkers names the scheduler and the workers lost (``kept``: what a re-run starts from)."""
    from dask.distributed import wait
    if not futures:
        return  # nothing to wait for (and maybe no cluster: every video was finished)
    watch, pending = ClusterWatch(client, cfg, kept), set(futures)
    while pending:
        try:
            done = wait(pending, timeout=WORKER_POLL, return_when="FIRST_COMPLETED").done
        except TimeoutError:
            done = set()
        pending -= done
        watch.check(pending)
        finished = [future for future in done if future.status == "finished"]
        results = dict(zip(finished, watch.gather(finished, pending)))
        yield [(future, results[future] if future in results else future.exception()) for future in done]


class ClusterWatch:
    """The dask workers a build waits on: when none has been there for ``compute.worker_timeout`` seconds, the
    work outstanding is cancelled and NoWorkers raised, naming the workers last seen."""

    def __init__(self, client, cfg: BuildConfig, kept: str):
        self.client, self.cfg, self.kept = client, cfg, kept
        self.seen, self.since = set(client.nthreads()), time.monotonic()

    def check(self, outstanding) -> None:
        workers = set(self.client.nthreads())
        if workers:
            self.seen, self.since = workers, time.monotonic()
        elif outstanding and time.monotonic() - self.since > self.cfg.compute.worker_timeout:
            self.client.cancel(list(outstanding))
            lost = f"; lost: the worker(s) {', '.join(sorted(self.seen))}" if self.seen else ""
            raise NoWorkers(f"no dask worker at {self.client.scheduler.address} for "
                            f"{self.cfg.compute.worker_timeout:.0f} s (compute.worker_timeout) with "
                            f"{len(outstanding)} task(s) to go{lost}; {self.kept}")

    def gather(self, futures: list, pending) -> list:
        """The results of finished ``futures``, waiting only while some worker is there to compute them again.
        One round trip per future: ``Client.gather`` has no timeout, and would wait for ever for results whose
        worker was killed after finishing them."""
        results = []
        for future in futures:
            while True:
                try:
                    results.append(future.result(timeout=WORKER_POLL))
                    break
                except TimeoutError:
                    self.check({*pending, *futures})
        return results


class NoWorkers(RuntimeError):
    """The dask cluster has had no worker for longer than the build waits."""


WORKER_POLL = 1.0  # seconds between checks of the cluster's workers


def remove_leftovers(folder: Path) -> None:
    """Delete the hidden temporary files a killed run left in ``folder`` (they are never read)."""
    if folder.is_dir():
        for path in folder.rglob(".*.tmp*"):
            path.unlink(missing_ok=True)


def depth_backend(cfg: BuildConfig) -> str:
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        return resolve_backend(cfg.depth.backend, cfg.depth.weights_dir)


class WriteShards(BuildTask):
    """Cuts the per-video results, in build order, into shards of ``samples_per_shard`` samples and has the
    dask workers write them, one shard per task (pipeline.assemble); this process reads only the results'
    records for the tables. A worker holds a video and up to 64 waiting rows at a time. A video's images are
    removed once every shard holding it is committed, so the disk holds about one copy of the samples: the
    results' until the shards are written, then the shards' (plus the shards in flight)."""

    def requires(self):
        return {d: ExtractFaces(config=self.config, dataset=d, quiet=self.quiet) for d in sorted(self.cfg.datasets)}

    def output(self):
        return luigi.LocalTarget(str(self.cfg.build_dir / "shards" / "samples.csv"))

    def run(self):
        start = time.perf_counter()
        cfg = self.cfg
        shard_dir = cfg.build_dir / "shards"
        remove_leftovers(shard_dir)
        videos, rejects = self.videos()
        plans, rows = plan_shards(videos, cfg)
        todo = shards_to_write(plans, cfg)
        self.record_time("shards-planning", time.perf_counter() - start)  # the orchestrator's, before the workers'
        write_shards(plans, todo, cfg, optional_datasets(cfg), self.quiet)
        close_clients(wait=False)  # the workers shut down while the tables are written
        write_json(extraction_path(cfg), detection_counts(videos))
        write_json(orientation_path(cfg), orientation_summary(videos))
        _write_csv(shard_dir / "rejects.csv", rejects, ["video_id", "frame_index", "reason", "action"])
        _write_csv(self.output().path, rows, SAMPLE_COLUMNS)
        self.record_time("shards", time.perf_counter() - start)

    def videos(self) -> tuple[list[ResultInfo], list[dict]]:
        """Every video's result in build order (its record, read by the dask workers), and the rows of
        rejects.csv."""
        cfg, entries, videos, rejects = self.cfg, [], [], []
        for dataset, target in sorted(self.input().items()):
            table = read_table(self.requires()[dataset].input().path)
            sources = dict(zip(table["video_id"], table.to_dict("records")))
            entries += [(dataset, row.video_id, str(cfg.build_dir / "videos" / row.result), sources[row.video_id])
                        for row in pd.read_csv(target.path, dtype=str).itertuples()]
        small = read_small_on_workers([entry[2] for entry in entries], cfg)
        for (dataset, video_id, result, source), (arrays, video_rejects, meta) in zip(entries, small):
            rejects += [{"video_id": video_id, "frame_index": i, "reason": why, "action": "rejected"}
                        for i, why in video_rejects]
            flags = ""
            if meta.get("truncated") and cfg.frames.truncated == "keep":
                flags = "truncated"
                rejects.append({"video_id": video_id, "frame_index": -1, "reason": meta["truncated"],
                                "action": "flagged (frames kept)"})
            rotation = (meta.get("rotation", 0) + meta.get("rotation_tag", 0)) % 360
            videos.append(ResultInfo(dataset, video_id, result, source, flags, rotation, arrays["frame_index"],
                                     arrays["depth_source"], meta.get("detection"), meta.get("orientation")))
        return videos, rejects


def read_small_on_workers(paths: list[str], cfg: BuildConfig) -> list[tuple[dict, list, dict]]:
    """The record (small arrays, rejects and metadata) of each result (:func:`pipeline.assemble.read_small`), read
    by the dask workers RESULTS_PER_TASK at a time, in order. An unreadable result stops the build, naming its file
    (removed, so that the next run extracts that video again)."""
    if not paths:
        return []
    client, tag = dask_client(cfg), cfg.config_hash()[:12]
    chunks = [paths[i:i + RESULTS_PER_TASK] for i in range(0, len(paths), RESULTS_PER_TASK)]
    futures = [client.submit(read_small, chunk, pure=False, key=f"tables-{tag}-{number}")
               for number, chunk in enumerate(chunks)]
    read = dict(gathered(client, futures, cfg))
    return [entry for future in futures for entry in read[future]]


def gathered(client, futures: list, cfg: BuildConfig):
    """(future, result) of the work after extraction as it finishes, one round trip per round; the first
    failure raises, naming its file, and the rest is cancelled (a re-run writes the shards again)."""
    try:
        for done in as_they_finish(client, futures, cfg, "finished videos are kept, the shards are written again"):
            for future, outcome in done:
                if isinstance(outcome, BaseException):
                    raise outcome
                yield future, outcome
    finally:
        client.cancel([future for future in futures if not future.done()])


RESULTS_PER_TASK = 256  # results whose records one dask task reads: 40 tasks for 10,000 videos


@dataclass(frozen=True)
class ResultInfo:
    """What the tables need of one video's result, without its images."""

    dataset: str
    video_id: str
    result: str
    source: dict  # its row of the index
    flags: str
    rotation: int
    frame_index: np.ndarray
    depth_source: np.ndarray
    detection: dict | None  # device and videos per task of its detection; None if it was never detected
    orientation: dict | None = None  # each orientation's upright evidence (pipeline.faces.find_upright)


def orientation_summary(videos: list[ResultInfo]) -> dict:
    """How the videos' orientations were decided: ``sure`` (every sampled frame upright at SURE_UPRIGHT, turns
    not tried), ``compared`` (the four orientations compared), ``turned`` by degrees, and ``close``: the compared
    videos kept as they are although a turn showed more upright evidence (within TURN_MARGIN), with each
    orientation's evidence, for a reviewer to look at."""
    decided = [v for v in videos if v.orientation]
    close = {}
    for v in decided:
        evidence = {k: e["evidence"] for k, e in v.orientation.items() if isinstance(e, dict)}
        if v.orientation["turn"] == 0 and max(evidence.values()) > evidence["0"]:
            close[v.video_id] = evidence
    turned = Counter(str(v.orientation["turn"]) for v in decided if v.orientation["turn"])
    return {"sure": sum(v.orientation["decided"] == "sure" for v in decided),
            "compared": sum(v.orientation["decided"] == "compared" for v in decided),
            "turned": dict(sorted(turned.items())), "close": close}


def orientation_path(cfg: BuildConfig) -> Path:
    """Where WriteShards records how the videos' orientations were decided (the manifest's ``orientation``)."""
    return cfg.build_dir / "shards" / "orientation.json"


def extraction_path(cfg: BuildConfig) -> Path:
    """Where WriteShards records what detected the faces (the manifest's ``extraction``)."""
    return cfg.build_dir / "shards" / "extraction.json"


def detection_counts(videos: list[ResultInfo]) -> dict:
    """Per dataset, the videos detected per (device, videos per task), in that order: one entry for a build made
    in one go or resumed on the same kind of machine, more when a build was resumed on another device. Videos
    whose result predates the record, but has samples, count under device null."""
    counts: dict = {}
    for v in videos:
        if v.detection is None and len(v.frame_index) == 0:
            continue  # never detected: its video could not be decoded, or was rejected before detection
        detection = v.detection or {}
        key = detection.get("device"), detection.get("videos_per_task")
        per = counts.setdefault(v.dataset, {})
        per[key] = per.get(key, 0) + 1
    return {dataset: [{"device": device, "videos_per_task": size, "videos": n}
                      for (device, size), n in sorted(per.items(), key=lambda item: (item[0][0] is None,
                                                                                     item[0][0] or "", item[0][1] or 0))]
            for dataset, per in sorted(counts.items())}


def plan_shards(videos: list[ResultInfo], cfg: BuildConfig) -> tuple[list[ShardPlan], list[dict]]:
    """The shards of the build's sample order, and the rows of samples.csv (shard and row of every sample)."""
    backend = depth_backend(cfg)
    model = json.dumps(backend_model(backend, cfg.depth.weights_dir), sort_keys=True)
    plans, rows, counts = [], [], [len(v.frame_index) for v in videos]
    for number, pieces in enumerate(cut(counts, cfg.shards.samples_per_shard)):
        path, parts, first_row = cfg.build_dir / "shards" / f"shard-{number:05d}.h5", [], 0
        for video, offset, take in pieces:
            v, meta = videos[video], videos[video].source
            parts.append(Part(v.result, v.dataset, v.video_id, meta["label"], meta["attack"], offset, take))
            rows += [{"shard": path.name, "row": first_row + i, "video_id": v.video_id, "frame_index": int(frame),
                      "dataset": v.dataset, "domain": meta["domain"], "split": meta["split"], "label": meta["label"],
                      "attack": meta["attack"], "subject": meta["subject"], "flags": v.flags, "rotation": v.rotation,
                      "depth_source": str(source)}
                     for i, (frame, source) in enumerate(zip(v.frame_index[offset:offset + take],
                                                             v.depth_source[offset:offset + take]))]
            first_row += take
        first = videos[pieces[0][0]]
        attrs = {"config_hash": cfg.config_hash(), "build": cfg.name, "shard": number, "depth_backend": backend,
                 "depth_model": model, "first_sample": f"{first.video_id}#{first.frame_index[pieces[0][1]]}"}
        attrs["plan_sha256"] = plan_digest(attrs, tuple(parts))
        whole = tuple(videos[video].result for video, offset, take in pieces if take == counts[video])
        plans.append(ShardPlan(str(path), attrs, tuple(parts), whole))
    return plans, rows


def shards_to_write(plans: list[ShardPlan], cfg: BuildConfig) -> list[ShardPlan]:
    """The plans whose shards are not committed as planned yet, with the images they need restored
    (restore_removed) and the shards of an earlier, longer plan removed."""
    todo = [plan for plan in plans if not is_current(plan)]
    restore_removed(todo, cfg)
    remove_stale_shards(cfg.build_dir / "shards", {Path(plan.path).name for plan in plans})
    return todo


def write_shards(plans: list[ShardPlan], todo: list[ShardPlan], cfg: BuildConfig, optional: tuple,
                 quiet: bool) -> None:
    """Have the dask workers write the shards of ``todo`` (of ``plans``), and remove the images of the videos
    whose shards are all committed. The first failure stops the build (it names the shard or the result file;
    shards committed are kept, the others are written by the next run, to the same bytes)."""
    finish, writing = image_remover(plans), {plan.path for plan in todo}
    for plan in plans:
        if plan.path not in writing:
            remove_images(plan.whole)  # committed by a run killed before it removed them
            finish(plan)
    if not todo:
        return
    client, tag = dask_client(cfg), cfg.config_hash()[:12]
    at_once = min(len(todo), max(1, sum(client.nthreads().values())))
    largest = max(shard_bytes(plan.samples, cfg.face.size, cfg.depth.size, optional) for plan in todo)
    ensure_space(cfg.build_dir / "shards" / "shard-*.h5", at_once * largest,
                 f"the build's {len(todo)} shard(s), {at_once} at a time (each video's images are removed once its "
                 f"shards are committed)")
    futures = [client.submit(write_planned_shard, plan, cfg.face.size, cfg.depth.size, cfg.shards.compression,
                             optional, pure=False, key=f"shard-{tag}-{Path(plan.path).name}")
               for plan in todo]
    plan_of, committed = dict(zip(futures, todo)), sum(plan.samples for plan in plans if plan.path not in writing)
    with tqdm(total=sum(plan.samples for plan in plans), initial=committed, unit="sample", desc="shards",
              disable=quiet, dynamic_ncols=True) as bar:
        for future, _ in gathered(client, futures, cfg):
            finish(plan_of[future])
            bar.update(plan_of[future].samples)


def image_remover(plans: list[ShardPlan]):
    """A function to call with each plan as its shard is committed: it removes the images of the videos that
    straddle shards once all of theirs are committed (each shard's task removes those it holds whole)."""
    shards_of: dict = {}
    for plan in plans:
        for part in plan.parts:
            shards_of.setdefault(part.result, set()).add(plan.path)
    waiting = {result: shards for result, shards in shards_of.items() if len(shards) > 1}
    committed: set = set()

    def finish(plan: ShardPlan) -> None:
        committed.add(plan.path)
        remove_images([part.result for part in plan.parts
                       if part.result in waiting and waiting[part.result] <= committed])
    return finish


def restore_removed(todo: list[ShardPlan], cfg: BuildConfig) -> None:
    """Restore, on the workers, the images of the videos that shards about to be written need and whose images
    were removed (pipeline.assemble.restore_images), from the rows the committed shards' records name (in a
    build folder copied without its mtimes too: the rows are checked, not the files). Runs before any shard is
    written."""
    missing = {part.result: part.video_id for plan in todo for part in plan.parts
               if not images_path(part.result).exists()}
    if not missing:
        return
    rows: dict = {}
    for shard in sorted((cfg.build_dir / "shards").glob("shard-*.h5")):
        for part in (read_record(shard, unchanged=False) or {}).get("parts", []):  # each row is checked
            rows.setdefault((part["video_id"], part["result"]), []).append(
                (str(shard), part["row"], part["offset"], part["take"]))
    client, tag = dask_client(cfg), cfg.config_hash()[:12]
    futures = [client.submit(restore_images, result, video_id, rows.get((video_id, Path(result).name), []),
                             pure=False, key=f"restore-{tag}-{number}")
               for number, (result, video_id) in enumerate(sorted(missing.items()))]
    for _ in gathered(client, futures, cfg):
        pass


def remove_stale_shards(shard_dir: Path, planned: set) -> None:
    """Remove the shards (and records) an earlier plan of this build made beyond this one's (a dataset that lost
    videos makes fewer shards); after restore_removed, which may read them."""
    for shard in shard_dir.glob("shard-*.h5"):
        if shard.name not in planned:
            record_path(shard).unlink(missing_ok=True)
            shard.unlink()


def shard_sha256(path: Path) -> str:
    """A shard's sha256: the one its record holds (pipeline.assemble.record_path, written by the worker that
    wrote it) while the file is as it left it, else hashed now."""
    record = read_record(path)
    return record["sha256"] if record else sha256_file(path)


def optional_datasets(cfg: BuildConfig) -> tuple:
    """The optional per-sample datasets (pipeline.shards.OPTIONAL) this build's shards hold."""
    return ("depth_estimate",) if cfg.depth.store_estimate else ()


# flags: "truncated" for the frames of a video that ended early; rotation: clockwise degrees its frames were
# turned to be upright (the container's tag and the turn the detector found); depth_source: what made the
# sample's depth map (the target of a live face, the stored estimate of an attack; "none" when no map was made)
SAMPLE_COLUMNS = ["shard", "row", "video_id", "frame_index", "dataset", "domain", "split", "label", "attack",
                  "subject", "flags", "rotation", "depth_source"]


class BuildManifest(BuildTask):
    def requires(self):
        return WriteShards(config=self.config, quiet=self.quiet)

    def output(self):
        return luigi.LocalTarget(str(self.cfg.manifest_path / "manifest.json"))

    def run(self):
        cfg = self.cfg
        backend = depth_backend(cfg)
        out = cfg.manifest_path
        shard_dir = cfg.build_dir / "shards"
        samples = pd.read_csv(self.input().path, dtype=str)
        rejects = pd.read_csv(shard_dir / "rejects.csv", dtype=str)
        sources = pd.concat([read_table(cfg.build_dir / "index" / f"{d}.csv") for d in sorted(cfg.datasets)])
        rejected = rejects["action"] == "rejected"  # the others are flagged, their frames kept
        table_sha256 = {name: hashlib.sha256(write_csv(out / name, frame).encode()).hexdigest()
                        for name, frame in (("samples.csv", samples), ("rejects.csv", rejects),
                                            ("sources.csv", sources))}
        shards, extraction = [], extraction_path(cfg)
        for shard, group in samples.groupby("shard", sort=True):
            path = shard_dir / shard
            shards.append({"file": shard, "sha256": shard_sha256(path), "samples": len(group),
                           "bytes": path.stat().st_size})
        manifest = {
            "build": cfg.name, "config": cfg.to_dict(), "config_hash": cfg.config_hash(),
            "code": code_version(), "packages": package_versions(),
            "depth_backend": backend, "depth_model": backend_model(backend, cfg.depth.weights_dir),
            "depth_sources": {k: int(v) for k, v in samples["depth_source"].str.split(":").str[0]
                              .value_counts().sort_index().items()},
            "local_workers": None if cfg.compute.scheduler else cfg.compute.worker_count(),  # workers: auto, resolved
            "extraction": json.loads(extraction.read_text()) if extraction.is_file() else {},  # the devices and
            # batches that detected the faces: they change boxes' last bits
            "shard_dir": str(shard_dir.resolve()),  # and from the manifest folder, for a build moved whole:
            "shard_dir_from_manifest": os.path.relpath(shard_dir.resolve(), out.resolve()),
            "shard_datasets": list(PER_SAMPLE + optional_datasets(cfg)), "label_polarity": LABELS, "attack_values": ATTACKS, "domain_values": DOMAINS,
            "sources": {d: {"root": str(Path(cfg.datasets[d]).resolve()),
                            "videos": int((sources["dataset"] == d).sum())} for d in sorted(cfg.datasets)},
            "source_table_sha256": table_sha256["sources.csv"],
            "samples": int(len(samples)), "samples_table_sha256": table_sha256["samples.csv"],
            "shards": shards,
            "rejects": {"frames": int(((rejects["frame_index"].astype(int) >= 0) & rejected).sum()),
                        "videos": int(((rejects["frame_index"].astype(int) < 0) & rejected).sum()),
                        "flagged_videos": int((~rejected).sum()),
                        "by_reason": _reason_counts(rejects), "table_sha256": table_sha256["rejects.csv"]},
            "orientation": (json.loads(orientation_path(cfg).read_text()) if orientation_path(cfg).is_file()
                            else {}),  # how each video's orientation was decided (counts, close calls)
            "rotated_videos": {str(k): int(v) for k, v in samples.drop_duplicates("video_id")
                               .query("rotation != '0'")["rotation"].value_counts().sort_index().items()},
            "counts": {f"{k[0]}/{k[1]}/{k[2]}": int(v)
                       for k, v in samples.groupby(["dataset", "split", "label"]).size().items()},
        }
        manifest["content_sha256"] = content_sha256(manifest)  # audit and the trainer check it
        timings = {}
        for path in sorted((cfg.build_dir / "timings").glob("*.json")):
            entry = json.loads(path.read_text())
            timings[entry["stage"]] = entry["seconds"]
        write_json(out / "timings.json", timings)  # kept apart: the manifest is identical across rebuilds
        write_json(self.output().path, manifest)


def _reason_counts(rejects: pd.DataFrame) -> dict:
    kinds = rejects["reason"].str.replace(r"\d+(\.\d+)?", "N", regex=True)
    return {k: int(v) for k, v in kinds.value_counts().sort_index().items()}


def _write_csv(path, rows, columns) -> None:
    write_csv(path, pd.DataFrame(rows, columns=columns))
