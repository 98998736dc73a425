"""Stopping a training run at a step boundary when the cluster asks for it.

SLURM sends SIGUSR1 (with ``--signal``) or SIGTERM before it ends a job, a user presses Ctrl-C (SIGINT), and
``torchrun`` passes SIGTERM on to its processes. :class:`StopRequests` catches the three during training and
only records them; the loop asks :meth:`StopRequests.agreed` after each step, writes a checkpoint and stops
with :class:`Preempted` (exit status :data:`PREEMPTED_EXIT`). Under ``torchrun`` the answer is the maximum over
the processes, so every process stops after the same step even when only one of them got the signal. A
second signal of the same kind acts as it would without this class.
"""
from __future__ import annotations

import signal

import torch
from torch import distributed as dist

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)
PREEMPTED_EXIT = 75  # EX_TEMPFAIL of sysexits.h: a temporary failure, run the same command again


class Preempted(RuntimeError):
    """A run stopped on a signal after writing its checkpoint; ``lead``: this process reports it."""

    def __init__(self, message: str, lead: bool = True):
        super().__init__(message)
        self.lead = lead


class StopRequests:
    """A context that records SIGTERM, SIGINT and SIGUSR1 instead of dying on them (restored on exit)."""

    def __init__(self):
        self.received: int | None = None
        self._previous: dict = {}

    def __enter__(self) -> "StopRequests":
        for number in SIGNALS:
            self._previous[number] = signal.signal(number, self._record)
        return self

    def __exit__(self, *exc) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler)
        self._previous.clear()

    def _record(self, number, frame) -> None:
        self.received = number
        signal.signal(number, self._previous.get(number, signal.SIG_DFL))  # a second one is not caught

    def agreed(self, world: int, device: torch.device) -> str | None:
        """The name of a signal received by any process (every process gets the same answer), else None."""
        number = self.received or 0
        if world > 1:
            flag = torch.tensor([number], device=device)
            dist.all_reduce(flag, op=dist.ReduceOp.MAX)
            number = int(flag.item())
        return signal.Signals(number).name if number else None
