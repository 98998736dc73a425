"""Disk use of a folder while a build creates and removes files in it: the benchmarks' peak and final bytes."""
from __future__ import annotations

import threading
from pathlib import Path


def folder_bytes(folder: Path) -> int:
    """Bytes of the files under ``folder`` (apparent sizes, as the shards' are counted); files removed while it
    looks are skipped."""
    total = 0
    for path in Path(folder).rglob("*"):
        try:
            total += path.stat().st_size if path.is_file() else 0
        except OSError:
            pass
    return total


class DiskPeak:
    """Samples ``folder_bytes(folder)`` every ``interval`` seconds in a thread while ``running()`` is true; use
    as a context manager, then read ``peak`` and ``final`` (the bytes when it exits)."""

    def __init__(self, folder: Path, running, interval: float = 0.1):
        self.folder, self.running, self.interval, self.peak, self.final = Path(folder), running, interval, 0, 0
        self.thread = threading.Thread(target=self._watch, daemon=True)
        self.stop = threading.Event()

    def _watch(self) -> None:
        while self.running() and not self.stop.is_set():
            self.peak = max(self.peak, folder_bytes(self.folder))
            self.stop.wait(self.interval)

    def __enter__(self) -> "DiskPeak":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop.set()
        self.thread.join()
        self.final = folder_bytes(self.folder)
        self.peak = max(self.peak, self.final)
