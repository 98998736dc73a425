"""Shard-backed dataset: samples of a build, selected by rows of its ``samples.csv``.

HDF5 files are opened lazily, in the process that reads them (each DataLoader worker opens its own, with
fork or spawn), and samples come back as uint8 tensors; :func:`to_device` moves a batch and converts it to
float in [0, 1] there, so the loader never ships floats.
"""
from __future__ import annotations

import json
import os
import queue
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset, Sampler, get_worker_info

from pipeline.audit import shard_location
from pipeline.shards import DOMAINS, IMAGE_SETS, MAPS, ShardError, open_shard

INPUT_CHANNELS = IMAGE_SETS + ("depth_estimate",)
SOURCE_COLUMNS = ("attack_detail", "camera", "session")  # per-video columns taken from the build's sources.csv


def load_build(manifest_dir: str | Path) -> tuple[dict, pd.DataFrame]:
    """A build's manifest and its sample table, with each video's ``attack_detail`` (the attack instrument
    species), ``camera`` and ``session`` from the build's ``sources.csv``; errors name the file. The
    manifest's ``shard_dir`` is where the shards are now (:func:`pipeline.audit.shard_location`)."""
    folder = Path(manifest_dir)
    manifest_path, samples_path = folder / "manifest.json", folder / "samples.csv"
    for path in (manifest_path, samples_path):
        if not path.is_file():
            raise FileNotFoundError(f"{path}: not found (is {folder} a build manifest folder?)")
    manifest = json.loads(manifest_path.read_text())
    manifest["shard_dir"] = str(shard_location(manifest_path, manifest))
    samples = pd.read_csv(samples_path, dtype={"subject": str, "video_id": str})
    wanted = [c for c in SOURCE_COLUMNS if c not in samples]
    if wanted:  # attack instrument species, camera and session, from the build's source table
        sources_path = folder / "sources.csv"
        sources = (pd.read_csv(sources_path, usecols=["video_id", *wanted], dtype=str, keep_default_na=False)
                   .set_index("video_id") if sources_path.is_file() else pd.DataFrame(columns=wanted, dtype=str))
        for column in wanted:
            samples[column] = samples["video_id"].map(sources[column]).fillna("")
    return manifest, samples


