"""Data parallelism with DDP on the CPU (gloo, two processes): gradients are the mean of the processes' own
gradients, weights stay identical, and ``torchrun`` runs the trainer end to end with one set of outputs."""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from fas_train.methods import RFM, RFMConfig
from fas_train.models import rfm_networks
from fas_train.sampler import BalancedBatchSampler

from conftest import PROTOCOL


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_batch(rank: int) -> dict:
    g = torch.Generator().manual_seed(100 + rank)  # each process its own data
    return {"image": torch.rand(12, 6, 32, 32, generator=g), "depth": torch.rand(12, 1, 32, 32, generator=g),
            "label": torch.tensor([1, 1, 0, 0] * 3), "domain": torch.tensor([0] * 4 + [1] * 4 + [2] * 4)}


def make_method() -> RFM:
    torch.manual_seed(0)
    return RFM(*rfm_networks("small"), RFMConfig(), seed=0)


def flat(tensors) -> torch.Tensor:
    return torch.cat([t.reshape(-1) for t in tensors])


def ddp_worker(rank: int, world: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        batch = local_batch(rank)
        alone = make_method()  # the same weights and meta-test draws, without DDP
        local = torch.autograd.grad(alone.losses(batch)["total"], list(alone.parameters()))
        gathered = [torch.zeros(0)] * world
        dist.all_gather_object(gathered, flat(local))
        mean = torch.stack(gathered).mean(0)

        method = make_method()
        method.distribute()
        probe = torch.optim.SGD(method.parameters(), lr=0.0)  # keeps the gradients, changes nothing
        method.optimize(method.losses, probe, batch)
        averaged = flat(p.grad for p in method.parameters())
        assert torch.allclose(averaged, mean, rtol=1e-4, atol=1e-6), (averaged - mean).abs().max()
        assert not torch.allclose(flat(local), mean, rtol=1e-3, atol=1e-5)  # the processes' data differ

        for step in range(2):  # real Adam steps on different data keep the replicas identical
            method.update(local_batch(rank + 10 * step))
        weights = [torch.zeros(0)] * world
        dist.all_gather_object(weights, flat(p.detach() for p in method.parameters()))
        assert torch.equal(weights[0], weights[1])
    finally:
        dist.destroy_process_group()


def test_ddp_gradients_are_the_mean_of_the_processes_gradients():
    mp.spawn(ddp_worker, args=(2, free_port()), nprocs=2, join=True)


def several_steps_worker(rank: int, world: int, port: int, name: str) -> None:
    from test_methods import make, toy_batch
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        method = make(name, **({"clip_length": 2} if name == "ccdd-video" else {"inner_steps": 2}))
        method.distribute()
        channels = 3 * len(type(method).channels(method.config))
        for step in range(2):
            batch = toy_batch(channels, per_class=2 * method.batch_chunks, seed=rank + 10 * step)
            batch["clip"] = {**{k: batch[k][::2] for k in ("label", "domain")},
                             "image": torch.stack([batch["image"][::2], batch["image"][1::2]], 1)}
            method.update(batch)
        weights = [torch.zeros(0)] * world
        dist.all_gather_object(weights, flat(p.detach() for p in method.parameters()))
        assert torch.equal(weights[0], weights[1])
    finally:
        dist.destroy_process_group()


@pytest.mark.parametrize("name", ["metapattern", "ccdd-video"])
def test_ddp_methods_with_several_steps_per_update_stay_in_sync(name):
    mp.spawn(several_steps_worker, args=(2, free_port(), name), nprocs=2, join=True)


def test_process_slices_make_up_the_global_batch():
    domains, labels = np.repeat([0, 1, 2], 40), np.tile([1, 0], 60)
    whole = BalancedBatchSampler(domains, labels, per_class=4, seed=5)
    parts = [BalancedBatchSampler(domains, labels, per_class=4, seed=5, rank=r, world=2) for r in (0, 1)]
    for batch, first, second in zip(whole, *parts):
        assert sorted(batch) == sorted(first + second) and not set(first) & set(second)
        for part in (first, second):  # each process keeps the layout: domain by domain, live then spoof
            assert [(domains[i], labels[i]) for i in part] == [(d, c) for d in (0, 1, 2) for c in (1, 1, 0, 0)]


def test_torchrun_trains_a_pseudo_domain_method_with_two_processes(train_build, tmp_path):
    out = tmp_path / "ddp"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
               "-m", "fas_train", "train", "--method", "d2am", "--build", str(train_build), "--protocol", PROTOCOL,
               "--out", str(out), "--steps", "4", "--eval-every", "2", "--per-class", "2", "--network", "small",
               "--input-size", "32", "--workers", "0", "--device", "cpu", "--option", "first_epoch=style"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.count("report:") == 1  # process 0 alone reports
    bar = result.stderr.replace("\r", "\n").splitlines()  # process 0's progress bar: steps, rate, loss, best EER
    assert any("d2am O&C&I->M: 100%" in line and "4/4 [" in line and "best_eer=" in line for line in bar)
    assert json.loads((out / "run.json").read_text())["world_size"] == 2
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if r["kind"] == "train"] == [1, 2, 3, 4]
    assert [r["epoch"] for r in rows if r["kind"] == "domains"] == [0]  # clustered once, shared by process 0
    assert len(torch.load(out / "checkpoint.pt", weights_only=True)["torch_rng"]) == 2
    scores = pd.read_csv(out / "scores.csv")  # every target frame scored once, by process 0
    report = json.loads((out / "report.json").read_text())["metrics"]
    assert report["frame"]["samples"] == len(scores) and report["video"]["samples"] == scores["video_id"].nunique()
