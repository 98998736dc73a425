"""Shards from the per-video results: a plan that cuts the build's sample order into shards, and the writing
of one planned shard, run as a dask task. Shards are written in parallel, one per worker at a time; a shard's
bytes depend only on its plan, not on which worker wrote it, nor when."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .extract import ResultError, load_result
from .hashing import file_record
from .shards import ATTACKS, DOMAINS, LABELS, ShardWriter


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
    attrs: dict
    parts: tuple[Part, ...]

    @property
    def samples(self) -> int:
        return sum(part.take for part in self.parts)


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
    except ResultError as err:
        Path(path).unlink(missing_ok=True)
        raise ResultError(f"{err}; removed it: run the build again to extract that video anew (the other videos "
                          f"are kept)") from None


SMALL = ("frame_index", "depth_source")  # what the tables need of a result besides its rejects and metadata


def read_small(paths: list[str]) -> list[tuple[dict, list, dict]]:
    """:func:`read_result` of each path, only its small arrays: run on a dask worker, so that the orchestrator
    gets many videos' table entries per round trip instead of opening every result itself."""
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
    """Write ``plan``'s shard atomically (each video's result read in turn); return its file record (sha256,
    bytes, mtime_ns), hashed while the bytes are fresh in this machine's page cache."""
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
    return file_record(plan.path)