class ShardDataset(Dataset):
    """Samples (rows of a build's sample table) read from its shards.

    Each item: ``image`` (uint8, the ``channels`` stacked: 6 x S x S for rgb + hsv), ``depth`` (uint8 1 x D x D),
    ``label`` (1 live, 0 spoof), ``domain`` and ``index`` (the row in ``samples``). Labels and domains come from
    the sample table (``domain`` may be replaced, e.g. by pseudo-domains). With a batch sampler, use
    :func:`make_loader`: whole batches are read at once (``__getitems__``), split over ``read_threads``
    threads; samples of uncompressed shards are read as raw bytes at their chunk's offset.

    Channel sets: ``rgb``, ``hsv``, ``lbp`` (3 x S x S each) and ``depth_estimate`` (builds with
    ``depth.store_estimate``: the unmasked 1 x D x D depth map of every face, served resized to S x S,
    bilinear, and repeated to 3 channels so that it stacks like the others).
    """

    def __init__(self, shard_dir: str | Path, samples: pd.DataFrame, channels=("rgb", "hsv"), read_threads: int = 2):
        self.shard_dir = Path(shard_dir)
        self.samples = samples.reset_index(drop=True)
        self.channels = tuple(channels)
        unknown = [c for c in self.channels if c not in INPUT_CHANNELS]
        if unknown:
            raise ValueError(f"unknown input channels {unknown}; known: {list(INPUT_CHANNELS)} ('depth' is the "
                             f"training target, zeros for attacks: as an input it would reveal the label)")
        self.read_threads = max(1, read_threads)
        self.shards = self.samples["shard"].to_numpy()
        self.rows = self.samples["row"].to_numpy(np.int64)
        self.labels = _label_codes(self.samples["label"])
        self.domains = _domain_codes(self.samples)
        self._reset()
        first = self._datasets(self.shards[0]) if len(self.samples) else None
        self.image_shape = (3 * len(self.channels), first["size"], first["size"]) if first else None
        self.depth_shape = first["depth"].shape[1:] if first else None

    def _reset(self) -> None:
        """Per-process state: open shards, the reader threads and the lock that guards opening."""
        self._open: dict[str, dict] = {}
        self._pid, self._pool, self._lock = os.getpid(), None, threading.Lock()

    def __len__(self) -> int:
        return len(self.samples)

    def _datasets(self, name: str) -> dict:
        """The open datasets of a shard, in this process (a new worker process never reuses a parent's handle).
        For uncompressed shards the byte offset of every sample's chunk is read once, so samples are then
        read with ``os.preadv`` straight into the batch (no HDF5 call, no GIL held)."""
        found = self._open.get(name)
        if found is None:
            with self._lock:
                found = self._open.get(name) or self._open_shard(name)
                self._open[name] = found
        return found

    def _open_shard(self, name: str) -> dict:
        path = self.shard_dir / name
        try:
            handle = open_shard(path)
        except ShardError as err:
            raise ValueError(f"{path}: cannot open shard ({err}); `python -m pipeline audit` checks a build") from None
        missing = [c for c in self.channels if c not in handle]
        if missing:
            raise ValueError(f"{path}: the shard has no {missing} dataset (a build with depth.store_estimate: true "
                             f"writes depth_estimate; the manifest's shard_datasets lists what a build holds)")
        datasets = {c: handle[c] for c in set(self.channels) | {"depth"}}
        offsets = {c: _chunk_offsets(d) for c, d in datasets.items()}
        found = {**datasets, "path": path, "size": handle["rgb"].shape[-1], "offsets": None, "fd": None}
        if all(o is not None for o in offsets.values()):
            found.update(offsets=offsets, fd=os.open(path, os.O_RDONLY))
        return found

    def _read(self, datasets: dict, name: str, row: int, out: np.ndarray) -> None:
        if datasets["offsets"] is not None:  # the chunk's bytes are the sample: read them straight into the batch
            view = out.reshape(-1)
            got = os.preadv(datasets["fd"], [view], int(datasets["offsets"][name][row]))
            if got != view.nbytes:
                raise ValueError(f"{datasets['path']}: sample {row} of '{name}': read {got} of {view.nbytes} bytes "
                                 f"(truncated shard? run `python -m pipeline audit`)")
        else:
            datasets[name].read_direct(out, source_sel=np.s_[row])

    def __getitems__(self, indices) -> dict:
        indices = np.array(indices, np.int64)  # a copy: tables may hand out read-only arrays
        image_t = _batch_tensor((len(indices),) + self.image_shape)
        depth_t = _batch_tensor((len(indices),) + self.depth_shape)
        image, depth = image_t.numpy(), depth_t.numpy()
        maps = {c: np.empty((len(indices),) + self.depth_shape, np.uint8) for c in self.channels if c in MAPS}

        def fill(part: np.ndarray) -> None:
            for k in part:
                i = indices[k]
                datasets = self._datasets(self.shards[i])
                row = int(self.rows[i])
                for c, channel in enumerate(self.channels):
                    self._read(datasets, channel, row, maps[channel][k] if channel in maps else image[k, 3 * c:3 * c + 3])
                self._read(datasets, "depth", row, depth[k])
            rows = slice(part[0], part[-1] + 1)  # parts are consecutive: each thread resizes its own maps
            for c, channel in enumerate(self.channels):
                if channel in maps:
                    image_t[rows, 3 * c:3 * c + 3] = _resized(maps[channel][rows], self.image_shape[-1])

        parts = np.array_split(np.arange(len(indices)), min(self.read_threads, len(indices)) or 1)
        if self._pid != os.getpid():  # a forked worker: the parent's threads did not come along
            self._reset()
        if len(parts) > 1:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self.read_threads, thread_name_prefix="shard-reader")
            list(self._pool.map(fill, parts))
        else:
            fill(parts[0])
        return {"image": image_t, "depth": depth_t,
                "label": torch.from_numpy(self.labels[indices]), "domain": torch.from_numpy(self.domains[indices]),
                "index": torch.from_numpy(indices)}

    def __getitem__(self, index: int) -> dict:
        batch = self.__getitems__([index])
        return {k: v[0] if k in ("image", "depth") else int(v[0]) for k, v in batch.items()}

    def __getstate__(self):
        state = dict(self.__dict__)
        for key in ("_open", "_pid", "_pool", "_lock"):
            state.pop(key)
        return state

    def __setstate__(self, state):
        self.__dict__.update(state)
        self._reset()


