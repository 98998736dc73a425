"""Atomic file output: write to a temporary file beside the target, fsync, then rename over it.

A reader never sees a half-written file, and a killed writer leaves at most a ``*.tmp`` file behind. The
temporary file is created as ``open(path, "w")`` would create it (mode 0666 less the process's umask), so a
cache built under umask 022 is readable by the teammates who train on it.
"""
from __future__ import annotations

import contextlib
import json
import os
import secrets
from pathlib import Path


class TempFile:
    """A hidden temporary file beside ``target``: write to ``.path``, then :meth:`commit` (fsync and rename
    over the target) or :meth:`discard`. ``suffix`` lets writers that pick a format by extension see one."""

    def __init__(self, target: str | os.PathLike, suffix: str = ".tmp"):
        self.target = Path(target)
        self.target.parent.mkdir(parents=True, exist_ok=True)
        while True:  # a fresh name; O_EXCL as tempfile does, but the umask decides the mode (not 0600)
            path = self.target.parent / f".{self.target.name}.{secrets.token_hex(4)}{suffix}"
            try:
                os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
                break
            except FileExistsError:
                continue
        self.path = path

    def commit(self) -> None:
        with open(self.path, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(self.path, self.target)

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, suffix: str = ".tmp"):
    """Yield a temporary path beside ``target``; on success it is renamed to ``target``, on error deleted."""
    tmp = TempFile(target, suffix)
    try:
        yield tmp.path
        tmp.commit()
    except BaseException:
        tmp.discard()
        raise


def write_text(target: str | os.PathLike, text: str) -> None:
    """Atomically write a text file (UTF-8, ``\\n`` line endings)."""
    with atomic_path(target) as tmp:
        tmp.write_text(text, encoding="utf-8", newline="\n")


def write_json(target: str | os.PathLike, obj) -> None:
    """Atomically write deterministic JSON (sorted keys, two-space indent, trailing newline)."""
    write_text(target, json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_csv(target: str | os.PathLike, table) -> str:
    """Atomically write a pandas DataFrame as CSV (no index, ``\n`` line endings); return the text written."""
    text = table.to_csv(index=False, lineterminator="\n")
    write_text(target, text)
    return text
