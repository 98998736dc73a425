"""Scores of a dataset's samples in order: the method's live probability per frame, and its video branch's per
video."""
from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from torch.utils.data import BatchSampler, SequentialSampler

from .data import ClipDataset, ShardDataset, make_loader
from .runtime import autocast, prepare
from .settings import RunConfig


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
