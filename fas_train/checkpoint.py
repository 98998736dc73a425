"""Checkpoints and run folders: ``checkpoint.pt`` (networks, optimisers, the method's generator, step, sampler
position, every process's RNG state), written atomically and read back without unpickling
(:mod:`pipeline.weights`); the checks that a resumed or evaluated run has the settings and the build it
started with; where a moved run's build is."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from torch import distributed as dist

from pipeline.atomic import atomic_path
from pipeline.audit import find_manifest
from pipeline.hashing import content_sha256
from pipeline.weights import load_weights

from .settings import RunConfig


CHECKPOINT_FORMAT = 3  # 3: loop state as JSON text, readable with weights_only


def save_checkpoint(path: Path, method, state: dict, lead: bool = True) -> None:
    """Every process takes part (their RNG states are gathered); process 0 writes. Returns once written.
    The file holds tensors and plain values only (the loop state as JSON text), so that
    :func:`pipeline.weights.load_weights` reads it without unpickling code."""
    distributed = dist.is_initialized()
    rng = [None] * dist.get_world_size() if distributed else [torch.get_rng_state()]
    if distributed:
        dist.all_gather_object(rng, torch.get_rng_state())
    if lead:
        with atomic_path(path, suffix=".tmp.pt") as tmp:
            optimizers = {name: optimizer.state_dict() for name, optimizer in method.optimizers().items()}
            torch.save({"format": CHECKPOINT_FORMAT, "method": method.state_dict(), "optimizers": optimizers,
                        "generator": method.generator.get_state(), "state_json": json.dumps(state, sort_keys=True),
                        "torch_rng": rng}, tmp)
    if distributed:
        dist.barrier()


def load_checkpoint(path: Path, method, rank: int = 0, per_epoch: int | None = None) -> dict:
    """Restore a method from a checkpoint and return the loop state. Checkpoints of format 1 (one optimiser,
    no epoch position; written before multi-optimiser methods existed) are read too, given ``per_epoch``, and
    those of format 2 (the loop state pickled); a file that would run code is refused."""
    data = load_weights(path)
    if data.get("format", 1) == 1:
        if per_epoch is None or "optimizer" not in data:
            raise ValueError(f"{path}: a format-1 checkpoint can only be resumed by the training loop")
        epoch, batch = divmod(data["state"]["step"], per_epoch)
        data = {**data, "optimizers": {"main": data["optimizer"]}, "torch_rng": [data["torch_rng"]],
                "state": {**data["state"], "epoch": epoch, "batch": batch, "domains": None}}
    elif data["format"] == CHECKPOINT_FORMAT:
        data = {**data, "state": json.loads(data["state_json"])}
    elif data["format"] != 2:
        raise ValueError(f"{path}: checkpoint format {data['format']}, this fas_train reads {CHECKPOINT_FORMAT}")
    method.load_state_dict(data["method"])
    for name, optimizer in method.optimizers().items():
        optimizer.load_state_dict(data["optimizers"][name])
    method.generator.set_state(data["generator"])
    rng = data["torch_rng"]
    if rank < len(rng):  # a run resumed with more processes than it had keeps the new ones' fresh seeds
        torch.set_rng_state(rng[rank])
    return data["state"]


RESUME_FIELDS = ("method", "per_class", "network", "input_size", "seed", "options", "select_on_target", "domains")


def check_resume(out: Path, cfg: RunConfig, protocol, build_hashes: dict) -> None:
    """Refuse to continue a run with other settings or another build than it started with (``steps``,
    ``eval_every``, ``workers``, ``device`` and paths may change)."""
    started, saved = saved_run(out)
    changed = [f"{name} {getattr(saved, name)!r} -> {getattr(cfg, name)!r}" for name in RESUME_FIELDS
               if getattr(saved, name) != getattr(cfg, name)]
    if (started["protocol"], started["variant"]) != (protocol.name, protocol.variant):
        changed.append(f"protocol {started['protocol']} ({started['variant']}) -> {protocol.name} ({protocol.variant})")
    changed += other_build(started, cfg.build, build_hashes)
    if changed:
        raise ValueError(f"{out}: cannot resume this run with other settings ({'; '.join(changed)}); use another "
                         f"--out, or the settings in {out / 'run.json'}")


def saved_run(out: Path) -> tuple[dict, RunConfig]:
    """A run folder's run.json and the RunConfig it records."""
    started = json.loads((out / "run.json").read_text())
    saved = started["config"]
    return started, RunConfig(**{**saved, "options": tuple(saved.get("options", ()))})


def manifest_hashes(build: str) -> dict:
    """The sha256 of a build's manifest file and of its content (the canonical JSON, which a copy or a move of
    the build keeps)."""
    data = find_manifest(build).read_bytes()  # read once for both
    return {"build_manifest_sha256": hashlib.sha256(data).hexdigest(),
            "build_manifest_content_sha256": content_sha256(json.loads(data))}


def other_build(started: dict, build: str, hashes: dict) -> list[str]:
    """A note when ``build``'s manifest is not the one a run (its run.json, ``started``) was trained on: its
    content hash is compared (runs that recorded only the file's sha256: that one; neither: not known)."""
    for key in ("build_manifest_content_sha256", "build_manifest_sha256"):
        if key in started:
            if started[key] == hashes[key]:
                return []
            name = key.removeprefix("build_")
            return [f"build: {build}/manifest.json is not the manifest this run started on ({name} "
                    f"{hashes[key][:12]}..., the run's {started[key][:12]}...)"]
    return []


def check_same_build(out: Path, started: dict, build: str) -> None:
    """Refuse a build whose manifest is not the one the run (its run.json, ``started``) was trained on."""
    changed = other_build(started, build, manifest_hashes(build))
    if changed:
        raise ValueError(f"{out}: {changed[0]}; the run would be read against other data (rebuilt cache?)")


def resolve_build(out: Path, recorded: str) -> str:
    """The build a run folder names: an absolute path as it is; a relative one against the run folder (where
    a run and its build were moved together), else against the working folder (runs recorded before paths
    were made absolute)."""
    path = Path(recorded)
    if not path.is_absolute() and (out / path).exists():
        path = out / path
    if not path.exists():
        raise FileNotFoundError(f"{path}: the build run {out} was trained on is not there (moved?); point the run "
                                f"at it with --build PATH")
    return str(path.resolve())
