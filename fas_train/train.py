"""The training loop: balanced batches from the shards, one ``method.update`` per step, honest model selection.

- Source data are split by subject into train and validation (the protocol's holdout). Every ``eval_every``
  steps the validation part is scored; the best checkpoint (lowest validation EER, then highest AUC, of the
  method's own number: its frame scores, or the video branch's per-video scores for a method whose number
  that is, ``ccdd-video``) and its EER thresholds (the deployable ones) are kept. The target is looked at only once, at the end, unless
  ``select_on_target`` (the oracle mode of the public code) is asked for, which every output then says.
- ``checkpoint.pt`` (networks, optimiser, the method's generator, step, sampler position, RNG state) is
  written at every evaluation, every ``checkpoint_every`` steps, on a non-finite loss and when SIGTERM,
  SIGINT or SIGUSR1 stop the run (:mod:`fas_train.preemption`), atomically; a run started again with the
  same output folder resumes where it stopped, with the same next batches and losses. It holds tensors and
  plain values only, read back without unpickling (:mod:`pipeline.weights`).
- Metrics go to ``metrics.jsonl`` and ``metrics.csv`` (one row per step, evaluation and clustering); a resume
  first drops the rows logged after the checkpoint, which it logs again (a fresh start, all rows of an attempt
  killed before its first checkpoint), so a resumed run's rows are an uninterrupted run's.
- Precision and memory layout are settings (``precision``: auto, bf16, fp32; ``channels_last``: auto, on,
  off); ``auto`` is bf16 autocast and channels-last on CUDA, fp32 and the default layout elsewhere. Either can
  be asked for on the CPU too (it has bf16 autocast). Scores and every metric input stay float32: the
  score layers compute in float32 under autocast (:mod:`fas_train.models.precision`).
- Under ``torchrun`` (``WORLD_SIZE`` > 1) the run is data-parallel with DDP (NCCL on CUDA, gloo on the CPU):
  every process reads its slice of each balanced batch (``per_class`` is the global count per domain and
  class), gradients and logged losses are averaged over processes, and process 0 alone evaluates and writes
  outputs. A checkpoint keeps every process's RNG state.
"""
from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import typing
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from pydantic import TypeAdapter, ValidationError
from torch import distributed as dist
from tqdm import tqdm
from torch.utils.data import BatchSampler, SequentialSampler

from pipeline.atomic import atomic_path, write_json
from pipeline.audit import find_manifest, verify_for_training
from pipeline.hashing import content_sha256
from pipeline.provenance import code_version, package_versions
from pipeline.weights import load_weights

from .data import (ClipDataset, ClipSampler, ShardDataset, load_build, make_loader, prefetch, resize_input,
                   to_device)
from .methods import METHODS, NonFiniteLoss
from .metrics import FUSIONS, Acquisition, auc, eer, level_metrics, report, species, video_level
from .protocols import DOMAIN_COLUMNS, load_protocol, with_domains
from .preemption import Preempted, StopRequests
from .pseudo_domains import agreement
from .sampler import BalancedBatchSampler


MIN_INPUT_SIZE = 32  # ResNets reduce their input 32-fold; the depth networks 8-fold to maps of at least 4 x 4


