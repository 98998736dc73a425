"""The demo corpus: small copies of CASIA-FASD, Replay-Attack, MSU-MFSD and OULU-NPU in their official
layouts, so that the real indexers and pipeline read it unchanged.

Each dataset is one domain with its own capture style (resolution, colour temperature, noise, blur,
compression); subjects are distinct LFW faces; every video is written atomically, so an interrupted run
resumes, and a finished corpus is left as it is. ``demo_truth.csv`` (outside the dataset folders) lists
what each video shows, for tests.
"""
from __future__ import annotations

import json
import multiprocessing
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
from tqdm import tqdm

from ..atomic import atomic_path, write_csv, write_json, write_text
from ..hashing import sha256_file
from .render import AttackLook, CameraStyle, Identity
from .scenarios import Shot, render_video
from .shift import domain_look, domain_style

MARKER = "demo_corpus.json"
CONFIG_FILE = ".demo_config.json"
TRUTH = "demo_truth.csv"
FOURCC = {".avi": "MJPG", ".mov": "mp4v", ".mp4": "mp4v"}


@dataclass(frozen=True)
class DemoConfig:
    """What the corpus looks like; the same config gives the same bytes."""

    seed: int = 0
    frames: int = 20
    subjects_per_split: int = 2
    version: int = 1  # bump when rendering changes, so an old corpus is not mistaken for a new one
    # OULU-NPU users recorded with all six phones in all three sessions, so that every part of every fold of
    # OULU-NPU's protocols 1-4 has videos (each user otherwise has one phone and one session)
    oulu_protocols: bool = False
    # the controlled domain-shift profile (pipeline.demo.shift): None keeps each dataset's classic capture
    # style; a number gives every domain its own capture and attack look, that many times its offsets
    shift: float | None = None


@dataclass(frozen=True)
class DemoVideo:
    """One video of the corpus and the truth about it."""

    dataset: str
    relpath: str
    split: str
    subject: int
    shot: Shot
    height: int
    width: int
    fps: float
    style: CameraStyle
    look: AttackLook = AttackLook()

    @property
    def label(self) -> str:
        return "live" if self.shot.kind == "live" else "spoof"

    @property
    def attack(self) -> str:
        return {"live": "none", "print": "print", "replay": "replay"}[self.shot.kind]


# Domain capture styles: the dataset is the domain.
CASIA_LOW = CameraStyle(wb_gains=(1.08, 1.0, 0.86), blur_sigma=1.1, noise_sigma=0.03, jpeg_quality=55, vignette=0.2)
CASIA_NORMAL = CameraStyle(wb_gains=(1.06, 1.0, 0.9), blur_sigma=0.6, noise_sigma=0.02, jpeg_quality=70)
CASIA_HIGH = CameraStyle(wb_gains=(1.04, 1.0, 0.94), noise_sigma=0.01, jpeg_quality=88)
REPLAY = CameraStyle(wb_gains=(0.9, 1.0, 1.12), exposure=0.9, gamma=1.12, blur_sigma=0.8, noise_sigma=0.025,
                     jpeg_quality=62, vignette=0.35)
MSU_LAPTOP = CameraStyle(wb_gains=(1.0, 1.02, 1.0), blur_sigma=0.5, noise_sigma=0.015, jpeg_quality=80)
MSU_ANDROID = CameraStyle(wb_gains=(1.05, 1.0, 0.95), exposure=1.05, noise_sigma=0.012, jpeg_quality=85)
OULU_PHONES = {p: CameraStyle(wb_gains=(1.0 + 0.03 * (p % 3 - 1), 1.0, 1.0 - 0.03 * (p % 2)), noise_sigma=0.008,
                              jpeg_quality=92) for p in range(1, 7)}


def plan(config: DemoConfig) -> list[DemoVideo]:
    """Every video of the corpus, in a fixed order."""
    n = config.subjects_per_split
    videos = _casia(n) + _replay(n) + _msu(n) + _oulu(n, config.oulu_protocols)
    if config.shift is None:
        return videos
    return [replace(v, style=domain_style(v.dataset, config.shift), look=domain_look(v.dataset, config.shift))
            for v in videos]


