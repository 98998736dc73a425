"""Sharded HDF5 training cache: the schema, a deterministic writer and a reader that checks the schema.

Every shard holds consecutive samples of the build's sample order (dataset, video_id, frame_index), one
chunk per sample. No timestamps are stored, so the same samples and config give byte-identical files.
"""
from __future__ import annotations

import json
from pathlib import Path

import h5py
import numpy as np

from .atomic import atomic_path
from .config import SCHEMA_VERSION

LABELS = {"spoof": 0, "live": 1}  # label polarity, also written into every shard
ATTACKS = {"none": 0, "print": 1, "replay": 2, "mask": 3}
DOMAINS = {"oulu": 0, "casia": 1, "replay": 2, "msu": 3, "rose": 4}  # O, C, I, M, Y
IMAGE_SETS = ("rgb", "hsv", "lbp")
PER_SAMPLE = ("rgb", "hsv", "lbp", "depth", "label", "domain", "attack", "video_id", "frame_index",
              "box", "landmarks", "score")


class ShardError(RuntimeError):
    """A shard that is missing, truncated, or does not follow the schema."""


def write_shard(path: Path, samples: dict, attrs: dict, compression: str = "none") -> None:
    """Atomically write one shard. ``samples`` maps each name of PER_SAMPLE to an array of N rows."""
    n = len(samples["label"])
    options = {} if compression == "none" else {"compression": compression}
    if compression == "gzip":
        options["compression_opts"] = 4
    with atomic_path(path, suffix=".tmp.h5") as tmp:
        with h5py.File(tmp, "w", track_order=False) as f:
            for name in PER_SAMPLE:
                data = samples[name]
                if name == "video_id":
                    f.create_dataset(name, data=np.array(data, dtype=object), dtype=h5py.string_dtype("utf-8"),
                                     track_times=False)
                    continue
                data = np.ascontiguousarray(data)
                chunks = (1,) + data.shape[1:] if data.ndim > 1 and n > 0 else None
                f.create_dataset(name, data=data, chunks=chunks, track_times=False,
                                 **(options if name in IMAGE_SETS + ("depth",) and n > 0 else {}))
            meta = {"schema_version": SCHEMA_VERSION, "samples": n, "label_values": json.dumps(LABELS),
                    "attack_values": json.dumps(ATTACKS), "domain_values": json.dumps(DOMAINS), **attrs}
            for key in sorted(meta):
                f.attrs[key] = meta[key]


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
