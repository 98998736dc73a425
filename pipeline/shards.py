"""Sharded HDF5 training cache: the schema, a deterministic writer and a reader that checks the schema.

Every shard holds consecutive samples of the build's sample order (dataset, video_id, frame_index), one
chunk per sample. No timestamps are stored, so the same samples and config give byte-identical files.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import h5py
import numpy as np

from .atomic import TempFile
from .config import SCHEMA_VERSION

LABELS = {"spoof": 0, "live": 1}  # label polarity, also written into every shard
ATTACKS = {"none": 0, "print": 1, "replay": 2, "mask": 3}
DOMAINS = {"oulu": 0, "casia": 1, "replay": 2, "msu": 3, "rose": 4}  # O, C, I, M, Y
IMAGE_SETS = ("rgb", "hsv", "lbp")
PER_SAMPLE = ("rgb", "hsv", "lbp", "depth", "label", "domain", "attack", "video_id", "frame_index",
              "box", "landmarks", "score")
OPTIONAL = ("depth_estimate",)  # written when the build config asks for them (depth.store_estimate)
MAPS = ("depth", "depth_estimate")  # 1 x D x D per sample


class ShardError(RuntimeError):
    """A shard that is missing, truncated, or does not follow the schema."""


class ShardSpaceError(OSError):
    """Not enough free disk space to write a shard (checked before HDF5 writes a byte: HDF5 can crash the process
    when the disk fills under it)."""


def shard_bytes(n: int, image_size: int, depth_size: int, optional: tuple = ()) -> int:
    """An upper bound of a shard's size on disk: the uncompressed samples plus room for HDF5's metadata."""
    per_sample = (3 * 3 * image_size * image_size + (1 + len(optional)) * depth_size * depth_size
                  + 3 + 4 + 16 + 40 + 4 + 512)  # labels, frame index, box, landmarks, score, id, chunk index
    return n * per_sample + (1 << 20)


def ensure_space(path: Path, needed: int, what: str = "this shard") -> None:
    """Raise ShardSpaceError, naming ``path`` (a shard, or a pattern of shards: ``what``) and the space it needs,
    when its folder's disk has less free."""
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < needed:
        raise ShardSpaceError(f"{path}: not enough free disk space to write {what}: it needs up to "
                              f"{needed / 2**20:.1f} MiB, {free / 2**20:.1f} MiB are free in {folder}; free "
                              f"{(needed - free) / 2**20:.1f} MiB (or point output_dir elsewhere) and run the build "
                              f"again: finished videos are kept and the shards come out the same")


def sample_shapes(image_size: int, depth_size: int) -> dict:
    """The shape of one sample of each shard dataset (video_id, a string, is not listed)."""
    return {"rgb": (3, image_size, image_size), "hsv": (3, image_size, image_size),
            "lbp": (3, image_size, image_size), **{m: (1, depth_size, depth_size) for m in MAPS},
            "label": (), "domain": (), "attack": (), "frame_index": (), "box": (4,), "landmarks": (5, 2),
            "score": ()}


