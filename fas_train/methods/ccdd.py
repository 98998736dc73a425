"""Class-conditional domain discriminator (Saha et al., CVPRW 2020), image branch (``ccdd``) and image +
video branches (``ccdd-video``).

Image branch (Eq. 1): a ResNet encoder and a live/spoof classifier minimise BCE, while a class-conditional
discriminator behind a gradient reversal layer (constant factor 0.2) classifies the source domain of the live
samples with its live head and of the spoof samples with its spoof head; the encoder, through the reversal,
makes each class's features indistinguishable across domains. Loss = L_c + lambda_IB (L_live + L_spoof).

Video branch (Eq. 2): clips of ``clip_length`` consecutive sampled frames (paper: 8) of one video go through
the shared encoder and an LSTM (hidden 256) with its own classifier and its own class-conditional
discriminator behind its own reversal layer. The two branches are trained alternately, one SGD step each per
iteration (image step first). Video-level scores of the video branch come from the LSTM over all of a video's
sampled frames (reported apart as ``video_branch``).

Paper settings, all defaults: ResNet-50 (``network=paper``; ResNet-18 with ``small``), 224 x 224 input (the
method's default ``--input-size``), SGD lr 3e-4, momentum 0.9, weight decay 1e-5 (ccdd.txt "Implementation
details"), 16 images and 2 clips of 8 frames per domain, LSTM hidden 256, GRL factor 0.2, lambda_IB =
lambda_VB = 1, and the energies of Eqs. 1-2 as written: **sums** over the examples (L_c over all of them, L_l
over the live ones, L_s over the spoof ones), so the class and domain terms weigh alike. ``reduction=mean``
(means, live and spoof means added) is offered as a named departure; it doubles the domain term's weight
relative to L_c and scales the step by 1/batch. Under DDP each process sums its slice and the sums are scaled
by the number of processes, so the averaged gradient is the global sum's.

Choices where the paper is silent (its supplement is not public):
- ImageNet initialisation of the ResNet-50 (the paper does not say; the common practice of the field's public
  code, SSDG and Meta Pattern). The weights must be local (a clear error otherwise); ``pretrained=none``
  trains from random weights on request, and every output says so.
- Class balance: the paper draws 16 images (2 clips) per domain and says nothing of their classes; ours are
  8 live + 8 spoof images and 1 + 1 clips per domain (``balanced=true``), so both discriminator heads see
  every domain in every step. ``balanced=false`` draws 16 images (2 clips) from each domain whatever their
  class.
- Discriminator width 1024 and dropout 0.5; one BCE logit instead of a 2-way softmax (equivalent).

The full model's score (``ccdd-video``, the paper's "Ours"): the video network outputs one label per
sequence, so the compared number (the report's ``compared`` section), model selection and the sweep table's
row are the video branch's, the LSTM over each video's sampled frames; the image branch's frame scores, fused
per video, are reported beside it (``score=image`` compares and selects on them instead).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn import functional as F

from ..losses import reverse_gradient
from ..models.ccdd_nets import BACKBONES, ClassConditionalDiscriminator, Encoder, VideoHead
from ..models.precision import Float32Linear, full_precision
from .base import Method, check_reduction


@dataclass(frozen=True)
class CCDDConfig:
    lr: float = 3e-4
    momentum: float = 0.9
    weight_decay: float = 1e-5
    grl_factor: float = 0.2
    image_weight: float = 1.0  # lambda_IB
    video_weight: float = 1.0  # lambda_VB
    discriminator_width: int = 1024
    dropout: float = 0.5
    per_class: int = 8
    clip_length: int = 8
    clips_per_class: int = 1
    lstm_hidden: int = 256
    pretrained: str = "auto"
    reduction: str = "sum"  # Eqs. 1-2; "mean" is a named departure
    balanced: bool = True  # 8 live + 8 spoof per domain; false: 16 images (2 clips) per domain of any class


@dataclass(frozen=True)
class CCDDVideoConfig(CCDDConfig):
    score: str = "video"  # the compared number and selection: the video branch's; "image": the image branch's


class CCDD(Method):
    """The image branch."""

    input_size = 224

    def __init__(self, config: CCDDConfig, network: str, domains: list, seed: int = 0):
        super().__init__()
        check_reduction(config.reduction)
        self.config = config
        self.class_balanced = config.balanced
        self.encoder = Encoder(BACKBONES[network], config.pretrained)
        self.classifier = Float32Linear(self.encoder.out_features, 1)
        self.discriminator = ClassConditionalDiscriminator(self.encoder.out_features, len(domains),
                                                           config.discriminator_width, config.dropout)
        self.register_buffer("domain_codes", torch.tensor(sorted(domains)), persistent=False)
        self.generator = torch.Generator().manual_seed(seed)  # no draws of its own; checkpointed like all
        self.provenance = {"backbone": BACKBONES[network], "pretrained_weights": self.encoder.source}

    def build_optimizer(self) -> None:
        cfg = self.config
        self.optimizer = torch.optim.SGD(self.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                                         weight_decay=cfg.weight_decay)

    @classmethod
    def create(cls, config: CCDDConfig, network: str, domains: list, seed: int) -> "CCDD":
        method = cls(config, network, domains, seed)
        method.build_optimizer()
        return method

    @staticmethod
    def channels(config) -> tuple:
        return ("rgb",)

    def domain_index(self, domains: torch.Tensor) -> torch.Tensor:
        """Source domain codes -> 0..D-1 (the discriminator heads' classes)."""
        index = torch.searchsorted(self.domain_codes, domains.contiguous()).clamp(max=len(self.domain_codes) - 1)
        if not torch.equal(self.domain_codes[index], domains):
            raise ValueError(f"domains {torch.unique(domains).tolist()} are not all sources {self.domain_codes.tolist()}")
        return index

    def adversarial(self, discriminator, features, labels, domains) -> torch.Tensor:
        """The class-conditional domain losses L_l (live head on live rows) + L_s (spoof head on spoof rows),
        behind the GRL."""
        live = labels == 1
        live_logits, spoof_logits = discriminator(reverse_gradient(full_precision(features), self.config.grl_factor), live)
        target = self.domain_index(domains)
        loss = full_precision(features).new_zeros(())
        if live.any():
            loss = loss + self.reduce(F.cross_entropy(full_precision(live_logits), target[live], reduction="none"))
        if (~live).any():
            loss = loss + self.reduce(F.cross_entropy(full_precision(spoof_logits), target[~live], reduction="none"))
        return loss

    def image_losses(self, batch: dict) -> dict:
        features = self.encoder(batch["image"])
        y = batch["label"]
        cls = self.classification(self.classifier(features).squeeze(1), y)
        domain = self.adversarial(self.discriminator, features, y, batch["domain"])
        return {"total": cls + self.config.image_weight * domain, "cls": cls, "domain": domain}

    losses = image_losses

    @torch.no_grad()
    def predict(self, x: torch.Tensor) -> torch.Tensor:
        self.eval()
        return torch.sigmoid(full_precision(self.classifier(self.encoder(x)).squeeze(1)))


class CCDDVideo(CCDD):
    """Image and video branches, trained alternately; the encoder is shared."""

    def __init__(self, config: CCDDVideoConfig, network: str, domains: list, seed: int = 0):
        super().__init__(config, network, domains, seed)
        if config.score not in ("video", "image"):
            raise ValueError(f"unknown score {config.score!r}: use 'video' (the full model's) or 'image'")
        self.scores_videos = config.score == "video"
        self.clip_length = config.clip_length
        self.video = VideoHead(self.encoder.out_features, config.lstm_hidden)
        self.video_discriminator = ClassConditionalDiscriminator(config.lstm_hidden, len(domains),
                                                                 config.discriminator_width, config.dropout)

    def sequence(self, frames: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, LSTM states) of clips (B, L, C, H, W)."""
        b, length = frames.shape[:2]
        features = self.encoder(frames.flatten(0, 1)).view(b, length, -1)
        return self.video(features)

    def video_losses(self, clip: dict) -> dict:
        logits, state = self.sequence(clip["image"])
        y = clip["label"]
        cls = self.classification(logits, y)
        domain = self.adversarial(self.video_discriminator, state, y, clip["domain"])
        return {"total": cls + self.config.video_weight * domain, "video_cls": cls, "video_domain": domain}

    def update(self, batch: dict) -> dict:
        self.train()
        image = self.optimize(self.image_losses, self.optimizer, batch)
        video = self.optimize(self.video_losses, self.optimizer, batch["clip"])
        return {**{f"image_{k}" if k == "total" else k: v for k, v in image.items()},
                **{f"video_{k}" if k == "total" else k: v for k, v in video.items()},
                "total": image["total"] + video["total"]}

    @torch.no_grad()
    def predict_video(self, frames: torch.Tensor) -> torch.Tensor:
        self.eval()
        return torch.sigmoid(full_precision(self.sequence(frames)[0]))

    def frame_features(self, images: torch.Tensor) -> torch.Tensor:
        """The encoder's features of (N, C, H, W) frames, which the LSTM reads in order (exported models)."""
        self.eval()
        return self.encoder(images)

    def video_state_shape(self) -> tuple:
        """The LSTM's hidden and cell state shape for one sequence."""
        return (1, 1, self.video.out_features)

    def video_step(self, features: torch.Tensor, hidden: torch.Tensor, cell: torch.Tensor):
        """One LSTM step of one sequence: (live probability of the frames so far, hidden, cell); stepping
        through a video's frames gives :meth:`predict_video`'s probability."""
        self.eval()
        _, (hidden, cell) = self.video.lstm(full_precision(features), (hidden, cell))
        return torch.sigmoid(full_precision(self.video.classifier(hidden[-1]).squeeze(1))), hidden, cell
