"""Detection batched across videos (a GPU's feed), checked on the CPU: one detector call per frame size,
fixed batches (a resumed task writes the same bytes), and one bad video not stopping the others."""
from __future__ import annotations

import os

from pipeline.config import BuildConfig, ComputeConfig, FaceConfig, FrameConfig
from pipeline.extract import VideoJob, detect_together, extract_videos, images_path, result_path
from pipeline.faces import FaceDetector
from pipeline.frames import read_frames
from pipeline.hashing import sha256_file
from pipeline.tasks import videos_per_task

def casia_jobs(corpus, n):
    """n CASIA videos, a third of them from the high-resolution camera (another frame size)."""
    paths = sorted((corpus / "casia").rglob("*.avi"), key=lambda p: (p.name.startswith("HR"), str(p)))
    paths = paths[:n - n // 3] + [p for p in paths if p.name.startswith("HR")][:n // 3]
    return [VideoJob(f"casia/{p.relative_to(corpus / 'casia').as_posix()}", str(p), "live", sha256_file(p), "casia")
            for p in paths]

def test_frames_of_several_videos_go_to_one_call_per_frame_size(corpus):
    clips = [read_frames(job.path, FrameConfig(policy="even", count=2)).frames for job in casia_jobs(corpus, 6)]
    assert len({clip[0].shape for clip in clips}) == 2  # CASIA's cameras: two frame sizes among these
    detector = FaceDetector(FaceConfig())
    calls = []
    detect = detector.detect
    detector.detect = lambda frames: calls.append(len(frames)) or detect(frames)
    found = detect_together(detector, clips)
    assert sorted(calls) == sorted(sum(len(c) for c in clips if c[0].shape == shape)
                                   for shape in {c[0].shape for c in clips})
    assert [len(f) for f in found] == [len(c) for c in clips] and all(d is not None for f in found for d in f)
    # each clip's detections are those of its own frames: its boxes lie inside its frames
    for clip, detections in zip(clips, found):
        h, w = clip[0].shape[:2]
        assert all(0 <= d.box[0] < d.box[2] <= w + 5 and 0 <= d.box[1] < d.box[3] <= h + 5 for d in detections)

def test_a_resumed_task_writes_the_same_bytes_and_a_bad_video_stops_only_itself(corpus, tmp_path):
    config = BuildConfig(name="b", datasets={"casia": str(corpus / "casia")}, output_dir=str(tmp_path),
                         frames=FrameConfig(policy="even", count=2), face=FaceConfig(size=32))
    jobs = casia_jobs(corpus, 4)
    missing = VideoJob("casia/gone.avi", str(tmp_path / "gone.avi"), "live", "0" * 64, "casia")
    outcomes = extract_videos(jobs[:2] + [missing] + jobs[2:], config, "generic", str(config.build_dir), 5)
    assert isinstance(outcomes[2], FileNotFoundError) and "gone.avi" in str(outcomes[2])
    assert all(o["samples"] == 2 for i, o in enumerate(outcomes) if i != 2)
    def written():  # each video's record and images
        return {job: [open(path, "rb").read() for path in (result_path(config.build_dir, job),
                                                            images_path(result_path(config.build_dir, job)))]
                for job in jobs}
    first = written()
    os.remove(result_path(config.build_dir, jobs[1]))  # a kill before this one's record was written
    before = os.stat(result_path(config.build_dir, jobs[0])).st_mtime_ns
    extract_videos(jobs, config, "generic", str(config.build_dir), 5)
    assert written() == first
    assert os.stat(result_path(config.build_dir, jobs[0])).st_mtime_ns == before  # finished ones not rewritten

def test_videos_per_task_makes_16_frames_on_the_cpu_and_64_on_cuda():
    base = dict(name="b", datasets={"casia": "/c"}, output_dir="/tmp/x")
    auto = ComputeConfig(device="auto")  # the device is the workers' answer, passed in
    assert videos_per_task(BuildConfig(**base, compute=auto, frames=FrameConfig(policy="even", count=4)), "cpu") == 4
    assert videos_per_task(BuildConfig(**base, compute=auto, frames=FrameConfig(policy="even", count=5)), "cpu") == 4
    assert videos_per_task(BuildConfig(**base, compute=auto, frames=FrameConfig(policy="every", step=5)), "cpu") == 1
    assert videos_per_task(BuildConfig(**base, compute=auto, frames=FrameConfig(policy="even", count=4)), "cuda") == 16
    assert videos_per_task(BuildConfig(**base, compute=auto, frames=FrameConfig(policy="even", count=100)), "cuda") == 1
    assert videos_per_task(BuildConfig(**base, compute=auto, frames=FrameConfig(policy="all")), "cuda") == 1
    assert videos_per_task(BuildConfig(**base, compute=auto, frames=FrameConfig(policy="all", max_frames=8)), "cuda") == 8
    assert videos_per_task(BuildConfig(**base, compute=ComputeConfig(device="cpu", videos_per_task=5)), "cuda") == 5