def _casia(n):
    videos = []
    cameras = {"": ((240, 320), CASIA_LOW), "even": ((240, 320), CASIA_NORMAL), "HR": ((360, 640), CASIA_HIGH)}
    shots = {1: Shot("live"), 3: Shot("print", "warped_photo"), 5: Shot("print", "cut_photo"),
             7: Shot("replay", "video")}
    for split_dir, split in (("train_release", "train"), ("test_release", "test")):
        for subject in range(1, n + 1):
            for number, shot in shots.items():
                names = {str(number): "", str(number + 1): "even", f"HR_{(number + 1) // 2}": "HR"}
                for stem, camera in names.items():
                    (h, w), style = cameras[camera]
                    videos.append(DemoVideo("casia", f"{split_dir}/{subject}/{stem}.avi", split, subject,
                                            shot, h, w, 25.0, style))
    return videos


def _replay(n):
    videos = []
    attacks = [("fixed", "print", "highdef_photo", "controlled", Shot("print", "photo", handheld=False)),
               ("hand", "highdef", "highdef_photo", "adverse", Shot("replay", "photo", screen_fraction=0.95)),
               ("fixed", "highdef", "highdef_video", "controlled", Shot("replay", "video", handheld=False)),
               ("hand", "mobile", "mobile_photo", "controlled", Shot("replay", "photo", screen_fraction=0.7)),
               ("fixed", "mobile", "mobile_video", "adverse",
                Shot("replay", "video", handheld=False, screen_fraction=0.7))]
    for s, split in enumerate(("train", "devel", "test")):
        for client in range(s * n + 1, s * n + n + 1):
            for light in ("controlled", "adverse"):
                shot = Shot("live", light="adverse" if light == "adverse" else "normal")
                videos.append(DemoVideo("replay", f"{split}/real/client{client:03d}_session01_webcam_authenticate_"
                                        f"{light}_1.mov", split, client, shot, 240, 320, 25.0, REPLAY))
            for support, medium, content, light, shot in attacks:
                shot = Shot(shot.kind, shot.detail, shot.handheld, shot.screen_fraction,
                            "adverse" if light == "adverse" else "normal")
                videos.append(DemoVideo("replay", f"{split}/attack/{support}/attack_{medium}_client{client:03d}_"
                                        f"session01_{content}_{light}.mov", split, client, shot, 240, 320, 25.0,
                                        REPLAY))
    # one enrolment video, which the protocols (and so the indexer) leave out
    videos.append(DemoVideo("replay", "enroll/client001_session01_webcam_enroll_controlled_1.mov", "enroll", 1,
                            Shot("live"), 240, 320, 25.0, REPLAY))
    return videos


def _msu(n):
    videos = []
    subjects = {"train": [2 + 3 * i for i in range(n)], "test": [1 + 3 * i for i in range(n)]}
    cameras = {"laptop": ((240, 320), "mov", MSU_LAPTOP), "android": ((240, 360), "mp4", MSU_ANDROID)}
    for split, clients in subjects.items():
        for client in clients:
            for camera, ((h, w), ext, style) in cameras.items():
                videos.append(DemoVideo("msu", f"scene01/real/real_client{client:03d}_{camera}_SD_scene01.{ext}",
                                        split, client, Shot("live"), h, w, 30.0, style))
                for detail, shot in (("ipad_video", Shot("replay", "video")),
                                     ("iphone_video", Shot("replay", "video", screen_fraction=0.7)),
                                     ("printed_photo", Shot("print", "photo"))):
                    videos.append(DemoVideo("msu", f"scene01/attack/attack_client{client:03d}_{camera}_SD_{detail}"
                                            f"_scene01.{ext}", split, client, shot, h, w, 30.0, style))
    return videos


def _oulu(n, protocols: bool = False):
    videos = []
    shots = {1: Shot("live"), 2: Shot("print", "photo"), 3: Shot("print", "warped_photo"),
             4: Shot("replay", "video"), 5: Shot("replay", "video", screen_fraction=0.8)}
    for folder, split, first in (("Train_files", "train", 1), ("Dev_files", "devel", 21), ("Test_files", "test", 36)):
        for user in range(first, first + n):
            recordings = ([(p, s) for p in range(1, 7) for s in (1, 2, 3)] if protocols
                          else [(user % 6 + 1, user % 3 + 1)])
            for phone, session in recordings:
                for number, shot in shots.items():
                    videos.append(DemoVideo("oulu", f"{folder}/{phone}_{session}_{user:02d}_{number}.avi", split,
                                            user, shot, 270, 480, 30.0, OULU_PHONES[phone]))
    return videos


