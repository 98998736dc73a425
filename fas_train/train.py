"""The training loop: balanced batches from the shards, one ``method.update`` per step, honest model selection
(:mod:`fas_train.selection`), a final report (:mod:`fas_train.evaluation`).

- ``checkpoint.pt`` (:mod:`fas_train.checkpoint`) is written at every evaluation, every ``checkpoint_every``
  steps, on a non-finite loss and when SIGTERM, SIGINT or SIGUSR1 stop the run (:mod:`fas_train.preemption`);
  a run started again with the same output folder resumes where it stopped, with the same next batches and
  losses, after dropping the metrics rows logged since (:mod:`fas_train.metrics_log`).
- Under ``torchrun`` (:mod:`fas_train.runtime`) every process reads its slice of each balanced batch
  (``per_class`` is the global count per domain and class), gradients and logged losses are averaged over
  processes, and process 0 alone evaluates and writes outputs.
"""
from __future__ import annotations

import contextlib
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch
from torch import distributed as dist
from tqdm import tqdm

from pipeline.atomic import write_json
from pipeline.provenance import code_version, package_versions

from .checkpoint import check_resume, load_checkpoint, manifest_hashes, run_folder_lock, save_checkpoint
from .data import ClipDataset, ClipSampler, ShardDataset, make_loader, prefetch
from .evaluation import final_report
from .inputs import check_build, run_data
from .methods import NonFiniteLoss
from .metrics_log import log, tensorboard_events, trim_metrics
from .preemption import Preempted, StopRequests
from .pseudo_domains import agreement
from .runtime import autocast, barrier, prepare, start_distributed
from .sampler import BalancedBatchSampler
from .scoring import in_order
from .selection import evaluate_and_select, selection_name
from .settings import RunConfig, build_method, check_sizes, method_config, resolved


class TrainingStopped(RuntimeError):
    """A run stopped on a non-finite loss, after writing its checkpoint."""


def run(cfg: RunConfig) -> dict:
    """Train (or resume) and evaluate; return the final report. run.json records the build's and the run
    folder's absolute paths, so that the folder can be evaluated from anywhere."""
    cfg = replace(cfg, build=str(Path(cfg.build).resolve()), out=str(Path(cfg.out).resolve()))
    out = Path(cfg.out)
    rank, world, device = start_distributed(cfg)
    try:
        with run_folder_lock(out) if rank == 0 else contextlib.nullcontext():  # one trainer per run folder
            return _run(cfg, out, rank, world, device)
    finally:
        if world > 1:
            dist.destroy_process_group()


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
    purge_from = state["step"] + 1 if state["step"] else 0  # a resume logs the steps after its checkpoint again
    # a signal stops the run after the current step, checkpointed
    with StopRequests() as stop, tensorboard_events(out, purge_from, enabled=lead):
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


def progress_note(losses: dict, state: dict) -> dict:
    """What the progress bar shows beside rate and ETA: the step's loss and the best validation EER so far."""
    note = {"loss": f"{losses['total']:.4f}"}
    if state["best"] is not None:
        note["best_eer"] = f"{state['best']['eer']:.4f}@{state['best']['step']}"
    return note


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
