"""Shards from the per-video results: a plan that cuts the build's sample order into shards, and the writing
of one planned shard, run as a dask task. Shards are written in parallel, one per worker at a time; a shard's
bytes depend only on its plan, not on which worker wrote it, nor when.

Each committed shard gets a record (``records/<shard>.json`` beside it: its sha256, size, mtime, plan digest
and where each video's rows are), after which the images of the videos it holds whole are removed: a finished
build keeps the shards and the small per-video records, not a second copy of every image. A shard whose record
matches its plan and file is not written again; a video whose images were removed and that must go into a shard
written again (a shard missing or changed, or a plan shifted by a changed source) has its images restored from
the rows a record names, checked by video id and frame index."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import atomic_path, write_json
from .extract import SMALL, ImagesRemoved, ResultError, images_path, load_result
from .hashing import content_sha256, file_record
from .shards import ATTACKS, DOMAINS, LABELS, ShardWriter, open_shard


@dataclass(frozen=True)
class Part:
    """Rows ``offset`` to ``offset + take`` of one video's result, as they go into a shard."""

    result: str
    dataset: str
    video_id: str
    label: str
    attack: str
    offset: int
    take: int


@dataclass(frozen=True)
class ShardPlan:
    """One shard: its file, its attributes and the parts it holds, in order."""

    path: str
    attrs: dict  # written into the shard; ``plan_sha256`` is :func:`plan_digest` of the rest and the parts
    parts: tuple[Part, ...]
    whole: tuple[str, ...] = ()  # results of the videos this shard holds whole: their images go once it is committed

    @property
    def samples(self) -> int:
        return sum(part.take for part in self.parts)


def plan_digest(attrs: dict, parts: tuple[Part, ...]) -> str:
    """SHA-256 of a shard's attributes and parts (results by file name: a build folder moved whole keeps it)."""
    return content_sha256({"attrs": attrs, "parts": [[p.dataset, p.video_id, Path(p.result).name, p.label, p.attack,
                                                      p.offset, p.take] for p in parts]})


def record_path(shard: str | Path) -> Path:
    """Where a committed shard's record is."""
    return Path(shard).parent / "records" / f"{Path(shard).name}.json"


def read_record(shard: str | Path, unchanged: bool = True) -> dict | None:
    """A shard's record while the shard is there and, if ``unchanged``, the file it describes (same size and
    mtime: a copy that did not keep mtimes is not), else None."""
    try:
        record = json.loads(record_path(shard).read_text())
        stat = os.stat(shard)
    except (OSError, ValueError):
        return None
    same = (record.get("bytes"), record.get("mtime_ns")) == (stat.st_size, stat.st_mtime_ns)
    return record if same or not unchanged else None


def is_current(plan: ShardPlan) -> dict | None:
    """The record of ``plan``'s shard if it is committed as planned (nothing to write), else None."""
    record = read_record(plan.path)
    return record if record and record.get("plan_sha256") == plan.attrs["plan_sha256"] else None


def remove_images(results: list[str] | tuple[str, ...]) -> None:
    """Remove the images of these results (their shards are committed); a removed one is skipped."""
    for result in results:
        images_path(result).unlink(missing_ok=True)


def cut(counts: list[int], per: int) -> list[list[tuple[int, int, int]]]:
    """Cut videos of ``counts`` samples, in order, into shards of ``per`` samples (the last one may hold
    fewer): per shard its (video index, offset, take) pieces. Videos without samples appear nowhere."""
    shards, current, room = [], [], per
    for video, n in enumerate(counts):
        offset = 0
        while offset < n:
            take = min(n - offset, room)
            current.append((video, offset, take))
            offset, room = offset + take, room - take
            if room == 0:
                shards.append(current)
                current, room = [], per
    if current:
        shards.append(current)
    return shards


