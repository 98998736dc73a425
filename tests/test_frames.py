"""Frame decoding on real files made by ffmpeg (imageio-ffmpeg's binary): a complete variable-frame-rate
video is not truncation, a cut one is."""
from __future__ import annotations

import subprocess

import imageio_ffmpeg
import pytest

from pipeline.config import FrameConfig
from pipeline.frames import read_frames, truncation

# 30 frames: ten 0.25 s apart, then twenty 0.02 s apart, as a phone slows its rate in the dark and recovers
UNEVEN = "setpts='if(lt(N,10),N*0.25,2.5+(N-10)*0.02)/TB'"


def encode(path, timing=None):
    """30 noisy frames (so that a cut keeps some), a keyframe every 5, at ``timing`` (None: 30 fps)."""
    filters = "noise=alls=30:allf=t" + (f",{timing}" if timing else "")
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    "testsrc=size=160x120:rate=30", "-frames:v", "30", "-vf", filters,
                    *(["-fps_mode", "vfr"] if timing else []), "-c:v", "libx264", "-g", "5", "-pix_fmt", "yuv420p",
                    str(path)], check=True, timeout=120)
    return path


@pytest.fixture(scope="module")
def vfr(tmp_path_factory):
    return encode(tmp_path_factory.mktemp("vfr") / "vfr.mkv", UNEVEN)


def test_a_complete_variable_frame_rate_video_is_not_truncated(vfr):
    decoded = read_frames(vfr, FrameConfig(count=8))
    assert decoded.decoded_count == 30 and decoded.header_count > 60  # the count is duration x nominal rate
    assert truncation(decoded, FrameConfig()) is None
    assert truncation(decoded, FrameConfig(truncated="reject")) is None
    assert len(decoded.frames) == 8


def test_a_cut_video_is_still_truncated(vfr, tmp_path):
    cut = tmp_path / "cut.mkv"
    cut.write_bytes(vfr.read_bytes()[:int(vfr.stat().st_size * 0.45)])
    decoded = read_frames(cut, FrameConfig(count=4))
    assert 0 < decoded.decoded_count < 25
    assert truncation(decoded, FrameConfig()).startswith(f"truncated: decoded {decoded.decoded_count} of the")
    steady = encode(tmp_path / "cfr.mkv")  # a constant rate file cut the same way
    cut.write_bytes(steady.read_bytes()[:int(steady.stat().st_size * 0.45)])
    decoded = read_frames(cut, FrameConfig(count=4))
    assert decoded.decoded_count < 25 and truncation(decoded, FrameConfig()) is not None


def encode_codec(path, codec: str, frames: int = 45, size: str = "176x144"):
    """``frames`` noisy frames (no two alike) with ``codec`` (ffmpeg's encoder name) in ``path``'s container."""
    gop = ["-g", "12"] if codec != "mjpeg" else []
    subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                    f"testsrc=size={size}:rate=25", "-frames:v", str(frames), "-vf", "noise=alls=40:allf=t",
                    "-c:v", codec, *gop, "-pix_fmt", "yuvj420p" if codec == "mjpeg" else "yuv420p", str(path)],
                    check=True, timeout=120)
    return path


def one_pass(path, config):
    import pipeline.frames as frames
    seekable, frames.SEEKABLE = frames.SEEKABLE, set()
    try:
        return read_frames(path, config)
    finally:
        frames.SEEKABLE = seekable


@pytest.mark.parametrize("codec, name, seeks", [("mjpeg", "a.avi", True), ("mjpeg", "a.mkv", True),
                                                ("mpeg4", "a.avi", False), ("libx264", "a.mkv", False),
                                                ("libx264", "a.avi", False)])
def test_intra_only_video_is_sought_to_the_frames_a_sequential_pass_decodes(tmp_path, codec, name, seeks):
    """Seeking where it is exact and pays: 9 seeks of SEEK_COST frames for 8 of 200 frames, not for every
    7th frame (30 seeks), never for inter-frame codecs."""
    import numpy as np
    from pipeline.frames import SEEK_COST
    path = encode_codec(tmp_path / name, codec, frames=200)
    for config, pays in ((FrameConfig(count=8), True), (FrameConfig(policy="every", step=7), False),
                         (FrameConfig(count=1), True)):
        decoded, sequential = read_frames(path, config), one_pass(path, config)
        assert decoded.seeked is (seeks and pays) and not sequential.seeked
        assert pays == ((len(sequential.indices) + 1) * SEEK_COST < 200)
        assert decoded.indices == sequential.indices and len(decoded.frames) == len(sequential.indices)
        assert all(np.array_equal(a, b) for a, b in zip(decoded.frames, sequential.frames))  # bit for bit
        assert (decoded.decoded_count, decoded.header_count) == (sequential.decoded_count, sequential.header_count)
        assert decoded.covered_seconds == pytest.approx(sequential.covered_seconds)
    assert len(set(f.tobytes() for f in one_pass(path, FrameConfig(policy="all")).frames)) == 200  # all distinct


def test_cut_intra_only_video_falls_back_to_the_pass_that_counts_its_frames(tmp_path):
    path = encode_codec(tmp_path / "a.avi", "mjpeg", frames=200)
    cut = tmp_path / "cut.avi"
    cut.write_bytes(path.read_bytes()[:int(path.stat().st_size * 0.6)])
    decoded = read_frames(cut, FrameConfig(count=4))
    assert not decoded.seeked and 0 < decoded.decoded_count
    assert decoded.decoded_count < 200
    assert truncation(decoded, FrameConfig()).startswith(f"truncated: decoded {decoded.decoded_count} of the 200")
