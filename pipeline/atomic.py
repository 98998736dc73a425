"""Atomic file output: write to a temporary file beside the target, fsync, then rename over it.

A reader never sees a half-written file, and a killed writer leaves at most a ``*.tmp`` file behind.
"""
from __future__ import annotations

import contextlib
import json
import os
import tempfile
from pathlib import Path


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a hidden temporary path in the target's folder; on success rename it to ``target``.

    ``suffix`` lets writers that choose a format by extension (OpenCV, HDF5 tools) see the right one.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=suffix, dir=target.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def write_text(target: str | os.PathLike, text: str) -> None:
    """Atomically write a text file (UTF-8, ``\\n`` line endings)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def write_json(target: str | os.PathLike, obj) -> None:
    """Atomically write deterministic JSON (sorted keys, two-space indent, trailing newline)."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")