def read_result(path: str | Path, names: tuple | None = None) -> tuple[dict, list, dict]:
    """A result for the shards (see load_result). An unreadable one is removed, so that the next run extracts its
    video again (ExtractFaces is incomplete while a result it listed is missing), and the error says so."""
    try:
        return load_result(Path(path), names)
    except ImagesRemoved:
        raise
    except ResultError as err:
        Path(path).unlink(missing_ok=True)
        images_path(path).unlink(missing_ok=True)
        raise ResultError(f"{err}; removed it: run the build again to extract that video anew (the other videos "
                          f"are kept)") from None


def read_small(paths: list[str]) -> list[tuple[dict, list, dict]]:
    """:func:`read_result` of each path, only its record: run on a dask worker, so that the orchestrator gets
    many videos' table entries per round trip instead of opening every result itself."""
    return [read_result(path, SMALL) for path in paths]


def video_samples(arrays: dict, part: Part) -> dict:
    """A video's extracted arrays with the per-sample label, domain, attack and video id columns."""
    n = len(arrays["frame_index"])
    return {**arrays, "label": np.full(n, LABELS[part.label], np.uint8),
            "domain": np.full(n, DOMAINS[part.dataset], np.uint8),
            "attack": np.full(n, ATTACKS[part.attack], np.uint8),
            "video_id": np.array([part.video_id] * n, dtype=object)}


def write_planned_shard(plan: ShardPlan, image_size: int, depth_size: int, compression: str,
                        optional: tuple) -> dict:
    """Write ``plan``'s shard atomically (each video's result read in turn), then its record (the sha256 hashed
    while the bytes are fresh in this machine's page cache), then remove the images of the videos it holds
    whole; return the record."""
    writer = ShardWriter(Path(plan.path), plan.samples, image_size, depth_size, plan.attrs, compression, optional)
    try:
        for part in plan.parts:
            arrays, _, _ = read_result(part.result)
            samples = video_samples(arrays, part)
            writer.write({k: v[part.offset:part.offset + part.take] for k, v in samples.items()})
    except BaseException:
        writer.abort()
        raise
    writer.commit()
    rows, row = [], 0
    for part in plan.parts:
        rows.append({"video_id": part.video_id, "result": Path(part.result).name, "row": row, "offset": part.offset,
                     "take": part.take})
        row += part.take
    record = {**file_record(plan.path), "plan_sha256": plan.attrs["plan_sha256"], "parts": rows}
    write_json(record_path(plan.path), record)
    remove_images(plan.whole)
    return record


def restore_images(result: str, video_id: str, rows: list[tuple[str, int, int, int]]) -> None:
    """Write a result's images again from committed shards: ``rows`` are (shard, first row, offset, take) pieces
    covering its samples. Each row must hold the video's id and frame index, or ResultError says
    the result must be extracted again (and its record is removed, so that the next run does)."""
    arrays, _, _ = load_result(Path(result), SMALL)
    samples, pieces, covered = len(arrays["frame_index"]), {}, 0
    for shard, row, offset, take in sorted(rows, key=lambda r: r[2]):
        if offset != covered:
            break
        with open_shard(Path(shard)) as f:
            names = [k for k in f if k not in ("label", "domain", "attack", "video_id", "frame_index")]
            held = [v.decode() if isinstance(v, bytes) else v for v in f["video_id"][row:row + take]]
            frames = f["frame_index"][row:row + take]
            if held != [video_id] * take or list(frames) != list(arrays["frame_index"][offset:offset + take]):
                break
            for name in names:
                pieces.setdefault(name, []).append(f[name][row:row + take])
        covered += take
    if covered != samples:
        Path(result).unlink(missing_ok=True)
        raise ResultError(f"{result}: its images were removed and the shards no longer hold all its samples; removed "
                          f"its record: run the build again to extract that video anew (the other videos are kept)")
    with atomic_path(images_path(result), suffix=".tmp.npz") as tmp:
        np.savez(tmp, **{name: np.concatenate(parts) for name, parts in pieces.items()})
