"""Check a build against its manifest: the manifest's own content hash, the sha256 of its tables, and every
shard's presence, sha256, sample count and readability. The trainer runs the same checks before it reads a
build (:func:`verify_for_training`), hashing each shard once per (size, mtime) and caching the result."""
from __future__ import annotations

import json
from pathlib import Path

from .atomic import write_json
from .hashing import content_sha256, sha256_file
from .shards import ShardError, open_shard

VERIFIED_CACHE = "verified.json"  # beside the manifest: shard sha256 checks already done


class BuildIntegrityError(ValueError):
    """A build that does not match its manifest; the message names every file that differs."""


def find_manifest(build: str | Path) -> Path:
    """Accept a manifest file, or a folder holding manifest.json."""
    path = Path(build)
    if path.is_dir():
        path = path / "manifest.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: build manifest not found")
    return path


def table_hashes(manifest: dict) -> dict:
    """The sha256 the manifest records for each of its tables."""
    return {"samples.csv": manifest.get("samples_table_sha256"), "sources.csv": manifest.get("source_table_sha256"),
            "rejects.csv": manifest.get("rejects", {}).get("table_sha256")}


def manifest_problems(manifest_path: Path, manifest: dict) -> list[str]:
    """The manifest's content against its own hash, and its tables against the hashes it records."""
    problems = []
    recorded = manifest.get("content_sha256")
    if recorded is None:
        problems.append(f"{manifest_path}: no content_sha256 (written before manifests hashed themselves); "
                        f"its config, counts and backend cannot be checked: rebuild the manifest")
    elif content_sha256(manifest) != recorded:
        problems.append(f"{manifest_path}: content edited (its sha256 {content_sha256(manifest)[:12]}... differs "
                        f"from the recorded {recorded[:12]}...)")
    for name, expected in table_hashes(manifest).items():
        path = manifest_path.parent / name
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        digest = sha256_file(path) if expected is not None else None
        if digest != expected:
            problems.append(f"{path}: sha256 {digest[:12]}... differs from the manifest's {expected[:12]}... "
                            f"(edited after the build?)")
    return problems


def audit(build: str | Path, shard_dir: str | Path | None = None) -> list[str]:
    """Problems found (empty when the manifest, its tables and every shard match)."""
    manifest_path = find_manifest(build)
    manifest = json.loads(manifest_path.read_text())
    folder = Path(shard_dir or manifest["shard_dir"])
    problems = manifest_problems(manifest_path, manifest)
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


def leftovers(build: str | Path, shard_dir: str | Path | None = None) -> list[Path]:
    """Hidden temporary files a killed build left beside the shards or the per-video results (the next run
    of the build removes them)."""
    manifest = json.loads(find_manifest(build).read_text())
    folder = Path(shard_dir or manifest["shard_dir"])
    return sorted(p for where in (folder, folder.parent / "videos") if where.is_dir()
                  for p in where.rglob(".*.tmp*") if p.is_file())


def verify_for_training(build: str | Path) -> str:
    """Refuse a build whose manifest, tables or shards do not match (BuildIntegrityError naming the files);
    return how the shards were checked. Each shard's size is always checked, its sha256 once per (path, size,
    mtime): the results are cached in ``verified.json`` beside the manifest, so a second run starts at once."""
    manifest_path = find_manifest(build)
    manifest = json.loads(manifest_path.read_text())
    problems = manifest_problems(manifest_path, manifest)
    cache_path = manifest_path.parent / VERIFIED_CACHE
    try:
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    except ValueError:
        cache = {}
    hashed, fresh = 0, {}
    folder = Path(manifest["shard_dir"])
    for entry in manifest["shards"]:
        path = folder / entry["file"]
        if not path.is_file():
            problems.append(f"{path}: missing")
            continue
        stat = path.stat()
        if stat.st_size != entry["bytes"]:
            problems.append(f"{path}: {stat.st_size} bytes, the manifest says {entry['bytes']} (truncated?)")
            continue
        key = {"path": str(path.resolve()), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns,
               "sha256": entry["sha256"]}
        if cache.get(entry["file"]) != key:
            hashed += 1
            digest = sha256_file(path)
            if digest != entry["sha256"]:
                problems.append(f"{path}: sha256 {digest[:12]}... differs from the manifest's {entry['sha256'][:12]}...")
                continue
        fresh[entry["file"]] = key
    if problems:
        raise BuildIntegrityError(f"{manifest_path.parent}: the build does not match its manifest, refusing to "
                                  f"train on it (python -m pipeline audit {manifest_path.parent} says more; "
                                  f"--no-verify skips this check):\n" + "\n".join(f"  {p}" for p in problems))
    if fresh != cache:
        try:
            write_json(cache_path, fresh)
        except OSError:  # a read-only manifest folder: verified again next time
            pass
    return (f"verified: tables, manifest content, {len(fresh)} shard sizes; {hashed} shard(s) hashed, "
            f"{len(fresh) - hashed} known from {VERIFIED_CACHE}")