@dataclass(frozen=True)
class RunConfig:
    method: str
    build: str  # a build's manifest folder
    protocol: str  # a protocol YAML
    out: str
    variant: str | None = None
    steps: int = 1000
    eval_every: int = 100
    checkpoint_every: int = 50  # steps between checkpoints besides those of evaluations (preemption loses less)
    per_class: int | None = None  # None: the method's default (its paper's batch)
    network: str = "paper"
    input_size: int | None = None  # None: the method's paper size (else the stored crop); 0: the stored crop
    #                                size; else images are resized to it on the device
    seed: int = 0
    workers: int = 0  # DataLoader processes; 0: read in this process (threads, prefetched)
    device: str = "auto"
    select_on_target: bool = False
    options: tuple = ()  # "name=value" overrides of the method's config (ablations, hyper-parameters)
    quiet: bool = False  # no progress bar
    verify: bool = True  # check the build against its manifest before reading it (--no-verify: skip)
    domains: str | None = None  # the sample column whose values are the domains; None: the protocol's
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 elsewhere), "bf16" or "fp32"
    channels_last: str = "auto"  # "auto" (on CUDA), "on" or "off"
    fusion: str = "mean"  # how a video's frame scores make its score: mean, median, max or min
    fta_rejected: bool = False  # count target presentations without a usable face as rejected (ISO/IEC 30107-3)

    def __post_init__(self):
        for name in ("steps", "eval_every", "checkpoint_every", "per_class", "input_size"):
            value, least = getattr(self, name), 0 if name == "input_size" else 1
            if value is not None and value < least:
                raise ValueError(f"--{name.replace('_', '-')} {value}: must be at least {least}")
        if self.input_size and self.input_size < MIN_INPUT_SIZE:
            raise ValueError(f"--input-size {self.input_size}: the networks need at least {MIN_INPUT_SIZE} pixels "
                             f"(their feature maps shrink by up to 32; 0: the stored crop size)")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision {self.precision!r}: use auto, bf16 or fp32")
        if self.channels_last not in ("auto", "on", "off"):
            raise ValueError(f"channels_last {self.channels_last!r}: use auto, on or off")
        if self.fusion not in FUSIONS:
            raise ValueError(f"--fusion {self.fusion!r}: use one of {list(FUSIONS)}")


CHECKPOINT_FORMAT = 3  # 3: loop state as JSON text, readable with weights_only


class TrainingStopped(RuntimeError):
    """A run stopped on a non-finite loss, after writing its checkpoint."""


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(f"cuda:{local_rank}" if name == "cuda" else name)


def start_distributed(cfg: RunConfig) -> tuple[int, int, torch.device]:
    """(rank, world size, device) of this process; joins the process group when started by ``torchrun``."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1, resolve_device(cfg.device)
    local_rank = int(os.environ["LOCAL_RANK"])
    device = resolve_device(cfg.device, local_rank)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return dist.get_rank(), world, device


def use_bf16(cfg: RunConfig, device: torch.device) -> bool:
    """Whether networks run under bf16 autocast (``auto``: on CUDA only)."""
    return cfg.precision == "bf16" or (cfg.precision == "auto" and device.type == "cuda")


def autocast(cfg: RunConfig, device: torch.device):
    """The autocast context of the run's precision setting."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_bf16(cfg, device))


def use_channels_last(cfg: RunConfig, device: torch.device) -> bool:
    return cfg.channels_last == "on" or (cfg.channels_last == "auto" and device.type == "cuda")


def barrier(world: int) -> None:
    if world > 1:
        dist.barrier()


def method_config(cfg: RunConfig):
    """The method's config dataclass with ``cfg.options`` ("name=value") applied. Each value is read as YAML
    and then as its field's type (``lr=1e-4`` is a float, although YAML 1.1 reads it as text); an unknown or
    ill-typed option is refused naming the field, its type and the method's options."""
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; known: {sorted(METHODS)}")
    cls, config_cls = METHODS[cfg.method]
    types = typing.get_type_hints(config_cls)
    known = ", ".join(f"{f.name} ({type_name(types[f.name])}, default {f.default!r})" for f in fields(config_cls))
    overrides = {}
    for option in cfg.options:
        name, sep, value = option.partition("=")
        if not sep or name not in types:
            raise ValueError(f"option {option!r}: expected name=value; {cfg.method}'s options: {known}")
        try:
            overrides[name] = TypeAdapter(types[name]).validate_python(yaml.safe_load(value))
        except (ValidationError, yaml.YAMLError) as err:
            reason = err.errors()[0]["msg"] if isinstance(err, ValidationError) else "not a YAML value"
            raise ValueError(f"option {option!r}: {name} is {type_name(types[name])}: {reason}; "
                             f"{cfg.method}'s options: {known}") from None
    return cls, config_cls(**overrides)


def type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def build_method(cfg: RunConfig, domains: list):
    cls, config = method_config(cfg)
    torch.manual_seed(cfg.seed)
    return cls.create(config, cfg.network, sorted(domains), cfg.seed)


