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