class ShardWriter:
    """Writes one shard of ``n`` samples in order, a few samples at a time, to a hidden temporary file that
    :meth:`commit` renames into place. ``optional``: names of OPTIONAL to write too. Rows are held until
    ``buffer_rows`` of them are waiting (one HDF5 write per dataset for many videos: a third of the time of a
    write per video) or the shard is committed; the file's bytes do not depend on it."""

    def __init__(self, path: Path, n: int, image_size: int, depth_size: int, attrs: dict, compression: str = "none",
                 optional: tuple = (), buffer_rows: int = 64):
        unknown = set(optional) - set(OPTIONAL)
        if unknown:
            raise ValueError(f"unknown optional shard datasets {sorted(unknown)}; known: {list(OPTIONAL)}")
        self.names = PER_SAMPLE + tuple(optional)
        self.path, self.n, self.filled = Path(path), n, 0
        self.buffer_rows, self.waiting, self.written, self.video_ids = buffer_rows, [], 0, []
        ensure_space(self.path, shard_bytes(n, image_size, depth_size, tuple(optional)))
        self.tmp = TempFile(self.path, suffix=".tmp.h5")
        self.file = h5py.File(self.tmp.path, "w", track_order=False)
        options = {} if compression == "none" else {"compression": compression}
        if compression == "gzip":
            options["compression_opts"] = 4
        shapes = sample_shapes(image_size, depth_size)
        types = {"frame_index": np.int32, "box": np.float32, "landmarks": np.float32, "score": np.float32}
        for name in self.names:
            if name == "video_id":
                self.file.create_dataset(name, (n,), dtype=h5py.string_dtype("utf-8"), track_times=False)
                continue
            shape = shapes[name]
            chunked = len(shape) > 0 and n > 0
            self.file.create_dataset(name, (n,) + shape, dtype=types.get(name, np.uint8),
                                     chunks=(1,) + shape if chunked else None, track_times=False,
                                     **(options if name in IMAGE_SETS + MAPS and n > 0 else {}))
        meta = {"schema_version": SCHEMA_VERSION, "samples": n, "label_values": json.dumps(LABELS),
                "attack_values": json.dumps(ATTACKS), "domain_values": json.dumps(DOMAINS), **attrs}
        for key in sorted(meta):
            self.file.attrs[key] = meta[key]
        self.datasets = {name: self.file[name] for name in self.names}

    def write(self, samples: dict) -> None:
        """Append rows: ``samples`` maps every name this shard holds to an array (or list) of equal length."""
        k = len(samples["label"])
        if self.filled + k > self.n:
            raise ValueError(f"{self.path}: {self.filled + k} samples written into a shard of {self.n}")
        missing = [name for name in self.names if name not in samples]
        if missing:
            raise ValueError(f"{self.path}: samples without {missing}")
        self.waiting.append(samples)
        self.filled += k
        if self.filled - self.written >= self.buffer_rows:
            self._flush()

    def _flush(self) -> None:
        for name, dataset in self.datasets.items():
            if name == "video_id":  # strings go in at commit: HDF5's string heap would depend on the flushes
                self.video_ids += [v for samples in self.waiting for v in samples[name]]
            elif self.waiting:
                parts = [np.asarray(samples[name]) for samples in self.waiting]
                dataset[self.written:self.filled] = parts[0] if len(parts) == 1 else np.concatenate(parts)
        self.written, self.waiting = self.filled, []

    def commit(self) -> None:
        """Close the file and rename it into place; it must be full."""
        try:
            self._flush()
            if self.video_ids:
                self.datasets["video_id"][:len(self.video_ids)] = np.array(self.video_ids, dtype=object)
        finally:
            self.file.close()
        if self.filled != self.n:
            self.tmp.discard()
            raise ValueError(f"{self.path}: {self.filled} of {self.n} samples written")
        self.tmp.commit()

    def abort(self) -> None:
        """Close and delete the temporary file."""
        self.file.close()
        self.tmp.discard()


def write_shard(path: Path, samples: dict, attrs: dict, compression: str = "none") -> None:
    """Atomically write one shard from in-memory arrays (every name of PER_SAMPLE, and those of OPTIONAL that
    ``samples`` has, N rows)."""
    rgb, depth = np.asarray(samples["rgb"]), np.asarray(samples["depth"])
    optional = tuple(name for name in OPTIONAL if name in samples)
    writer = ShardWriter(path, len(samples["label"]), rgb.shape[-1], depth.shape[-1], attrs, compression, optional)
    try:
        writer.write(samples)
    except BaseException:
        writer.abort()
        raise
    writer.commit()


def open_shard(path: Path) -> h5py.File:
    """Open a shard read-only and check its schema; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise ShardError(f"{path}: shard is missing")
    try:
        f = h5py.File(path, "r")
    except OSError as err:
        raise ShardError(f"{path}: not a readable HDF5 file (truncated or corrupt?): {err}") from None
    version = f.attrs.get("schema_version")
    if version != SCHEMA_VERSION:
        f.close()
        raise ShardError(f"{path}: schema version {version}, expected {SCHEMA_VERSION}")
    missing = [name for name in PER_SAMPLE if name not in f]
    if missing:
        f.close()
        raise ShardError(f"{path}: datasets {missing} are missing")
    return f
