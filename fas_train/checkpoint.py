"""Checkpoints and run folders: ``checkpoint.pt`` (networks, optimisers, the method's generator, step, sampler
position, every process's RNG state) and ``best.pt``, written atomically with the sha256 of their bytes beside
them (``<file>.sha256``, checked on load) and read back without unpickling (:mod:`pipeline.weights`); the lock
that keeps a second trainer out of a run folder; the checks that a resumed or evaluated run has the settings and
the build it started with; where a moved run's build is."""
from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import socket
import time
from pathlib import Path

import torch
from torch import distributed as dist

from pipeline.atomic import atomic_path, write_json
from pipeline.audit import find_manifest
from pipeline.hashing import content_sha256, sha256_file
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
        optimizers = {name: optimizer.state_dict() for name, optimizer in method.optimizers().items()}
        save_verified(path, {"format": CHECKPOINT_FORMAT, "method": method.state_dict(), "optimizers": optimizers,
                             "generator": method.generator.get_state(),
                             "state_json": json.dumps(state, sort_keys=True), "torch_rng": rng})
    if distributed:
        dist.barrier()


class WriteFailed(OSError):
    """A checkpoint that could not be written (a full disk, most often); the previous one is kept."""


def save_verified(path: Path, content) -> None:
    """``torch.save`` ``content`` to ``path`` atomically, with the sha256 of its bytes in ``<path>.sha256``. The
    hash file is written before the rename and lists the file being replaced too, so that a kill between the two
    leaves a pair that checks. A failed write raises WriteFailed naming the file and the free space; the
    previous file and its hash stay as they were."""
    record = Path(f"{path}.sha256")
    previous = _recorded(record)[:1] if Path(path).is_file() else []
    try:
        with atomic_path(path, suffix=".tmp.pt") as tmp:
            torch.save(content, tmp)
            digest = sha256_file(tmp)
            write_json(record, {"sha256": [digest, *previous]})
        write_json(record, {"sha256": [digest]})
    except (OSError, RuntimeError) as err:  # torch reports a full disk as RuntimeError("... unexpected pos ...")
        free = shutil.disk_usage(Path(path).parent).free
        raise WriteFailed(f"{path}: could not be written ({str(err).strip().splitlines()[0]}; {free / 2**20:.1f} "
                          f"MiB free on its device{': the disk is full' if free < 64 << 20 else ''}); the previous "
                          f"{Path(path).name} is kept: free some space and run the same command again") from None


def _recorded(record: Path) -> list:
    try:
        return list(json.loads(record.read_text())["sha256"])
    except FileNotFoundError:
        return []
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{record}: not the sha256 record fas_train writes") from None


def load_verified(path: Path, map_location="cpu"):
    """The content of a file :func:`save_verified` wrote, refused (naming it) when its bytes are not those its
    ``.sha256`` records (changed, truncated, or replaced). Files written before the records existed load
    unchecked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not there")
    recorded = _recorded(Path(f"{path}.sha256"))
    content = path.read_bytes()  # read once: the bytes checked are the bytes loaded
    if recorded:
        digest = hashlib.sha256(content).hexdigest()
        if digest not in recorded:
            raise ValueError(f"{path}: its bytes are not those written (sha256 {digest[:12]}..., {path.name}.sha256 "
                             f"says {recorded[0][:12]}...): changed, truncated or replaced since; restore it, or "
                             f"train again in a new --out")
    return load_weights(path, map_location=map_location, content=content)


@contextlib.contextmanager
def run_folder_lock(out: Path):
    """Hold ``out/.lock`` while a run trains: a second trainer on the same folder is refused (ValueError) naming
    the host and process that hold it. The lock is the kernel's (``flock``), so it goes with its process, kill -9
    included, and the next trainer takes it over. A folder this call made and the run left empty (refused before
    any work) is removed."""
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    path = out / ".lock"
    handle = open(path, "a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        holder = handle.read().strip() or "another process"
        handle.close()
        raise ValueError(f"{out}: another trainer is running in this run folder ({holder}); two would write every "
                         f"row twice. Wait for it or stop it (a stopped one's lock is taken over), or use another "
                         f"--out") from None
    try:
        handle.seek(0)
        handle.truncate()
        handle.write(f"host {socket.gethostname()}, pid {os.getpid()}, since "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        handle.flush()
        yield
    finally:
        if created and [p.name for p in out.iterdir()] == [".lock"]:
            path.unlink()
            out.rmdir()
        handle.close()


def load_checkpoint(path: Path, method, rank: int = 0, per_epoch: int | None = None) -> dict:
    """Restore a method from a checkpoint and return the loop state. Checkpoints of format 1 (one optimiser,
    no epoch position; written before multi-optimiser methods existed) are read too, given ``per_epoch``, and
    those of format 2 (the loop state pickled); a file that would run code is refused."""
    data = load_verified(path)
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
