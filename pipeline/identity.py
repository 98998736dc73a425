"""A build folder belongs to one config and one set of dataset copies: it records them before its first
output, and a config that names the folder with other settings is refused, naming what changed."""
from __future__ import annotations

import json
from pathlib import Path

from .atomic import write_json
from .config import BuildConfig, config_from_dict


class BuildConflict(ValueError):
    """A config whose name points at outputs made with other settings."""


def stamp_path(cfg: BuildConfig) -> Path:
    """The build folder's record of what it is made from."""
    return cfg.build_dir / "config.json"


def claim_build_dir(cfg: BuildConfig) -> None:
    """Record the config and roots in the build folder before anything is written there (once)."""
    if not stamp_path(cfg).is_file():
        write_json(stamp_path(cfg), build_identity(cfg))


def build_identity(cfg: BuildConfig) -> dict:
    """What a build folder is made from: the hashed settings and the dataset roots (not hashed, so that the same
    copies built anywhere hash alike, but a build must not mix two copies)."""
    return {"config_hash": cfg.config_hash(), "content": cfg.content(),
            "roots": {d: str(Path(root).resolve()) for d, root in sorted(cfg.datasets.items())}}


def check_outputs(cfg: BuildConfig) -> None:
    """Refuse to resume or confirm a build whose folder or manifest was made with other settings or other dataset
    copies (per-video results, indexes and shards would be reused under the new config's name)."""
    stamp, manifest = stamp_path(cfg), cfg.manifest_path / "manifest.json"
    now = build_identity(cfg)
    found = [(stamp, json.loads(stamp.read_text()))] if stamp.is_file() else []
    if manifest.is_file():
        made = json.loads(manifest.read_text())
        shards = str((cfg.build_dir / "shards").resolve())
        if made["shard_dir"] != shards:
            raise BuildConflict(f"{manifest}: describes the shards in {made['shard_dir']}, but {cfg.name!r} now writes "
                                f"to {shards}; give the build another name or manifest_dir")
        found.append((manifest, {"config_hash": made["config_hash"],
                                 "content": config_from_dict(made["config"], str(manifest)).content(),
                                 "roots": {d: source["root"] for d, source in made["sources"].items()}}))
    for path, recorded in found:
        changed = _changed_keys({"root": recorded["roots"]}, {"root": now["roots"]})
        if recorded["config_hash"] != now["config_hash"]:
            changed = (_changed_keys(recorded["content"], now["content"]) or ["config hash"]) + changed
        if changed:
            raise BuildConflict(f"{path}: build {cfg.name!r} was made with other settings (changed: "
                                f"{', '.join(changed)}); give the new config another name, or delete "
                                f"{cfg.build_dir} and {cfg.manifest_path} to rebuild")


def _changed_keys(old: dict, new: dict, prefix: str = "") -> list[str]:
    keys = []
    for key in sorted(set(old) | set(new)):
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            keys += _changed_keys(a, b, f"{prefix}{key}.")
        elif a != b:
            keys.append(f"{prefix}{key}")
    return keys
