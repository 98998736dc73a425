"""SHA-256 of source files, in parallel threads (hashlib releases the GIL), with a byte-rate progress bar; and
the content hash a manifest carries of itself."""
from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from tqdm import tqdm

CHUNK = 4 << 20


def sha256_file(path: str | os.PathLike, progress: tqdm | None = None) -> str:
    """Hex SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
            if progress is not None:
                progress.update(len(chunk))
    return digest.hexdigest()


def file_record(path: str | os.PathLike) -> dict:
    """A file's sha256, size and modification time (ns), to tell later whether it is still the same file."""
    stat = os.stat(path)
    return {"sha256": sha256_file(path), "bytes": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def hash_files(paths: list[Path], *, workers: int = 4, quiet: bool = False,
               desc: str = "sha256") -> list[str | OSError]:
    """SHA-256 of each path, in order; an unreadable file gives its OSError instead of a digest."""
    sizes = []
    for p in paths:
        try:
            sizes.append(os.path.getsize(p))
        except OSError:
            sizes.append(0)
    with tqdm(total=sum(sizes), unit="B", unit_scale=True, unit_divisor=1024, desc=desc,
              disable=quiet, dynamic_ncols=True) as bar:
        def one(path):
            try:
                return sha256_file(path, bar)
            except OSError as err:
                return err
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            return list(pool.map(one, paths))


def content_sha256(manifest: dict) -> str:
    """Hex SHA-256 of a manifest's content: its canonical JSON (sorted keys) without ``content_sha256``."""
    content = {k: v for k, v in manifest.items() if k != "content_sha256"}
    return hashlib.sha256(json.dumps(content, sort_keys=True).encode()).hexdigest()