def resize_input(image: torch.Tensor, size: int) -> torch.Tensor:
    """Float images (N, C, S, S) at the network's input side ``size`` (bilinear, antialiased); as they are
    when ``size`` is 0 or already theirs. Training, evaluation and exported models all resize with this."""
    if not size or image.shape[-1] == size:
        return image
    return torch.nn.functional.interpolate(image, size=size, mode="bilinear", antialias=True, align_corners=False)


def stack_inputs(arrays: dict, channels, size: int) -> torch.Tensor:
    """The uint8 input (N x 3K x size x size) of K channel sets given as arrays (as a build's per-video result
    holds them: rgb, hsv, lbp N x 3 x S x S; depth_estimate N x 1 x D x D), stacked as :class:`ShardDataset`
    serves them: faces scored outside a build (``fas-train predict``) get the bytes a shard would hold."""
    parts = [_resized(np.ascontiguousarray(arrays[c]), size) if c in MAPS else torch.from_numpy(arrays[c])
             for c in channels]
    return torch.cat(parts, 1).contiguous()


def _resized(maps: np.ndarray, size: int) -> torch.Tensor:
    """B x 1 x D x D uint8 maps as B x 3 x size x size uint8 (bilinear, the one channel repeated)."""
    resized = torch.nn.functional.interpolate(torch.from_numpy(maps), size=(size, size), mode="bilinear",
                                              align_corners=False)
    return resized.expand(-1, 3, -1, -1)


def _chunk_offsets(dataset: h5py.Dataset) -> np.ndarray | None:
    """File offsets of a per-sample-chunked, uncompressed dataset's chunks (one per sample), or None when its
    samples cannot be read as plain bytes (compressed, other chunking, or chunks not all written)."""
    sample_bytes = int(np.prod(dataset.shape[1:])) * dataset.dtype.itemsize
    if dataset.compression is not None or dataset.chunks != (1,) + dataset.shape[1:] or dataset.shape[0] == 0:
        return None
    offsets = np.full(dataset.shape[0], -1, np.int64)

    def record(info) -> None:
        if info.size == sample_bytes and info.filter_mask == 0:
            offsets[info.chunk_offset[0]] = info.byte_offset

    dataset.id.chunk_iter(record)
    return offsets if (offsets >= 0).all() else None


def _batch_tensor(shape: tuple) -> torch.Tensor:
    """An uninitialised uint8 tensor; in a DataLoader worker it lives in shared memory from the start, so
    handing the batch to the main process copies nothing (as torch's default_collate does)."""
    if get_worker_info() is None:
        return torch.empty(shape, dtype=torch.uint8)
    storage = torch.UntypedStorage._new_shared(int(np.prod(shape)))
    return torch.empty(0, dtype=torch.uint8).set_(storage).view(shape)


def _label_codes(labels: pd.Series) -> np.ndarray:
    """1 live, 0 spoof, from the text labels of a sample table (or codes already)."""
    if pd.api.types.is_numeric_dtype(labels):
        return labels.to_numpy(np.int64)
    unknown = set(labels) - {"live", "spoof"}
    if unknown:
        raise ValueError(f"labels must be 'live' or 'spoof', found {sorted(unknown)}")
    return (labels == "live").to_numpy(np.int64)


def _domain_codes(samples: pd.DataFrame) -> np.ndarray:
    """Numeric domains when the table has them, else the dataset's code (0 OULU, 1 CASIA, 2 Replay, ...)."""
    if "domain" in samples and pd.api.types.is_numeric_dtype(samples["domain"]):
        return samples["domain"].to_numpy(np.int64)
    return samples["dataset"].map(DOMAINS).to_numpy(np.int64)


