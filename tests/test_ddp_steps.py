"""The base method's DDP arithmetic, on two gloo processes with a one-weight method (seconds, so that the
mutation run's fast selection holds it): logged losses are the mean over the processes, a non-finite loss in
one process stops every process, the equations' sums are scaled by the number of processes so that DDP's
gradient average is the sum over the global batch, and a step goes through the DDP wrapper."""
from __future__ import annotations

import os
import socket
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from fas_train.methods import NonFiniteLoss
from fas_train.methods.base import Method, check_finite

WORLD = 2
LR = 0.1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class OneWeight(Method):
    """total = reduce(w * x) over a batch of numbers x; w starts at 1 and SGD steps it by ``LR``."""

    def __init__(self, reduction: str):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(1))
        self.config = SimpleNamespace(reduction=reduction)
        self.optimizer = torch.optim.SGD(self.parameters(), lr=LR)

    def losses(self, batch: dict) -> dict:
        return {"total": self.reduce(self.weight * batch["x"]), "count": float(len(batch["x"]))}


def rank_data(rank: int) -> torch.Tensor:
    return torch.tensor([1.0, 2.0, 3.0]) if rank == 0 else torch.tensor([4.0, 5.0])  # unequal on purpose


def worker(rank: int, port: int) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        # the logged losses: the mean over the processes of each, tensors and plain numbers alike
        values = check_finite({"total": torch.tensor(rank + 1.0), "other": 10.0 * (rank + 1)}, distributed=True)
        assert values == {"total": 1.5, "other": 15.0}, values
        assert check_finite({"total": torch.tensor(rank + 1.0)}) == {"total": rank + 1.0}  # one process alone
        # a NaN in process 1 only stops process 0 too (they would fall out of step otherwise)
        with pytest.raises(NonFiniteLoss):
            check_finite({"total": torch.tensor(float("nan") if rank else 1.0)}, distributed=True)

        x = rank_data(rank)
        method = OneWeight("sum")
        method.distribute()
        assert method.reduce(x).item() == WORLD * x.sum().item()  # DDP averages: scaled by the processes
        assert OneWeight("mean").reduce(x).item() == pytest.approx(x.mean().item())
        logged = method.update({"x": x})
        # the step: DDP's average of WORLD x each process's sum is the sum over the global batch (15)
        assert method.weight.item() == pytest.approx(1.0 - LR * 15.0)
        # the losses logged: WORLD x each process's sum at w = 1 (12 and 18), averaged; batch sizes 3 and 2
        assert logged == {"total": pytest.approx(15.0), "count": 2.5}
    finally:
        dist.destroy_process_group()


def test_ddp_losses_are_averaged_sums_scaled_and_steps_go_through_the_wrapper():
    # first one process, the baseline the two differ from (run here, it also ties this test to these
    # functions for the mutation run, whose coverage does not see the spawned processes)
    x = rank_data(1)
    assert check_finite({"total": torch.tensor(2.0), "other": 20.0}) == {"total": 2.0, "other": 20.0}
    with pytest.raises(NonFiniteLoss, match=r"non-finite loss: \{'total': inf, 'other': 1.0\}") as stopped:
        check_finite({"total": torch.tensor(float("inf")), "other": 1.0})
    assert stopped.value.losses == {"total": float("inf"), "other": 1.0}  # what the training loop reports
    method = OneWeight("sum")
    assert method.reduce(x).item() == 9.0 and OneWeight("mean").reduce(x).item() == 4.5
    assert method.update({"x": x}) == {"total": 9.0, "count": 2.0}
    assert method.weight.item() == pytest.approx(1.0 - LR * 9.0)
    mp.spawn(worker, args=(free_port(),), nprocs=WORLD, join=True)
