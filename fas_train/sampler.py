"""Per-domain, per-class balanced batches.

Every batch holds ``per_class`` live and ``per_class`` spoof samples of every domain, laid out domain by
domain (sorted), live before spoof, so a method can split a batch by domain without looking. Batches are a
pure function of (seed, epoch, batch number, domain labels): an epoch is reproducible and a run resumes
mid-epoch with ``set_epoch(epoch, start_batch)``. Domain labels can be replaced each epoch by pseudo-domains
(``set_domains``), as methods that cluster their own domains need; with ``single_class_domains`` a domain
holding one class only (a cluster can) contributes that class's block alone. With ``class_balanced=False``
each domain's block is ``2 x per_class`` samples drawn from the whole domain, whatever their class (a paper
that asks for so many images per domain without class balance: CCDD's ``balanced=false``).

Under DDP (``world`` processes) every process draws the same global batches and keeps its own slice of each
(domain, class) block: ``per_class / world`` samples of it, so each process's batch has the same layout and
the processes together see exactly the global batch.

Within an epoch a group (domain, class) is walked through a permutation of its samples and reshuffled only
when exhausted, so no sample repeats in an epoch unless its group is smaller than the epoch's quota
(``per_class`` x batches). The default epoch is the number of batches the smallest group fills without
repeating (at least one).
"""
from __future__ import annotations

import numpy as np
from torch.utils.data import Sampler

LIVE, SPOOF = 1, 0
ANY = 2  # the class key of a domain's block when batches are not class-balanced


class BalancedBatchSampler(Sampler[list[int]]):
    def __init__(self, domains, labels, per_class: int, seed: int = 0, batches_per_epoch: int | None = None,
                 rank: int = 0, world: int = 1, single_class_domains: bool = False, class_balanced: bool = True):
        self.labels = np.asarray(labels, np.int64)
        if not set(np.unique(self.labels)) <= {LIVE, SPOOF}:
            raise ValueError("labels must be 1 (live) or 0 (spoof)")
        if per_class < 1:
            raise ValueError("per_class must be >= 1")
        if per_class % world or not 0 <= rank < world:
            raise ValueError(f"per_class {per_class} must split evenly over {world} processes (rank {rank})")
        self.per_class, self.seed, self.fixed_length = per_class, seed, batches_per_epoch
        self.rank, self.world = rank, world
        self.single_class_domains = single_class_domains  # pseudo-domains may hold one class only
        self.class_balanced = class_balanced
        self.block = per_class if class_balanced else 2 * per_class  # samples per (domain, class) block
        self.epoch, self.start_batch = 0, 0
        self.set_domains(domains)

    def set_domains(self, domains) -> None:
        """Use these domain labels (dataset domains or pseudo-domains) from now on."""
        domains = np.asarray(domains, np.int64)
        if domains.shape != self.labels.shape:
            raise ValueError(f"{len(domains)} domain labels for {len(self.labels)} samples")
        self.groups = {}
        for d in np.unique(domains):
            if not self.class_balanced:
                self.groups[(int(d), ANY)] = np.flatnonzero(domains == d)
                continue
            for c in (LIVE, SPOOF):
                members = np.flatnonzero((domains == d) & (self.labels == c))
                if len(members) == 0 and self.single_class_domains:
                    continue
                if len(members) == 0:
                    raise ValueError(f"domain {d} has no {'live' if c == LIVE else 'spoof'} sample: a balanced batch "
                                     f"needs both classes in every domain")
                self.groups[(int(d), c)] = members

    @property
    def batch_size(self) -> int:
        """Samples per batch in this process."""
        return self.block // self.world * len(self.groups)

    def __len__(self) -> int:
        if self.fixed_length:
            return self.fixed_length
        return max(1, min(len(m) for m in self.groups.values()) // self.block)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        """The epoch the next iteration yields, from batch ``start_batch`` on (resume)."""
        self.epoch, self.start_batch = epoch, start_batch

    def __iter__(self):
        batches = self.epoch_batches(self.epoch)
        yield from batches[self.start_batch:]

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        """Every batch of an epoch for this process, as lists of sample indices."""
        n, share = len(self), self.block // self.world
        columns = []
        for g, key in enumerate(sorted(self.groups, key=lambda k: (k[0], -k[1]))):
            members = self.groups[key]
            rng = np.random.default_rng([self.seed, epoch, key[0], key[1]])
            need = n * self.block
            order = np.concatenate([rng.permutation(members) for _ in range(-(-need // len(members)))])[:need]
            columns.append(order.reshape(n, self.block)[:, self.rank * share:(self.rank + 1) * share])
        return np.concatenate(columns, axis=1).tolist()
