"""Meta Pattern + HFN (Cai et al., TIFS 2022), Algorithm 1.

Each iteration the source domains are split at random into D_phi (one domain) and D_theta (the others).
K inner steps (default 4) update the pattern extractor Phi alone on mini-batches of D_phi, each with the loss
of the HFN Theta given the current Phi; then Theta takes one step on a mini-batch of D_theta with the
adapted Phi's meta pattern (Phi frozen for it). Loss L = BCE (2-way softmax, index 1 = live) + pixel-wise MSE
of the HFN's map against all ones (live) or all zeros (spoof). Test score S = (s_1 + mean(m)) / 2.

``variant``:
- ``released`` (default): the authors' released loop, first-order and alternating: SGD with momentum 0.9,
  Phi at lr 4e-3 on L, Theta at lr 1e-3 on L / 2 (the released code halves Theta's loss, (MSE + CE) / 2),
  4 samples per (domain, class); the released pattern extractor ends with a batch norm before its sigmoid.
- ``paper``: the paper's text: one learning rate alpha = 1e-3 for both (SGD, momentum 0.9), L = L_BCE + L_MSE
  (Eq. 10) for both steps, the extractor of Fig. 3 (no batch norm after the second convolution); otherwise
  the same algorithm (Eqs. 7-8 are this first-order approximation).
- ``end-to-end``: the ablation without Algorithm 1: Phi and Theta trained jointly on the whole batch with the
  paper's L and extractor.
``stream_fusion``: ``sum`` (default), Eq. 9's HFM, C(m_t) + C(m_b) + U[C(m_{i-1})]; ``mean``, the released
code's average of the two streams' maps, (C(m_t) + C(m_b)) / 2 + U[C(m_{i-1})] (its top-down path is added).
``second_stream``:
- ``mp`` (default): the learned meta pattern; ``lbp``: the shards' colour LBP map instead (no Phi, plain
  training of the HFN), the paper's "HFN + ColorLBP"; ``depth``: the paper's "HFN + Depth", the shards'
  ``depth_estimate`` (the unmasked depth map of every face, live and attack; builds with
  ``depth.store_estimate: true``), resized to the image and repeated to 3 channels. The shards' ``depth`` is
  never an input: it is the supervision target, all zeros for attacks, and would give the network the label.

Every step draws K + 1 mini-batches: the sampler delivers ``per_class x (K + 1)`` per (domain, class) and the
method takes chunk k (k < K) of D_phi for the inner steps and chunk K of D_theta for Theta. The released
pattern extractor ends with a batch norm before the sigmoid; the paper's layout (without it) is
used by ``paper`` and ``end-to-end``, the released one by ``released``. The HFN's two ResNet streams start from
ImageNet weights, a choice the paper does not state, following the authors' released code (required;
``pretrained=none`` starts them at random on request, and every output says so).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..models.metapattern_nets import HFN, STREAMS, PatternExtractor
from ..models.precision import full_precision
from .base import Method

SECOND_STREAMS = {"mp": (), "lbp": ("lbp",), "depth": ("depth_estimate",)}  # -> the shard channels it reads
LEARNING_RATES = {"released": (4e-3, 1e-3), "paper": (1e-3, 1e-3), "end-to-end": (1e-3, 1e-3)}
THETA_LOSS_SCALE = {"released": 0.5, "paper": 1.0, "end-to-end": 1.0}  # the released code: (MSE + CE) / 2


@dataclass(frozen=True)
class MetaPatternConfig:
    variant: str = "released"
    second_stream: str = "mp"
    inner_steps: int = 4  # K
    momentum: float = 0.9
    per_class: int = 4
    pretrained: str = "auto"
    stream_fusion: str = "sum"  # Eq. 9: C(m_t) + C(m_b) + U[C(m_prev)]; "mean": the released code's (m_t + m_b) / 2


def chunk_rows(batch: dict, chunk: int, chunks: int) -> torch.Tensor:
    """Rows of the ``chunk``-th of ``chunks`` equal parts of every (domain, class) block of a balanced batch
    (the sampler lays each block out contiguously)."""
    key = batch["domain"] * 2 + batch["label"]
    new_block = torch.ones_like(key, dtype=torch.bool)
    new_block[1:] = key[1:] != key[:-1]
    block = new_block.cumsum(0) - 1
    starts = torch.nonzero(new_block).squeeze(1)
    sizes = torch.diff(torch.cat([starts, starts.new_tensor([len(key)])]))
    position = torch.arange(len(key), device=key.device) - starts[block]
    return torch.nonzero(position * chunks // sizes[block] == chunk).squeeze(1)


def select(batch: dict, rows: torch.Tensor) -> dict:
    """The batch restricted to ``rows`` (per-sample tensors only)."""
    n = len(batch["label"])
    return {k: v[rows] for k, v in batch.items() if torch.is_tensor(v) and v.ndim and len(v) == n}


class MetaPattern(Method):
    def __init__(self, config: MetaPatternConfig, network: str, seed: int = 0):
        super().__init__()
        if config.variant not in LEARNING_RATES:
            raise ValueError(f"unknown variant {config.variant!r}; known: {sorted(LEARNING_RATES)}")
        if config.second_stream not in SECOND_STREAMS:
            raise ValueError(f"unknown second_stream {config.second_stream!r}; known: {sorted(SECOND_STREAMS)}")
        self.config = config
        self.hfn = HFN(STREAMS[network], config.pretrained, streams=config.stream_fusion)
        self.pattern = (PatternExtractor(final_norm=config.variant == "released")
                        if config.second_stream == "mp" else None)
        phi_lr, theta_lr = LEARNING_RATES[config.variant]
        self.meta_learning = config.second_stream == "mp" and config.variant != "end-to-end"
        self.batch_chunks = config.inner_steps + 1 if self.meta_learning else 1
        self.theta_optimizer = torch.optim.SGD(self.hfn.parameters(), lr=theta_lr, momentum=config.momentum)
        self.phi_optimizer = (torch.optim.SGD(self.pattern.parameters(), lr=phi_lr, momentum=config.momentum)
                              if self.pattern is not None else None)
        if not self.meta_learning and self.pattern is not None:  # end-to-end: one optimiser over both
            self.theta_optimizer.add_param_group({"params": list(self.pattern.parameters()), "lr": phi_lr})
        self.generator = torch.Generator().manual_seed(seed)  # draws D_phi
        self.provenance = {"streams": STREAMS[network], "pretrained_weights": self.hfn.source}

    @classmethod
    def create(cls, config: MetaPatternConfig, network: str, domains: list, seed: int) -> "MetaPattern":
        return cls(config, network, seed)

    @staticmethod
    def channels(config) -> tuple:
        return ("rgb",) + SECOND_STREAMS[config.second_stream]

    def optimizers(self) -> dict:
        found = {"theta": self.theta_optimizer}
        if self.meta_learning:
            found["phi"] = self.phi_optimizer
        return found

    def second(self, image: torch.Tensor, frozen_phi: bool = False) -> torch.Tensor:
        """The HFN's second input: the meta pattern of the RGB image, or the stored map (LBP or depth estimate)."""
        if self.pattern is None:
            return image[:, 3:6]
        if frozen_phi:
            with torch.no_grad():
                return self.pattern(image[:, :3])
        return self.pattern(image[:, :3])

    def loss(self, batch: dict, frozen_phi: bool = False, scale: float = 1.0) -> dict:
        """``scale`` x (BCE + pixel-wise MSE against a map of ones (live) or zeros (spoof))."""
        image, y = batch["image"], batch["label"]
        logits, pixel_map = self.hfn(image[:, :3], self.second(image, frozen_phi))
        logits, pixel_map = full_precision(logits), full_precision(pixel_map)
        bce = F.cross_entropy(logits, y)
        target = y.to(pixel_map.dtype)[:, None, None, None].expand_as(pixel_map)
        mse = F.mse_loss(pixel_map, target)
        return {"total": scale * (bce + mse), "bce": bce, "mse": mse}

    def split_domains(self, domains: torch.Tensor) -> tuple[int, list[int]]:
        present = torch.unique(domains).tolist()
        if len(present) < 2:
            raise ValueError(f"Meta Pattern needs at least two source domains in a batch, got {present}")
        held = present[int(torch.randint(len(present), (1,), generator=self.generator))]
        return held, [d for d in present if d != held]

    def phi_steps(self, batch: dict, held: int) -> list[dict]:
        """The K inner steps on Phi alone, each on its own chunk of the held-out domain."""
        results = []
        for k in range(self.config.inner_steps):
            rows = chunk_rows(batch, k, self.batch_chunks)
            rows = rows[batch["domain"][rows] == held]
            results.append(self.optimize(self.loss, self.phi_optimizer, select(batch, rows)))
        return results

    def theta_step(self, batch: dict, others: list[int]) -> dict:
        """One step on Theta with the (adapted) Phi frozen, on the last chunk of the other domains (the released
        variant halves this loss)."""
        rows = chunk_rows(batch, self.batch_chunks - 1, self.batch_chunks)
        rows = rows[torch.isin(batch["domain"][rows], batch["domain"].new_tensor(others))]
        return self.optimize(self.loss, self.theta_optimizer, select(batch, rows), True,
                             THETA_LOSS_SCALE[self.config.variant])

    def update(self, batch: dict) -> dict:
        self.train()
        if not self.meta_learning:
            return self.optimize(self.loss, self.theta_optimizer, batch)
        held, others = self.split_domains(batch["domain"])
        inner = self.phi_steps(batch, held)
        outer = self.theta_step(batch, others)
        return {**outer, "phi_total_first": inner[0]["total"], "phi_total_last": inner[-1]["total"]}

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.eval()
        logits, pixel_map = self.hfn(x[:, :3], self.second(x))
        return (torch.softmax(full_precision(logits), 1)[:, 1] + full_precision(pixel_map).mean((1, 2, 3))) / 2