def write_demo_corpus(out: Path, config: DemoConfig = DemoConfig(), *, workers: int | None = None,
                      quiet: bool = False) -> str:
    """Write (or finish, or leave as it is) the demo corpus under ``out``; return a one-paragraph report.

    Videos are rendered in ``workers`` processes (default: one per core); each video's randomness is
    seeded by (seed, its index), so the bytes do not depend on the number of workers.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _claim(out, config)
    videos = plan(config)
    identities = _identities(videos, config.seed)
    todo = [(out, config, i, v, identities[(v.dataset, v.subject)]) for i, v in enumerate(videos)
            if not (out / v.dataset / v.relpath).exists()]
    workers = workers or os.cpu_count() or 1
    with tqdm(total=len(videos), initial=len(videos) - len(todo), unit="video", desc="demo corpus",
              disable=quiet, dynamic_ncols=True) as bar:
        if workers == 1:
            for job in todo:
                _make_video(job)
                bar.update(1)
        else:
            context = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(workers, mp_context=context, initializer=cv2.setNumThreads,
                                     initargs=(1,)) as pool:
                for _ in pool.map(_make_video, todo):
                    bar.update(1)
    _write_protocol_files(out, videos)
    marker = _finish(out, config, videos)
    return (f"demo corpus at {out}: {len(videos)} videos in {len(marker['datasets'])} datasets "
            f"({len(todo)} written now, {len(videos) - len(todo)} already there), "
            f"{marker['total_bytes'] / 2**20:.1f} MiB; truth table {out / TRUTH}")


def _make_video(job) -> None:
    out, config, index, video, identity = job
    rng = np.random.default_rng([config.seed, index])
    frames = render_video(identity, video.shot, video.height, video.width, config.frames, video.fps,
                          video.style, rng, video.look)
    _write_video(out / video.dataset / video.relpath, frames, video.fps)


def _claim(out: Path, config: DemoConfig) -> None:
    """Record the config before writing; refuse a folder that holds a corpus of another config."""
    path = out / CONFIG_FILE
    wanted = asdict(config)
    if path.exists():  # a field added since that corpus was written counts at its default
        found = {**asdict(DemoConfig()), **json.loads(path.read_text())}
        if found != wanted:
            raise ValueError(f"{out} holds a demo corpus made with {found}, not {wanted}: "
                             f"choose another --out or delete that folder")
    else:
        write_json(path, wanted)


def _identities(videos, seed) -> dict:
    """A distinct LFW face per (dataset, subject), in plan order."""
    keys = list(dict.fromkeys((v.dataset, v.subject) for v in videos))
    if len(keys) > 100:
        raise ValueError(f"the demo corpus needs {len(keys)} subjects; the LFW subset has 100 faces")
    order = np.random.default_rng([seed, 10**6]).permutation(100)
    return {key: Identity.draw(int(order[i]), np.random.default_rng([seed, 10**6 + 1 + i]))
            for i, key in enumerate(keys)}


def _write_video(target: Path, frames: list[np.ndarray], fps: float) -> None:
    ext = target.suffix.lower()
    height, width = frames[0].shape[:2]
    with atomic_path(target, suffix=f".tmp{ext}") as tmp:
        writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter_fourcc(*FOURCC[ext]), fps, (width, height))
        if not writer.isOpened():
            raise OSError(f"{target}: OpenCV cannot open a {FOURCC[ext]} writer for {ext}")
        for frame in frames:
            writer.write(frame)
        writer.release()


def _write_protocol_files(out: Path, videos) -> None:
    """MSU-MFSD's subject lists, written as the dataset writes them (ids without leading zeros)."""
    for split in ("train", "test"):
        ids = sorted({v.subject for v in videos if v.dataset == "msu" and v.split == split})
        write_text(out / "msu" / f"{split}_sub_list.txt", "".join(f"{i}\n" for i in ids))


def _finish(out: Path, config: DemoConfig, videos) -> dict:
    rows = [{"dataset": v.dataset, "relpath": v.relpath, "split": v.split, "label": v.label, "attack": v.attack,
             "detail": v.shot.detail, "subject": v.subject, "height": v.height, "width": v.width,
             "frames": config.frames} for v in videos]
    write_csv(out / TRUTH, pd.DataFrame(rows))
    files = {f"{v.dataset}/{v.relpath}": sha256_file(out / v.dataset / v.relpath) for v in videos}
    marker = {"config": asdict(config), "datasets": sorted({v.dataset for v in videos}), "videos": len(videos),
              "total_bytes": sum(os.path.getsize(out / f) for f in files), "sha256": files}
    write_json(out / MARKER, marker)
    return marker