def prepare(cfg: RunConfig, device: torch.device, batch: dict) -> dict:
    batch = to_device(batch, device, channels_last=use_channels_last(cfg, device))
    image = batch["image"]
    if cfg.input_size and image.shape[-1] != cfg.input_size:  # frames (N, C, S, S) or clips (N, L, C, S, S)
        resized = resize_input(image.flatten(0, image.ndim - 4), cfg.input_size)
        batch["image"] = resized.view(*image.shape[:-2], cfg.input_size, cfg.input_size)
    return batch


def in_order(dataset: ShardDataset, batch_size: int = 64):
    """Batches of every sample of ``dataset``, in order, read in this process."""
    return make_loader(dataset, BatchSampler(SequentialSampler(range(len(dataset))), batch_size, False), workers=0)


def score(method, dataset: ShardDataset, cfg: RunConfig, device: torch.device) -> np.ndarray:
    """Live probabilities of every sample of ``dataset``, in order."""
    out = []
    with autocast(cfg, device):
        for batch in in_order(dataset):
            out.append(method.predict(prepare(cfg, device, batch)["image"]).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros(0)


def frame_table(samples: pd.DataFrame, scores: np.ndarray) -> pd.DataFrame:
    """One row per scored frame: video, frame, label (1 live), attack family and species, score."""
    return pd.DataFrame({"video_id": samples["video_id"].to_numpy(), "frame_index": samples["frame_index"].to_numpy(),
                         "label": (samples["label"] == "live").astype(int).to_numpy(),
                         "attack": samples["attack"].to_numpy(), "attack_detail": samples["attack_detail"].to_numpy(),
                         "score": scores})


def run(cfg: RunConfig) -> dict:
    """Train (or resume) and evaluate; return the final report. run.json records the build's and the run
    folder's absolute paths, so that the folder can be evaluated from anywhere."""
    cfg = replace(cfg, build=str(Path(cfg.build).resolve()), out=str(Path(cfg.out).resolve()))
    out = Path(cfg.out)
    rank, world, device = start_distributed(cfg)
    try:
        return _run(cfg, out, rank, world, device)
    finally:
        if world > 1:
            dist.destroy_process_group()


def run_data(cfg: RunConfig):
    """(manifest, protocol, channels, [(rows, dataset) of train, validation, target]): the protocol's
    parts of the build (source-subject holdout, or an intra-dataset protocol's development part), with the
    protocol's domains, read with the channels the method uses."""
    manifest, samples = load_build(cfg.build)
    protocol = load_protocol(cfg.protocol, cfg.variant)
    column = cfg.domains or protocol.domains
    if column not in DOMAIN_COLUMNS:
        raise ValueError(f"--domains {column!r}: use one of {list(DOMAIN_COLUMNS)}")
    values = sorted(samples[column].astype(str).unique())
    method_cls, method_cfg = method_config(cfg)
    channels = method_cls.channels(method_cfg)
    parts = [(rows, ShardDataset(manifest["shard_dir"], rows, channels))
             for rows in (with_domains(r, column, values) for r in protocol.parts(samples))]
    return manifest, protocol, channels, parts


def check_build(cfg: RunConfig) -> str:
    """Refuse a build that fails its audit (tables, manifest content, shard sizes and sha256, cached); say how
    it was checked."""
    if not cfg.verify:
        return "skipped (--no-verify)"
    return verify_for_training(cfg.build)


def _run(cfg: RunConfig, out: Path, rank: int, world: int, device: torch.device) -> dict | None:
    lead = rank == 0
    method_config(cfg)  # an unknown method or option is refused before any work
    verification = check_build(cfg) if lead else None
    barrier(world)
    manifest, protocol, channels, parts = run_data(cfg)
    (train_rows, train_set), (val_rows, val_set), (target_rows, target_set) = parts
    method = build_method(cfg, sorted(set(train_set.domains.tolist()))).to(device)
    cfg = resolved(cfg, method)
    check_sizes(cfg, method, manifest, train_rows, protocol)
    torch.manual_seed(cfg.seed * 1000 + rank)  # the same weights everywhere, other random draws per process
    sampler, clips, clip_sampler = samplers(cfg, method, train_set, rank, world)
    state = {"step": 0, "epoch": 0, "batch": 0, "best": None, "domains": None}
    checkpoint = out / "checkpoint.pt"
    build_hashes = manifest_hashes(cfg.build)
    if checkpoint.exists():
        check_resume(out, cfg, protocol, build_hashes)
        state = load_checkpoint(checkpoint, method, rank, per_epoch=len(sampler))
        if lead:
            reclusters = method.pseudo_domains and state["batch"] in (0, len(sampler))
            trim_metrics(out, state["step"], drop_domains_row=reclusters)
    elif lead:  # a fresh start: rows of an attempt killed before its first checkpoint are dropped
        out.mkdir(parents=True, exist_ok=True)  # only now: a refused command leaves no empty folder
        for name in ("metrics.jsonl", "metrics.csv"):
            (out / name).unlink(missing_ok=True)
        write_json(out / "run.json", {"config": asdict(cfg), "protocol": protocol.name, "variant": protocol.variant,
                                      "build": manifest["build"], "config_hash": manifest["config_hash"],
                                      **build_hashes, "build_verification": verification,
                                      "selection": selection_name(cfg, protocol), "hparams": method.hparams(),
                                      "channels": list(channels), "world_size": world,
                                      "train_samples": len(train_rows), "validation_samples": len(val_rows),
                                      "target_samples": len(target_rows),
                                      "clip_videos_skipped": clips.skipped if clips else None,
                                      "code": code_version(), "packages": package_versions(),
                                      "device": torch.cuda.get_device_name(device) if device.type == "cuda"
                                      else "cpu"})
    barrier(world)
    if world > 1:
        method.distribute([device.index] if device.type == "cuda" else None)
    bar = tqdm(total=cfg.steps, initial=state["step"], unit="step", desc=f"{cfg.method} {protocol.name}",
               disable=not lead or cfg.quiet, dynamic_ncols=True)
    with StopRequests() as stop:  # a signal stops the run after the current step, checkpointed
        while state["step"] < cfg.steps:
            if method.pseudo_domains and state["batch"] == 0:
                assign_pseudo_domains(method, cfg, device, state, train_set, out if lead else None, world)
            pseudo = None if state["domains"] is None else np.asarray(state["domains"])
            if pseudo is not None:
                sampler.set_domains(pseudo)
            sampler.set_epoch(state["epoch"], state["batch"])
            clip_batches = iter_clips(clips, clip_sampler, state["step"], cfg.workers)
            for batch in batches(train_set, sampler, cfg.workers):
                step = state["step"] + 1
                if pseudo is not None:
                    batch["domain"] = torch.as_tensor(pseudo[batch["index"].numpy()])
                batch = prepare(cfg, device, batch)
                if clip_batches is not None:
                    batch["clip"] = prepare(cfg, device, next(clip_batches))
                with autocast(cfg, device):
                    try:
                        losses = method.update(batch)
                    except NonFiniteLoss as err:  # raised in every process alike
                        save_checkpoint(checkpoint, method, state, lead)
                        ids = train_rows.iloc[batch["index"].cpu().numpy()]["video_id"].tolist()
                        raise TrainingStopped(f"step {step}: non-finite loss {err.losses}; batch videos "
                                              f"{ids[:8]}...; checkpoint of step {state['step']} written to "
                                              f"{checkpoint}") from None
                state["step"], state["batch"] = step, state["batch"] + 1
                if lead:
                    log(out, {"step": step, "epoch": state["epoch"], "kind": "train", **losses})
                evaluates = step % cfg.eval_every == 0 or step == cfg.steps
                stopping = stop.agreed(world, device)
                if evaluates and lead:
                    evaluate_and_select(method, cfg, device, state, val_set, val_rows, target_set, target_rows, out)
                if evaluates or stopping or step % cfg.checkpoint_every == 0:
                    save_checkpoint(checkpoint, method, state, lead)
                bar.set_postfix(progress_note(losses, state), refresh=False)
                bar.update(1)
                if stopping:
                    bar.close()
                    raise Preempted(f"stopped by {stopping} after step {step} of {cfg.steps}; checkpoint written to "
                                    f"{checkpoint}; to resume, run the same train command again (same --out)", lead)
                if step >= cfg.steps:
                    break
            if state["batch"] >= len(sampler):
                state["epoch"], state["batch"] = state["epoch"] + 1, 0
    bar.close()
    if not lead:
        return None
    return final_report(cfg, device, method, state, target_set, target_rows, out, protocol, val_set, val_rows)


def samplers(cfg: RunConfig, method, train_set: ShardDataset, rank: int, world: int):
    """(frame batch sampler, clip dataset, clip sampler) for a method: the balanced draw the method asks for
    (per (domain, class), or per domain when it is not class-balanced), clips only for methods with clips."""
    sampler = BalancedBatchSampler(train_set.domains, train_set.labels, cfg.per_class * method.batch_chunks,
                                   seed=cfg.seed, rank=rank, world=world,
                                   single_class_domains=method.single_class_domains,
                                   class_balanced=method.class_balanced,
                                   batches_per_epoch=pseudo_epoch_length(method, train_set, cfg.per_class))
    if not method.clip_length:
        return sampler, None, None
    clips = ClipDataset(train_set, method.clip_length)
    return sampler, clips, ClipSampler(clips, method.config.clips_per_class, seed=cfg.seed, rank=rank, world=world,
                                       class_balanced=method.class_balanced)


def resolved(cfg: RunConfig, method) -> RunConfig:
    """``cfg`` with the method's defaults filled in: its paper's batch and input size."""
    return replace(cfg, per_class=cfg.per_class or method.config.per_class,
                   input_size=method.input_size if cfg.input_size is None else cfg.input_size)


def check_sizes(cfg: RunConfig, method, manifest: dict, train_rows: pd.DataFrame, protocol) -> None:
    """Refuse, before any work, a ``per_class`` larger than the smallest (domain, class) group of the
    protocol's training data (a batch would hold its samples several times over, and a huge count exhausts
    memory building one batch) and stored crops smaller than the networks need."""
    column = cfg.domains or protocol.domains
    groups = train_rows.groupby([column, "label"]).size()
    if len(groups) and cfg.per_class > groups.min():
        counts = ", ".join(f"{domain}/{label} {n}" for (domain, label), n in groups.items())
        raise ValueError(f"--per-class {cfg.per_class}: more samples per (domain, class) than the smallest group "
                         f"of {protocol.name}'s training data holds ({groups.min()}; {counts}); use --per-class "
                         f"{groups.min()} or less")
    stored = manifest["config"]["face"]["size"]
    if not cfg.input_size and stored < MIN_INPUT_SIZE:
        raise ValueError(f"the build's crops are {stored} pixels, the networks need at least {MIN_INPUT_SIZE}: "
                         f"give --input-size {MIN_INPUT_SIZE} or more (the crops are resized up)")


def progress_note(losses: dict, state: dict) -> dict:
    """What the progress bar shows beside rate and ETA: the step's loss and the best validation EER so far."""
    note = {"loss": f"{losses['total']:.4f}"}
    if state["best"] is not None:
        note["best_eer"] = f"{state['best']['eer']:.4f}@{state['best']['step']}"
    return note


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


def batches(dataset, sampler, workers: int):
    """Training batches: from ``workers`` DataLoader processes, or (0) read in this process by threads and
    prefetched by a background thread."""
    loader = make_loader(dataset, sampler, workers=workers)
    return loader if workers else prefetch(loader)


def pseudo_epoch_length(method, train_set: ShardDataset, per_class: int) -> int | None:
    """For methods with pseudo-domains, an epoch is about one pass over the training samples (the default
    epoch, set by the smallest group, would change with every clustering)."""
    if not method.pseudo_domains:
        return None
    return max(1, len(train_set) // (2 * per_class * len(np.unique(train_set.domains))))


def iter_clips(clips, clip_sampler, step: int, workers: int):
    """Clip batches from the one of ``step`` on (clip epochs follow the step count, so resume is exact)."""
    if clips is None:
        return None
    def endless():
        epoch, start = divmod(step, len(clip_sampler))
        while True:
            clip_sampler.set_epoch(epoch, start)
            yield from batches(clips, clip_sampler, min(workers, 1))
            epoch, start = epoch + 1, 0
    return endless()


def assign_pseudo_domains(method, cfg, device, state, train_set: ShardDataset, out: Path | None, world: int):
    """Re-label the training samples with the method's pseudo-domains (computed by process 0, shared with the
    others), log how they agree with the datasets and with the previous epoch's labels."""
    labels = None
    if out is not None:
        features = []
        method.eval()
        with torch.no_grad(), autocast(cfg, device):
            for batch in in_order(train_set):
                features.append(method.domain_features(prepare(cfg, device, batch), state["epoch"]).float().cpu())
        previous = None if state["domains"] is None else np.asarray(state["domains"])
        labels = method.assign_domains(torch.cat(features).numpy(), train_set.labels, previous, state["epoch"])
        entry = {"step": state["step"], "epoch": state["epoch"], "kind": "domains",
                 "nmi_datasets": agreement(labels, train_set.domains), "source": method.domain_source(state["epoch"])}
        if previous is not None:
            entry["nmi_previous"] = agreement(labels, previous)
        entry.update({f"size_{d}": int((labels == d).sum()) for d in np.unique(labels)})
        log(out, entry)
    if world > 1:
        shared = [labels]
        dist.broadcast_object_list(shared, src=0)
        labels = shared[0]
    state["domains"] = np.asarray(labels).tolist()


def selection_name(cfg: RunConfig, protocol) -> str:
    return ("ORACLE: checkpoint selected on the target test set" if cfg.select_on_target else protocol.selection)


def selection_scores(method, cfg, device, val_set, val_rows, target_set, target_rows) -> pd.DataFrame:
    """The frame scores model selection looks at: source validation, or the target in ORACLE mode."""
    if cfg.select_on_target:
        return frame_table(target_rows, score(method, target_set, cfg, device))
    return frame_table(val_rows, score(method, val_set, cfg, device))


def thresholds(frames: pd.DataFrame, fusion: str = "mean") -> dict:
    """EER, AUC and EER threshold of frame scores, and the EER and threshold of their video-level scores
    (frame scores fused by ``fusion``): each level's deployable threshold comes from that level's validation
    scores."""
    labels = frames["label"].to_numpy()
    rate, threshold = eer(frames["score"].to_numpy(), labels)
    videos = video_level(frames, fusion)
    video_rate, video_threshold = eer(videos["score"].to_numpy(), videos["label"].to_numpy())
    return {"eer": rate, "auc": auc(frames["score"].to_numpy(), labels), "threshold": threshold,
            "video_eer": video_rate, "video_threshold": video_threshold, "fusion": fusion}


def branch_thresholds(videos: pd.DataFrame) -> dict:
    """EER, AUC and EER threshold of a video branch's scores (one per video)."""
    scores, labels = videos["score"].to_numpy(), videos["label"].to_numpy()
    rate, threshold = eer(scores, labels)
    return {"video_branch_eer": rate, "video_branch_auc": auc(scores, labels), "video_branch_threshold": threshold}


def selection_keys(method) -> tuple[str, str]:
    """The (EER, AUC) entries model selection ranks checkpoints by: the video branch's for a method whose own
    number it is, else the frame scores'."""
    return ("video_branch_eer", "video_branch_auc") if method.scores_videos else ("eer", "auc")


def evaluate_and_select(method, cfg, device, state, val_set, val_rows, target_set, target_rows, out):
    frames = selection_scores(method, cfg, device, val_set, val_rows, target_set, target_rows)
    entry = {"step": state["step"], "kind": "select_on_target" if cfg.select_on_target else "validation",
             **thresholds(frames, cfg.fusion)}
    if method.scores_videos:  # the video branch on the same videos (source validation, or the target if ORACLE)
        entry.update(branch_thresholds(video_scores(method, target_set if cfg.select_on_target else val_set,
                                                    cfg, device)))
    log(out, entry)
    best = state["best"]
    rate, area = selection_keys(method)
    if best is None or rate not in best or (entry[rate], -entry[area]) < (best[rate], -best[area]):
        state["best"] = entry
        with atomic_path(out / "best.pt", suffix=".tmp.pt") as tmp:
            torch.save(method.state_dict(), tmp)


def final_report(cfg, device, method, state, target_set, target_rows, out, protocol, val_set, val_rows) -> dict:
    method.load_state_dict(load_weights(out / "best.pt", map_location=device))
    best = state["best"]
    if best.get("fusion", "mean") != cfg.fusion or "video_threshold" not in best:  # another fusion asked for
        #                                  at evaluation, or a checkpoint from before video-level thresholds
        best = {**best, **thresholds(selection_scores(method, cfg, device, val_set, val_rows, target_set,
                                                      target_rows), cfg.fusion)}
    frames = frame_table(target_rows, score(method, target_set, cfg, device))
    with atomic_path(out / "scores.csv") as tmp:
        frames.to_csv(tmp, index=False)
    failures = acquisition_failures(cfg.build, protocol, target_rows, cfg.fta_rejected)
    metrics = report(frames, source_threshold=best["threshold"], video_source_threshold=best["video_threshold"],
                     fusion=cfg.fusion, failures=failures)
    branch_threshold = None
    if method.clip_length:  # the video branch scores whole videos; its threshold comes from source videos
        if "video_branch_threshold" not in best:
            best = {**best, **branch_thresholds(video_scores(method, val_set, cfg, device))}
        branch_threshold = best["video_branch_threshold"]
        videos = video_scores(method, target_set, cfg, device)
        with atomic_path(out / "video_scores.csv") as tmp:
            videos.to_csv(tmp, index=False)
        metrics["video_branch"] = level_metrics(videos, branch_threshold, failures["video"])
    selected_on = [k for k in ("eer", "auc", "video_eer", "video_branch_eer", "video_branch_auc") if k in best]
    result = {"protocol": protocol.name, "protocol_group": protocol.group, "variant": protocol.variant,
              "method": cfg.method, "selection": selection_name(cfg, protocol), "steps": int(state["step"]),
              "best_step": best["step"], "compared": "video_branch" if method.scores_videos else "frame_scores",
              "selection_scores": {k: best[k] for k in selected_on},  # at the kept checkpoint
              "deployable_threshold": best["threshold"], "deployable_video_threshold": best["video_threshold"],
              **({"deployable_video_branch_threshold": branch_threshold} if branch_threshold is not None else {}),
              "fusion": cfg.fusion, "fta_rejected": cfg.fta_rejected,
              "provenance": method.provenance, "precision": "bf16" if use_bf16(cfg, device) else "fp32",
              "metrics": metrics}
    write_json(out / "report.json", result)
    from .plots import plot_scores
    plot_scores(frames, out, f"{cfg.method} {protocol.name} ({protocol.variant})", cfg.fusion,
                {"frame": best["threshold"], "video": best["video_threshold"]})
    return result


def acquisition_failures(build: str, protocol, target_rows: pd.DataFrame, as_rejected: bool) -> dict:
    """The target's presentations without a usable face, at frame level (frames the build rejected, of
    videos the protocol tests on) and video level (those videos with no sample left), from the build's
    rejects.csv and sources.csv: {"frame": Acquisition, "video": Acquisition}."""
    folder = Path(build)
    paths = (folder / "sources.csv", folder / "rejects.csv")
    if not all(p.is_file() for p in paths):  # builds older than their manifest folder's tables
        return {"frame": Acquisition(as_rejected=as_rejected), "video": Acquisition(as_rejected=as_rejected)}
    sources = pd.read_csv(paths[0], dtype=str, keep_default_na=False)
    rejects = pd.read_csv(paths[1], dtype=str, keep_default_na=False)
    tested = protocol.target_samples(sources).set_index("video_id")
    rejected = rejects[(rejects["action"] == "rejected") & rejects["video_id"].isin(tested.index)]
    frame_rows = tested.loc[rejected.loc[rejected["frame_index"].astype(int) >= 0, "video_id"]]
    video_rows = tested[~tested.index.isin(target_rows["video_id"])]
    return {"frame": _acquisition(frame_rows, as_rejected), "video": _acquisition(video_rows, as_rejected)}


def _acquisition(rows: pd.DataFrame, as_rejected: bool) -> Acquisition:
    """Counts of presentations (rows of a source table) by live and attack species."""
    attacks = rows[rows["label"] != "live"]
    kinds = species(attacks["attack"], attacks["attack_detail"]) if len(attacks) else []
    counted = pd.Series(list(zip(kinds, attacks["attack"]))).value_counts() if len(attacks) else {}
    return Acquisition(int((rows["label"] == "live").sum()),
                       tuple(sorted((str(k), str(f), int(n)) for (k, f), n in dict(counted).items())), as_rejected)


def video_scores(method, dataset: ShardDataset, cfg: RunConfig, device: torch.device) -> pd.DataFrame:
    """One live probability per video from the method's video branch, over all its sampled frames in order."""
    clips = ClipDataset(dataset, 1)
    rows = []
    for number, video_id in enumerate(clips.video_ids):
        frames = clips.videos[number]
        batch = dataset.__getitems__(frames)
        image = prepare(cfg, device, batch)["image"]
        with autocast(cfg, device):
            value = float(method.predict_video(image[None]).float().cpu()[0])
        first = dataset.samples.iloc[frames[0]]
        rows.append({"video_id": video_id, "label": int(first["label"] == "live"), "attack": first["attack"],
                     "attack_detail": first["attack_detail"], "score": value, "frames": len(frames)})
    return pd.DataFrame(rows)


def log(out: Path, entry: dict) -> None:
    """Append one metrics row to metrics.jsonl and metrics.csv."""
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
    path = out / "metrics.csv"
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["step", "kind", "name", "value"])
        for name, value in entry.items():
            if name not in ("step", "kind") and isinstance(value, (int, float)) and math.isfinite(value):
                writer.writerow([entry["step"], entry["kind"], name, value])


def trim_metrics(out: Path, step: int, drop_domains_row: bool) -> None:
    """Before a resume from the checkpoint of ``step``: drop the metrics rows that the resumed run logs again
    (those after ``step``, the clustering at ``step`` when it is redone, and a line cut short by a kill)."""
    def keep(row_step, kind: str) -> bool:
        return int(row_step) < step or (int(row_step) == step and not (kind == "domains" and drop_domains_row))

    for path, header in ((out / "metrics.jsonl", 0), (out / "metrics.csv", 1)):
        if not path.exists():
            continue
        with open(path, newline="") as handle:  # as written: metrics.csv lines end in \r\n
            lines = [line for line in handle if line.endswith("\n")]
        kept = lines[:header]
        for line in lines[header:]:
            row_step, kind = _step_and_kind(path.suffix, line)
            if keep(row_step, kind):
                kept.append(line)
        with atomic_path(path, suffix=f".tmp{path.suffix}") as tmp, open(tmp, "w", newline="") as handle:
            handle.writelines(kept)


def _step_and_kind(suffix: str, line: str) -> tuple:
    """The step and kind of one line of metrics.jsonl or metrics.csv."""
    if suffix == ".jsonl":
        row = json.loads(line)
        return row["step"], row["kind"]
    return tuple(next(csv.reader([line]))[:2])


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


def evaluate_run(out: Path, verify: bool = True, build: str | Path | None = None, fusion: str | None = None,
                 fta_rejected: bool | None = None) -> dict:
    """Evaluate a finished (or interrupted) run's best checkpoint on its protocol's target (after checking the
    build against its manifest, unless ``verify`` is false). ``build``: where the run's build is now (a moved
    or copied build, accepted when its manifest content is the one the run was trained on). ``fusion`` and
    ``fta_rejected``: other settings than the run's for the frame-to-video fusion (the video threshold is then
    fixed again on the validation scores) and the failures to acquire."""
    meta_path = out / "run.json"
    if not meta_path.is_file() or not (out / "checkpoint.pt").is_file():
        raise FileNotFoundError(f"{out}: not a run folder (run.json and checkpoint.pt are needed)")
    started, cfg = saved_run(out)
    build = resolve_build(out, cfg.build) if build is None else str(Path(build).resolve())
    cfg = replace(cfg, build=build, verify=verify, fusion=cfg.fusion if fusion is None else fusion,
                  fta_rejected=cfg.fta_rejected if fta_rejected is None else fta_rejected)
    check_same_build(out, started, cfg.build)
    check_build(cfg)
    device = resolve_device(cfg.device)
    _, protocol, _, parts = run_data(cfg)
    (_, train_set), (val_rows, val_set), (target_rows, target_set) = parts
    method = build_method(cfg, sorted(set(train_set.domains.tolist()))).to(device)
    cfg = resolved(cfg, method)
    state = load_checkpoint(out / "checkpoint.pt", method, per_epoch=1)  # evaluation ignores the position
    return final_report(cfg, device, method, state, target_set, target_rows, out, protocol, val_set, val_rows)
