"""Pipeline benchmark on the demo corpus: frames/s per stage (and each stage's share of one worker's time),
end to end, the end-to-end rate as a ratio to plain OpenCV decoding and to the MTCNN-only bound on the same
frames (same run, fed as a build feeds it: every thread in one process; also printed, MTCNN alone in one
single-thread process per worker, as the build's workers run it), decoding of longer, larger clips, and end-to-end rate,
peak RSS of the whole build (orchestrator and dask workers) and peak and final disk use over the shards' bytes
for 1x, 2x and 4x the demo corpus (2, 4 and 8 subjects per
split: 152, 304 and 608 videos; the larger corpora are written once under build/bench/). The figures are also
written as JSON, to compare across commits.

    .venv/bin/python bench/pipeline.py [--corpus build/demo/raw] [--frames 4] [--workers 2] \
        [--json build/bench/pipeline.json]
    .venv/bin/python bench/pipeline.py --full-size    # large, long clips: per-stage ms, projected build time
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import multiprocessing
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import psutil
import torch
import yaml
from skimage.feature import local_binary_pattern

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from disk_watch import DiskPeak  # noqa: E402 - beside this script
from pipeline.atomic import write_json  # noqa: E402
from pipeline.channels import channels, color_lbp  # noqa: E402
from pipeline.config import BuildConfig, FaceConfig, FrameConfig  # noqa: E402
from pipeline.demo import DemoConfig, write_demo_corpus  # noqa: E402
from pipeline.depth import generic_depth  # noqa: E402
from pipeline.extract import detect_together  # noqa: E402
from pipeline.faces import FaceDetector, crop_face, crop_matrix, transform_points  # noqa: E402
from pipeline.frames import read_frames, select_indices  # noqa: E402
from pipeline.provenance import code_version  # noqa: E402
from pipeline.shards import write_shard  # noqa: E402
from pipeline.tasks import videos_per_task  # noqa: E402

DATASETS = ("casia", "replay", "msu", "oulu")


def videos_of(corpus: Path) -> list[Path]:
    exts = {".avi", ".mov", ".mp4"}
    return sorted(p for d in DATASETS for p in (corpus / d).rglob("*")
                  if p.suffix.lower() in exts and "enroll" not in p.parts and not p.name.startswith("."))


def plain_decode(path: Path, config: FrameConfig) -> int:
    """The baseline: one OpenCV pass that decodes the frames the policy selects (count known up front)."""
    capture = cv2.VideoCapture(str(path))
    wanted = set(select_indices(int(capture.get(cv2.CAP_PROP_FRAME_COUNT)), config))
    index = got = 0
    while capture.grab():
        if index in wanted:
            ok, frame = capture.retrieve()
            cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)
            got += 1
        index += 1
    return got


def stage_rates(videos, frame_config: FrameConfig) -> dict:
    """Single-process rates of each stage, over the same videos."""
    rates = {}
    start = time.perf_counter()
    n = sum(plain_decode(v, frame_config) for v in videos)
    rates["plain OpenCV decode"] = n / (time.perf_counter() - start)
    start = time.perf_counter()
    decoded = [read_frames(v, frame_config) for v in videos]
    rates["decode (one pass, verified)"] = n / (time.perf_counter() - start)
    detector = FaceDetector(FaceConfig(), "cpu")
    per_call = videos_per_task(BuildConfig(name="bench", datasets={"casia": "."}, output_dir=".", frames=frame_config), "cpu")
    start = time.perf_counter()
    detections = [dets for i in range(0, len(decoded), per_call)  # the build's calls: a task's videos together
                  for dets in detect_together(detector, [d.frames for d in decoded[i:i + per_call]])]
    rates["MTCNN detect (CPU)"] = n / (time.perf_counter() - start)
    missed = sum(d is None for dets in detections for d in dets)
    if torch.cuda.is_available():  # the GPU fed as a build feeds it: frames of many videos per call
        gpu = FaceDetector(FaceConfig(), "cuda")
        detect_together(gpu, [d.frames for d in decoded[:16]])  # warm-up
        torch.cuda.synchronize()
        start = time.perf_counter()
        for i in range(0, len(decoded), 16):
            detect_together(gpu, [d.frames for d in decoded[i:i + 16]])
        torch.cuda.synchronize()
        rates["MTCNN detect (CUDA, 16 videos per call)"] = n / (time.perf_counter() - start)
    config = FaceConfig()
    start = time.perf_counter()
    crops = []
    for d, dets in zip(decoded, detections):
        for frame, det in zip(d.frames, dets):
            if det is None:
                continue
            matrix = crop_matrix(det, config)
            crops.append((crop_face(frame, matrix, config.size, config.template), transform_points(det.landmarks, matrix)))
    rates["align + crop"] = len(crops) / (time.perf_counter() - start)
    start = time.perf_counter()
    for _, landmarks in crops:
        generic_depth(landmarks, config.size, 32)
    rates["depth (generic)"] = len(crops) / (time.perf_counter() - start)
    start = time.perf_counter()
    chans = [channels(c, config.hsv) for c, _ in crops]
    rates["channels (HSV + LBP)"] = len(crops) / (time.perf_counter() - start)
    start = time.perf_counter()
    for crop, _ in crops:
        np.stack([local_binary_pattern(crop[..., k], P=8, R=1, method="default") for k in range(3)]).astype(np.uint8)
    scikit_seconds = time.perf_counter() - start
    start = time.perf_counter()
    for crop, _ in crops:
        color_lbp(crop)
    lbp_speedup = scikit_seconds / (time.perf_counter() - start)
    samples = {"rgb": np.stack([c["rgb"] for c in chans]), "hsv": np.stack([c["hsv"] for c in chans]),
               "lbp": np.stack([c["lbp"] for c in chans]), "depth": np.zeros((len(chans), 1, 32, 32), np.uint8),
               "label": np.zeros(len(chans), np.uint8), "domain": np.zeros(len(chans), np.uint8),
               "attack": np.zeros(len(chans), np.uint8), "video_id": ["v"] * len(chans),
               "frame_index": np.zeros(len(chans), np.int32), "box": np.zeros((len(chans), 4), np.float32),
               "landmarks": np.zeros((len(chans), 5, 2), np.float32), "score": np.zeros(len(chans), np.float32)}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        write_shard(Path(tmp) / "s.h5", samples, {"config_hash": "bench"})
        rates["shard write (HDF5)"] = len(chans) / (time.perf_counter() - start)
    return {"frames": n, "missed": missed, "lbp_x_scikit_image": lbp_speedup, **rates}


def detect_in_processes(videos: list[Path], frame_config: FrameConfig, processes: int) -> float:
    """MTCNN alone as a build's workers run it: ``processes`` single-thread processes, each detecting its
    consecutive share of the videos (decoded before the clock starts) in the build's calls; frames/s of all of
    them together (the frames over the slowest one's time)."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    shares = [list(share) for share in np.array_split(np.array(videos, dtype=object), processes)]
    workers = [context.Process(target=_detect_share, args=(share, frame_config, barrier, results)) for share in shares]
    for worker in workers:
        worker.start()
    done = [results.get() for _ in workers]
    for worker in workers:
        worker.join()
    return sum(frames for frames, _ in done) / max(seconds for _, seconds in done)


def _detect_share(videos: list[Path], frame_config: FrameConfig, barrier, results) -> None:
    torch.set_num_threads(1)
    decoded = [read_frames(v, frame_config).frames for v in videos]
    results.put((sum(len(frames) for frames in decoded), detection_seconds(decoded, frame_config, barrier.wait)))


def mtcnn_rate(videos: list[Path], frame_config: FrameConfig) -> float:
    """MTCNN alone on the videos' frames (decoded first, not timed), in the build's calls, in this process."""
    decoded = [read_frames(v, frame_config).frames for v in videos]
    return sum(len(frames) for frames in decoded) / detection_seconds(decoded, frame_config)


def detection_seconds(decoded: list, frame_config: FrameConfig, before=None) -> float:
    """Seconds MTCNN alone takes over the clips ``decoded`` in the build's calls on the CPU (a task's videos
    together); ``before`` runs once the detector is loaded, right before the clock starts."""
    detector = FaceDetector(FaceConfig(), "cpu")
    per_call = videos_per_task(BuildConfig(name="bench", datasets={"casia": "."}, output_dir=".", frames=frame_config), "cpu")
    if before is not None:
        before()
    start = time.perf_counter()
    for i in range(0, len(decoded), per_call):
        detect_together(detector, decoded[i:i + per_call])
    return time.perf_counter() - start


def two_pass_decode(path: Path, config: FrameConfig) -> int:
    """The decoder before one-pass decoding, for comparison: count every frame, then decode the selection."""
    capture, count = cv2.VideoCapture(str(path)), 0
    while capture.grab():
        count += 1
    capture.release()
    return plain_decode_at(path, select_indices(count, config))


def plain_decode_at(path: Path, wanted: list) -> int:
    capture, index, got, targets = cv2.VideoCapture(str(path)), 0, 0, set(wanted)
    while capture.grab():
        if index in targets:
            cv2.cvtColor(capture.retrieve()[1], cv2.COLOR_BGR2RGB)
            got += 1
        index += 1
    capture.release()
    return got


def long_videos(folder: Path) -> list[Path]:
    """Longer, larger clips than the demo's: 300 frames at 1280 x 720 and 1920 x 1080 (MJPEG and MPEG-4)."""
    rng = np.random.default_rng(0)
    made = []
    for (w, h), fourcc, ext in (((1280, 720), "MJPG", ".avi"), ((1920, 1080), "MJPG", ".avi"),
                                ((1920, 1080), "mp4v", ".mp4")):
        path = folder / f"long_{w}x{h}{ext}"
        base = cv2.resize(rng.integers(0, 255, (h // 8, w // 8, 3), dtype=np.uint8), (w, h))
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 30, (w, h))
        for k in range(300):
            writer.write(np.roll(base, 4 * k, axis=1))
        writer.release()
        made.append(path)
    return made


def decode_rates(videos: list[Path], config: FrameConfig,
                 rounds: int = 3) -> list[tuple[str, str, float, float, float]]:
    """(video, how ours decodes it: seeking or one pass, frames/s of plain decoding, our ratio, the two-pass
    ratio) of each video, measured in one run (the median of ``rounds`` interleaved rounds: these machines are
    noisy)."""
    out = []
    for path in videos:
        how = "seeking" if read_frames(path, config).seeked else "one pass"
        timings = {"plain": [], "ours": [], "two-pass": []}
        for _ in range(rounds):
            for name, fn in (("plain", plain_decode), ("ours", lambda p, c: len(read_frames(p, c).frames)),
                             ("two-pass", two_pass_decode)):
                start = time.perf_counter()
                frames = fn(path, config)
                timings[name].append(frames / (time.perf_counter() - start))
        rate = {name: float(np.median(values)) for name, values in timings.items()}
        out.append((path.name, how, rate["plain"], rate["ours"] / rate["plain"], rate["two-pass"] / rate["plain"]))
    return out


# the five datasets at full size: videos, and the generated clip that stands for them (docs/datasets.md:
# OULU-NPU 1920x1080 .avi; CASIA-FASD MJPEG .avi at 640x480 (and 1280x720 for its HR videos); Replay-Attack
# 320x240 .mov at 25 fps, about 15 s; MSU-MFSD 640x480 and 720x480; ROSE-Youtu 640x480 to 1280x720)
FULL_SIZE_CLIPS = {"1920x1080 150 frames": (1920, 1080, 150, "mp4v"),
                   "640x480 MJPEG 300 frames": (640, 480, 300, "MJPG"),
                   "720x480 300 frames": (720, 480, 300, "mp4v"), "320x240 375 frames": (320, 240, 375, "mp4v")}
FULL_SIZE_DATASETS = {"oulu": (4950, "1920x1080 150 frames"), "casia": (600, "640x480 MJPEG 300 frames"),
                      "replay": (1200, "320x240 375 frames"), "msu": (280, "720x480 300 frames"),
                      "rose": (3350, "720x480 300 frames")}


def face_clip(path: Path, width: int, height: int, frames: int, fourcc: str) -> Path:
    """A clip of a real face (scikit-image's astronaut) drifting over a grey frame, its face about half the
    frame's height, written by OpenCV."""
    from skimage import data
    face = cv2.cvtColor(data.astronaut()[:300, 100:400], cv2.COLOR_RGB2BGR)
    side = height // 2
    face = cv2.resize(face, (side, side))
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (width, height))
    for k in range(frames):
        frame = np.full((height, width, 3), 90, np.uint8)
        x, y = (width - side) // 2 + int(8 * np.sin(k / 9)), (height - side) // 2 + int(6 * np.cos(k / 7))
        frame[y:y + side, x:x + side] = face
        writer.write(frame)
    writer.release()
    return path


def full_size_profile(folder: Path, frames: int, rounds: int = 2) -> dict:
    """Per clip of FULL_SIZE_CLIPS, the ms per video of each stage on one core at ``frames`` frames per video
    (the median of ``rounds``), and the five datasets' projected build time on 2 and 16 cores (the stages' sum
    times the videos over the cores: one single-thread worker per core, no other cost)."""
    from pipeline.depth import landmark_depth
    from pipeline.face_mesh import FaceMeshLandmarks, available
    torch.set_num_threads(1)
    config, frame_config = FaceConfig(), FrameConfig(policy="even", count=frames)
    detector, mesh = FaceDetector(config, "cpu"), FaceMeshLandmarks() if available() else None
    profile = {}
    for name, (w, h, n, fourcc) in FULL_SIZE_CLIPS.items():
        path = face_clip(folder / f"{w}x{h}_{n}_{fourcc}.avi", w, h, n, fourcc)
        times = {stage: [] for stage in ("decode", "MTCNN", "align + crop", "depth", "channels")}
        for _ in range(rounds):
            start = time.perf_counter()
            decoded = read_frames(path, frame_config)
            times["decode"].append(time.perf_counter() - start)
            start = time.perf_counter()
            found = detect_together(detector, [decoded.frames])[0]
            times["MTCNN"].append(time.perf_counter() - start)
            start = time.perf_counter()
            crops = []
            for frame, det in zip(decoded.frames, found):
                if det is not None:
                    matrix = crop_matrix(det, config)
                    crops.append((crop_face(frame, matrix, config.size, config.template),
                                  transform_points(det.landmarks, matrix)))
            times["align + crop"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for crop, landmarks in crops:
                points = mesh.predict(crop) if mesh else None
                if points is not None:
                    landmark_depth(points, config.size, 32)
                else:
                    generic_depth(landmarks, config.size, 32)
            times["depth"].append(time.perf_counter() - start)
            start = time.perf_counter()
            for crop, _ in crops:
                channels(crop, config.hsv)
            times["channels"].append(time.perf_counter() - start)
        profile[name] = {"ms_per_video": {s: 1000 * float(np.median(t)) for s, t in times.items()},
                         "faces": len(crops), "decoded_by": "seeking" if decoded.seeked else "one pass"}
    per_dataset = {d: n * sum(profile[clip]["ms_per_video"].values()) / 1000
                   for d, (n, clip) in FULL_SIZE_DATASETS.items()}
    return {"frames_per_video": frames, "depth": "Face Mesh" if mesh else "generic", "clips": profile,
            "dataset_cpu_seconds": per_dataset,
            "projected_hours": {cores: sum(per_dataset.values()) / cores / 3600 for cores in (2, 16)}}


def corpus_times(base: Path, times: int) -> Path:
    """The demo corpus with ``times`` as many subjects per split as ``base`` (written once, beside the bench's
    figures; ``base`` itself for 1)."""
    if times == 1:
        return base
    config = DemoConfig(**json.loads((base / "demo_corpus.json").read_text())["config"])
    folder = ROOT / "build/bench" / f"corpus-x{times}"
    write_demo_corpus(folder, dataclasses.replace(config, subjects_per_split=config.subjects_per_split * times),
                      quiet=True)
    return folder


def build_run(corpus: Path, frames: int, workers: int, work: Path,
              per_shard: int) -> tuple[int, int, float, float, dict]:
    """Build the whole corpus through Luigi + dask in a fresh process; return (videos, samples, seconds, peak
    RSS of the process tree in MiB, and a dict: the build's own seconds per stage (index, extract and shards
    summed over datasets) and its disk use: peak and final bytes of the build folder, and its shards' bytes)."""
    config = work / "bench.yaml"
    config.write_text(yaml.safe_dump({
        "name": "bench", "datasets": {d: str((corpus / d).resolve()) for d in DATASETS},
        "output_dir": str(work / "out"), "manifest_dir": str(work / "manifests"),
        "frames": {"policy": "even", "count": frames}, "depth": {"backend": "generic"},
        "shards": {"samples_per_shard": per_shard}, "compute": {"workers": workers, "device": "auto"}}))
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "build", "--config", str(config), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               cwd=ROOT)
    peak = [0]

    def watch():
        root = psutil.Process(process.pid)
        while process.poll() is None:
            try:
                tree = [root] + root.children(recursive=True)
                peak[0] = max(peak[0], sum(p.memory_info().rss for p in tree if p.is_running()))
            except psutil.Error:
                pass
            time.sleep(0.05)

    thread = threading.Thread(target=watch)
    with DiskPeak(work / "out", lambda: process.poll() is None) as disk:
        thread.start()
        process.wait()
        thread.join()
    seconds = time.perf_counter() - start
    if process.returncode:
        raise SystemExit(f"benchmark build failed (exit {process.returncode})")
    manifest = json.loads((work / "manifests/bench/manifest.json").read_text())
    videos = sum(source["videos"] for source in manifest["sources"].values())
    stages = {}
    for stage, spent in json.loads((work / "manifests/bench/timings.json").read_text()).items():
        if stage != "shards-planning":  # a part of "shards"
            stages[stage.split("-")[0]] = stages.get(stage.split("-")[0], 0.0) + spent
    disk_use = {"peak_bytes": disk.peak, "final_bytes": disk.final, "shards": len(manifest["shards"]),
                "shard_bytes": sum(shard["bytes"] for shard in manifest["shards"])}
    return videos, manifest["samples"], seconds, peak[0] / 2**20, {"stage_seconds": stages, "disk": disk_use}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=Path("build/demo/raw"))
    parser.add_argument("--frames", type=int, default=4, help="frames sampled per video")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--samples-per-shard", dest="per_shard", type=int, default=64,
                        help="shards.samples_per_shard of the end-to-end builds (a full build has about 150 shards of "
                             "512; the disk peak over the shards' bytes is about 1 + workers / shards)")
    parser.add_argument("--json", type=Path, default=Path("build/bench/pipeline.json"), help="where the figures go")
    parser.add_argument("--full-size", dest="full_size", action="store_true",
                        help="only the full-size profile: large, long face clips at 8 frames per video, per-stage "
                             "ms per video and the five datasets' projected build time on 2 and 16 cores")
    args = parser.parse_args()
    if args.full_size:
        with tempfile.TemporaryDirectory() as tmp:
            profile = full_size_profile(Path(tmp), 8)
        print(f"full-size profile, 8 frames per video, one core, depth by {profile['depth']} (ms per video):")
        stages = list(next(iter(profile["clips"].values()))["ms_per_video"])
        print(f"  {'clip':<26} {'decoded by':>10} {'faces':>5} " + " ".join(f"{s:>12}" for s in stages)
              + f" {'total':>8}")
        for name, clip in profile["clips"].items():
            ms = clip["ms_per_video"]
            print(f"  {name:<26} {clip['decoded_by']:>10} {clip['faces']:>5} "
                  + " ".join(f"{ms[s]:>12.0f}" for s in stages) + f" {sum(ms.values()):>8.0f}")
        print("  the five datasets: " + ", ".join(f"{d} {s / 3600:.2f} core-hours"
                                                  for d, s in profile["dataset_cpu_seconds"].items()))
        print(f"  projected build: {profile['projected_hours'][2]:.2f} h on 2 cores, "
              f"{60 * profile['projected_hours'][16]:.0f} min on 16 (one worker per core, stages only: generated "
              f"clips decode faster than camera footage, so a lower bound)")
        args.json.parent.mkdir(parents=True, exist_ok=True)
        write_json(args.json.with_name(args.json.stem + "_full_size.json"), {"code": code_version(), **profile})
        return
    if not (args.corpus / "demo_corpus.json").exists():
        write_demo_corpus(args.corpus, DemoConfig(), quiet=True)
    videos = videos_of(args.corpus)
    frame_config = FrameConfig(policy="even", count=args.frames)
    print(f"demo corpus: {len(videos)} videos, {args.frames} frames each; {psutil.cpu_count()} CPU cores")
    rates = stage_rates(videos, frame_config)
    figures = {"code": code_version(), "cpu_cores": psutil.cpu_count(), "videos": len(videos), "frames": args.frames,
               "frames_decoded": rates.pop("frames"), "frames_without_face": rates.pop("missed"),
               "lbp_x_scikit_image": rates.pop("lbp_x_scikit_image"),
               "stage_frames_per_s": rates}
    seconds = {stage: 1 / rate for stage, rate in rates.items()  # a CPU worker's time
               if stage != "plain OpenCV decode" and "CUDA" not in stage}
    print(f"\nstages, one process ({figures['frames_decoded']} frames, {figures['frames_without_face']} without a face):")
    for stage, rate in rates.items():
        share = f"{100 * seconds[stage] / sum(seconds.values()):5.1f}% of a worker's time" if stage in seconds else ""
        print(f"  {stage:<26} {rate:9.1f} frames/s  {share}")
    figures["stage_share"] = {stage: t / sum(seconds.values()) for stage, t in seconds.items()}
    print(f"  colour LBP: {figures['lbp_x_scikit_image']:.2f}x scikit-image's speed on the same crops (bit-identical)")
    with tempfile.TemporaryDirectory() as tmp:
        print("\ndecoding longer, larger videos (same frames as plain OpenCV decoding, one run):")
        print(f"  {'video':<24} {'ours':>9} {'plain frames/s':>15} {'ours x plain':>13} {'count+select x plain':>21}")
        figures["long_videos"] = []
        for name, how, plain, ours, two in decode_rates(long_videos(Path(tmp)), frame_config):
            print(f"  {name:<24} {how:>9} {plain:>15.1f} {ours:>13.3f} {two:>21.3f}")
            figures["long_videos"].append({"video": name, "ours": how, "plain_frames_per_s": plain,
                                           "ours_x_plain": ours, "count_then_select_x_plain": two})
    per_process = detect_in_processes(videos, frame_config, args.workers)
    figures["mtcnn_worker_processes_frames_per_s"] = per_process
    print(f"\nMTCNN alone in {args.workers} single-thread processes, as the build's workers run it: {per_process:.1f} "
          f"frames/s = {per_process / rates['MTCNN detect (CPU)']:.2f}x the one-process bound (every thread in one "
          f"process) that the ratios below use")
    device = "cuda" if torch.cuda.is_available() else "cpu"
    print(f"\nend to end: python -m pipeline build (Luigi + dask, {args.workers} workers on {device}, cold start "
          f"included)")
    # the bound: MTCNN alone on the same frames, this process using every core (or the GPU). On the CPU it is
    # measured again right after each build, which is compared with that measurement: these machines are
    # shared, and their speed drifts by 10-20% within a run
    bound = rates.get("MTCNN detect (CUDA, 16 videos per call)", rates["MTCNN detect (CPU)"])
    bounds = [bound]
    print(f"  {'corpus videos':>12} {'samples':>8} {'seconds':>8} {'frames/s':>9} {'x plain decode':>15} "
          f"{'x MTCNN bound':>14} {'peak RSS MiB':>13}")
    figures["end_to_end"] = []
    for times in (1, 2, 4):
        corpus = corpus_times(args.corpus, times)
        with tempfile.TemporaryDirectory() as tmp:
            n_videos, samples, seconds, rss, run = build_run(corpus, args.frames, args.workers, Path(tmp),
                                                             args.per_shard)
            stages, disk = run["stage_seconds"], run["disk"]
            rate = samples / seconds
            if device == "cpu":
                bound = mtcnn_rate(videos, frame_config)
                bounds.append(bound)
            print(f"  {f'{times}x':>3} {n_videos:>8} {samples:>8} {seconds:>8.1f} {rate:>9.1f} "
                  f"{rate / rates['plain OpenCV decode']:>15.4f} {rate / bound:>14.3f} {rss:>13.0f}")
            figures["end_to_end"].append({"corpus": f"{times}x", "videos": n_videos, "samples": samples,
                                          "seconds": seconds, "frames_per_s": rate, "x_mtcnn_bound": rate / bound,
                                          "peak_rss_mib": rss, "stage_seconds": stages, "disk": disk,
                                          "extract_x_mtcnn_bound": samples / stages["extract"] / bound,
                                          "x_mtcnn_worker_processes": rate / per_process, "mtcnn_bound": bound})
    print("  where the seconds of each build went (the build's own stage times; the rest: interpreter and "
          "cluster start, Luigi, manifest, close):")
    for run in figures["end_to_end"]:
        stages = run["stage_seconds"]
        print(f"  {run['corpus']:>3}  index {stages['index']:5.1f}  extract {stages['extract']:5.1f} "
              f"({run['samples'] / stages['extract']:5.1f} frames/s = {run['extract_x_mtcnn_bound']:.3f} x the bound)"
              f"  shards {stages['shards']:4.1f}  rest {run['seconds'] - sum(stages.values()):4.1f}")
    print(f"  disk use of the build folder over its shards' bytes ({args.per_shard} samples per shard):")
    for run in figures["end_to_end"]:
        disk = run["disk"]
        print(f"  {run['corpus']:>3}  {disk['shards']:3d} shards of {disk['shard_bytes'] / 2**20:7.1f} MiB: peak "
              f"{disk['peak_bytes'] / disk['shard_bytes']:.3f}x, after the build {disk['final_bytes'] / disk['shard_bytes']:.3f}x")
    bound = float(np.median(bounds))
    figures["mtcnn_bound_frames_per_s"] = {"median": bound, "measured": bounds}
    small, large = figures["end_to_end"][0], figures["end_to_end"][-1]
    marginal = (large["samples"] - small["samples"]) / (large["seconds"] - small["seconds"])
    fixed = small["seconds"] - small["samples"] / marginal
    figures["marginal_frames_per_s"], figures["fixed_seconds"] = marginal, fixed
    print(f"  steady state (largest minus smallest build): {marginal:.1f} frames/s = {marginal / bound:.3f} x the "
          f"median MTCNN bound; fixed cost per build about {fixed:.1f} s (cluster start, model loading, indexing, close)")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    write_json(args.json, figures)
    print(f"\nfigures: {args.json} (MTCNN-only bound: median {bound:.1f} frames/s of "
          f"{', '.join(f'{b:.1f}' for b in bounds)} on {psutil.cpu_count()} cores)")


if __name__ == "__main__":
    main()
