"""Check a build's shards against its manifest: presence, sha256, sample counts and readability."""
from __future__ import annotations

import json
from pathlib import Path

from .hashing import sha256_file
from .shards import ShardError, open_shard


def find_manifest(build: str | Path) -> Path:
    """Accept a manifest file, or a folder holding manifest.json."""
    path = Path(build)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: build manifest not found")
    return path


def audit(build: str | Path, shard_dir: str | Path | None = None) -> list[str]:
    """Problems found (empty when every shard matches the manifest)."""
    manifest_path = find_manifest(build)
    manifest = json.loads(manifest_path.read_text())
    folder = Path(shard_dir or manifest["shard_dir"])
    problems = []
    for entry in manifest["shards"]:
        path = folder / entry["file"]
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        digest = sha256_file(path)
        if digest != entry["sha256"]:
            problems.append(f"{path}: sha256 {digest[:12]}... differs from the manifest's {entry['sha256'][:12]}... "
                            f"(size {path.stat().st_size} bytes, manifest {entry['bytes']})")
        try:
            with open_shard(path) as f:
                n = len(f["label"])
                if n != entry["samples"] or f.attrs["config_hash"] != manifest["config_hash"]:
                    problems.append(f"{path}: {n} samples / config {f.attrs['config_hash'][:12]}, manifest says "
                                    f"{entry['samples']} / {manifest['config_hash'][:12]}")
                missing = [name for name in manifest.get("shard_datasets", ()) if name not in f]
                if missing:
                    problems.append(f"{path}: datasets {missing} listed in the manifest are missing")
                f["rgb"][n - 1]  # the last chunk must be readable
        except (ShardError, OSError, KeyError) as err:
            problems.append(f"{path}: unreadable: {err}")
    listed = {e["file"] for e in manifest["shards"]}
    extra = sorted(p.name for p in folder.glob("shard-*.h5") if p.name not in listed)
    problems += [f"{folder / name}: not in the manifest" for name in extra]
    return problems