class ClipDataset(Dataset):
    """Clips of ``length`` consecutive sampled frames of one video, in frame order, from a :class:`ShardDataset`
    of frames. Items are ``(video, start)`` pairs (see :class:`ClipSampler`); a batch holds ``image``
    (B x L x C x S x S uint8), ``label``, ``domain`` and ``index`` (the video number) per clip and ``frames``
    (B x L, rows of the frame table). Videos with fewer than ``length`` frames are left out (counted in
    ``skipped``)."""

    def __init__(self, frames: ShardDataset, length: int):
        self.frames, self.length = frames, length
        table = frames.samples.assign(_position=np.arange(len(frames.samples)))
        videos, self.video_ids = [], []
        for video_id, rows in table.sort_values(["video_id", "frame_index"]).groupby("video_id", sort=True):
            positions = rows["_position"].to_numpy()
            if len(positions) >= length:
                videos.append(positions)
                self.video_ids.append(video_id)
        self.skipped = table["video_id"].nunique() - len(videos)
        if not videos:
            raise ValueError(f"no video has {length} sampled frames: build with frames.count >= {length} "
                             f"or use a shorter clip length")
        self.videos = videos
        first = np.array([v[0] for v in videos])
        self.labels, self.domains = frames.labels[first], frames.domains[first]

    def __len__(self) -> int:
        return len(self.videos)

    def positions(self, items) -> np.ndarray:
        """(B, L) rows of the frame table of the clips ``items`` ((video, start) pairs)."""
        return np.stack([self.videos[v][s:s + self.length] for v, s in items])

    def __getitems__(self, items) -> dict:
        positions = self.positions(items)
        batch = self.frames.__getitems__(positions.reshape(-1))
        b, length = positions.shape
        videos = np.array([v for v, _ in items], np.int64)
        return {"image": batch["image"].view(b, length, *batch["image"].shape[1:]),
                "label": torch.from_numpy(self.labels[videos]), "domain": torch.from_numpy(self.domains[videos]),
                "index": torch.from_numpy(videos), "frames": torch.from_numpy(positions)}


class ClipSampler(Sampler[list]):
    """Balanced batches of clips: ``per_class`` live and spoof videos of every domain (a
    :class:`~fas_train.sampler.BalancedBatchSampler` over videos; ``2 x per_class`` of any class per domain
    without ``class_balanced``), each with a start frame drawn from
    (seed, epoch, batch, slot), so batches are reproducible and resumable like the frame sampler's."""

    def __init__(self, clips: ClipDataset, per_class: int, seed: int = 0, rank: int = 0, world: int = 1,
                 class_balanced: bool = True):
        from .sampler import BalancedBatchSampler
        self.clips, self.seed = clips, seed
        self.videos = BalancedBatchSampler(clips.domains, clips.labels, per_class, seed=seed, rank=rank, world=world,
                                           class_balanced=class_balanced)

    def __len__(self) -> int:
        return len(self.videos)

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.videos.set_epoch(epoch, start_batch)

    def __iter__(self):
        epoch, start = self.videos.epoch, self.videos.start_batch
        for number, videos in enumerate(self.videos, start):
            rng = np.random.default_rng([self.seed, epoch, number, self.videos.rank])
            yield [(v, int(rng.integers(0, len(self.clips.videos[v]) - self.clips.length + 1))) for v in videos]


def keep_batch(batch: dict) -> dict:
    """The collate function for :meth:`ShardDataset.__getitems__`: the batch is already assembled."""
    return batch


def make_loader(dataset: ShardDataset, batch_sampler, workers: int = 2, **kwargs) -> DataLoader:
    """A DataLoader that reads whole batches at once from the shards."""
    return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=workers, collate_fn=keep_batch,
                      persistent_workers=workers > 0, prefetch_factor=4 if workers else None, **kwargs)


def prefetch(batches, depth: int = 2):
    """Iterate ``batches`` in a background thread, ``depth`` batches ahead, so reading overlaps the training
    step (shard reads release the GIL). Errors are raised in the consumer; closing the generator stops the
    thread."""
    slots: queue.Queue = queue.Queue(depth)
    stop = threading.Event()
    done = object()

    def offer(item) -> bool:
        """Put ``item`` in the queue unless the consumer has gone; False if it has."""
        while not stop.is_set():
            try:
                slots.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in batches:
                if not offer(item):
                    return
            offer(done)
        except BaseException as err:  # handed to the consumer
            offer(err)

    thread = threading.Thread(target=produce, name="batch-prefetch", daemon=True)
    thread.start()
    try:
        while True:
            item = slots.get()
            if item is done:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join()


def to_device(batch: dict, device: torch.device | str, channels_last: bool = False) -> dict:
    """Move a batch to ``device`` and convert images and depth to float in [0, 1] there."""
    image = batch["image"].to(device, non_blocking=True).float().div_(255)
    if channels_last and image.ndim == 4:
        image = image.contiguous(memory_format=torch.channels_last)
    moved = {**batch, "image": image, "label": batch["label"].to(device, non_blocking=True),
             "domain": batch["domain"].to(device, non_blocking=True)}
    if "depth" in batch:
        moved["depth"] = batch["depth"].to(device, non_blocking=True).float().div_(255)
    return moved
