"""Check a build against its manifest: the manifest's own content hash, the sha256 of its tables, and every
shard's presence, sha256, sample count and readability. The trainer runs the same checks before it reads a
build (:func:`verify_for_training`), hashing each shard once per (size, mtime) and caching the result."""
from __future__ import annotations

import json
from pathlib import Path

from .atomic import write_json
from .hashing import content_sha256, sha256_file
from .config import config_from_dict
from .shards import ShardError, open_shard, sample_shapes

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


def shard_location(manifest_path: Path, manifest: dict) -> Path:
    """Where a build's shards are now: the folder the manifest names or, when the build was moved as a whole
    (its manifest folder and its output folder together), the same place relative to the manifest folder."""
    recorded = Path(manifest["shard_dir"])
    relative = manifest.get("shard_dir_from_manifest")
    if recorded.is_dir() or relative is None:
        return recorded
    moved = (manifest_path.parent / relative).resolve()
    return moved if moved.is_dir() else recorded


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
    problems += config_problems(manifest_path, manifest)
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


def config_problems(manifest_path: Path, manifest: dict) -> list[str]:
    """The manifest's config against its own ``config_hash`` (each shard's is checked against that hash by
    :func:`audit`): a config edited after the build, even with the content hash recomputed, is found."""
    try:
        config = config_from_dict(manifest.get("config"), f"{manifest_path}: config")
    except ValueError as err:
        return [str(err)]
    if config.config_hash() != manifest.get("config_hash"):
        return [f"{manifest_path}: its config hashes to {config.config_hash()[:12]}..., not to the recorded "
                f"config_hash {str(manifest.get('config_hash'))[:12]}... (config edited after the build?)"]
    return []


def config_sizes(manifest_path: Path, manifest: dict) -> tuple[int, int] | None:
    """(face size, depth size) of the manifest's config, or None when the config is unreadable
    (:func:`config_problems` says so)."""
    try:
        config = config_from_dict(manifest.get("config"), str(manifest_path))
    except ValueError:
        return None
    return config.face.size, config.depth.size


def shape_problems(path: Path, shard, sizes: tuple[int, int] | None) -> list[str]:
    """A shard's array shapes against those its build's config makes (``sizes``: :func:`config_sizes`)."""
    if sizes is None:
        return []
    image, depth = sizes
    expected = sample_shapes(image, depth)
    return [f"{path}: {name} holds samples of shape {shard[name].shape[1:]}, the config ({image} px faces, "
            f"{depth} px depth) makes {expected[name]}"
            for name in expected if name in shard and shard[name].shape[1:] != expected[name]]


def audit(build: str | Path, shard_dir: str | Path | None = None) -> list[str]:
    """Problems found (empty when the manifest, its tables and every shard match)."""
    manifest_path = find_manifest(build)
    manifest = json.loads(manifest_path.read_text())
    folder = Path(shard_dir) if shard_dir else shard_location(manifest_path, manifest)
    problems = manifest_problems(manifest_path, manifest)
    sizes = config_sizes(manifest_path, manifest)  # read once, checked against every shard
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
                problems += shape_problems(path, f, sizes)
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
    manifest_path = find_manifest(build)
    manifest = json.loads(manifest_path.read_text())
    folder = Path(shard_dir) if shard_dir else shard_location(manifest_path, manifest)
    return sorted(p for where in (folder, folder.parent / "videos") if where.is_dir()
                  for p in where.rglob(".*.tmp*") if p.is_file())


def verify_for_training(build: str | Path) -> str:
    """Refuse a build whose manifest, tables or shards do not match (BuildIntegrityError naming the files);
    return how the shards were checked. Each shard's size is always checked, its sha256 once per (path, size,
    mtime and inode change time, which no user can set back): the results are cached in ``verified.json``
    beside the manifest, so a second run starts at once."""
    manifest_path = find_manifest(build)
    manifest = json.loads(manifest_path.read_text())
    problems = manifest_problems(manifest_path, manifest)
    cache_path = manifest_path.parent / VERIFIED_CACHE
    try:
        cache = json.loads(cache_path.read_text()) if cache_path.is_file() else {}
    except ValueError:
        cache = {}
    hashed, fresh = 0, {}
    folder = shard_location(manifest_path, manifest)
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
               "ctime_ns": stat.st_ctime_ns, "sha256": entry["sha256"]}
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
