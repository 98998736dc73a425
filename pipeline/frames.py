"""Frame decoding with OpenCV and the deterministic sampling policy.

Intra-only video (:data:`SEEKABLE`: MJPEG, CASIA-FASD's codec) long enough for it to pay (:data:`SEEK_COST`)
is read by seeking: each selected frame and the last one are decoded on their own, as a sequential pass
decodes them (every frame is a whole picture; the tests compare them bit for bit), and a stream that does not
end where its container says falls back to the pass below. Other video is one pass in the common case: the
frames are selected from the container's frame count and decoded while every frame is grabbed and counted;
when the count the decoder delivers differs from the container's (it lied, or the file ends early), the
selection is made again on the true count and decoded in a second pass. Errors name the file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from .config import FrameConfig


SEEKABLE = {"MJPG"}  # FourCCs of intra-only codecs: a seek lands on the frame itself (inter-frame codecs can
#                      land on the keyframe before it, and one tried H.264-in-AVI decoder returned the previous frame)
SEEK_COST = 17  # frames OpenCV's FFmpeg backend decodes per seek (it seeks up to 16 frames early and grabs on):
#                 seeking pays when the selected frames and the last one cost fewer than the whole video


class VideoError(RuntimeError):
    """A video that cannot be decoded (missing, empty, truncated or not a video)."""


@dataclass
class DecodedFrames:
    frames: list[np.ndarray]  # RGB uint8
    indices: list[int]
    decoded_count: int  # frames the decoder actually delivered (seeking: the last frame decoded, none after it)
    header_count: int  # frames the container claims
    rotation_tag: int = 0  # the container's rotation tag in degrees, already applied by OpenCV
    covered_seconds: float = 0.0  # the last decoded frame's timestamp plus one frame at the container's rate
    claimed_seconds: float = 0.0  # the container's frame count over its frame rate (0: no rate)
    seeked: bool = False  # read by seeking (intra-only video), not in one pass


def select_indices(n_frames: int, config: FrameConfig) -> list[int]:
    """The frame indices a policy picks from a video of ``n_frames`` frames (fewer when it is short)."""
    if n_frames <= 0:
        return []
    if config.policy == "all":
        picked = list(range(n_frames))
    elif config.policy == "every":
        picked = list(range(0, n_frames, config.step))
    else:  # even: the centre of each of ``count`` equal bins, distinct
        count = min(config.count, n_frames)
        picked = sorted({int((2 * k + 1) * n_frames // (2 * count)) for k in range(count)})
    return picked[:config.max_frames] if config.max_frames else picked


def truncation(decoded: DecodedFrames, config: FrameConfig) -> str | None:
    """Why a video counts as truncated (it ended early: fewer decoded frames than ``1 - tolerance`` of those
    its container claims, at least two fewer, and its last frame's timestamp short of the same share of the
    container's duration), or None. The timestamps decide where the frame count is an estimate: the count of
    a variable-frame-rate video (phones record them) is its duration times a nominal rate, so a complete one
    decodes fewer frames than claimed while its frames still reach the end of the stream."""
    claimed, got = decoded.header_count, decoded.decoded_count
    if claimed > 0 and claimed - got >= 2 and got < (1 - config.truncation_tolerance) * claimed:
        reaches_end = decoded.claimed_seconds > 0 and \
            decoded.covered_seconds >= (1 - config.truncation_tolerance) * decoded.claimed_seconds
        if not reaches_end:
            return f"truncated: decoded {got} of the {claimed} frames the container claims"
    return None


def read_frames(path: str | Path, config: FrameConfig) -> DecodedFrames:
    """Decode the frames a policy selects from ``path`` (RGB uint8)."""
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: source video is missing")
    if path.stat().st_size == 0:
        raise VideoError(f"{path}: zero-length file")
    capture = _open(path)
    header = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
    tag = int(capture.get(cv2.CAP_PROP_ORIENTATION_META)) % 360
    fps = capture.get(cv2.CAP_PROP_FPS)
    frame_seconds = 1 / fps if fps > 0 else 0.0
    wanted = select_indices(header, config)
    if fourcc(capture) in SEEKABLE and 0 < (len(wanted) + 1) * SEEK_COST < header:
        seeked = _seek(capture, wanted, header)
        if seeked is not None:
            frames, last_ms = seeked
            return DecodedFrames(frames, wanted, header, header, tag, last_ms / 1000 + frame_seconds,
                                 header * frame_seconds, seeked=True)
        capture = _open(path)  # the stream does not end where the container says: one pass finds out
    frames, got, count, last_ms = _decode_pass(path, capture, wanted)
    if count == 0:
        raise VideoError(f"{path}: no frame could be decoded (header claims {header})")
    if count != header:  # the container's count is wrong: select on the frames that are really there
        wanted = select_indices(count, config)
        frames, got, again, _ = _decode_pass(path, _open(path), wanted)
        if again != count or got != wanted:
            raise VideoError(f"{path}: decoding is not repeatable (first pass {count} frames, second pass {again})")
    return DecodedFrames(frames, got, count, header, tag, covered_seconds=last_ms / 1000 + frame_seconds,
                         claimed_seconds=header * frame_seconds)


def fourcc(capture: cv2.VideoCapture) -> str:
    """The video stream's FourCC code (``MJPG``, ``avc1``, ...), or "" when the container gives none."""
    code = int(capture.get(cv2.CAP_PROP_FOURCC))
    return "".join(chr((code >> 8 * k) & 0xFF) for k in range(4)).strip("\x00 ")


def _seek(capture: cv2.VideoCapture, wanted: list[int], header: int) -> tuple[list, float] | None:
    """(RGB frames at ``wanted``, the last frame's timestamp in ms) of intra-only video, each frame sought; None
    (and the capture released) when a frame cannot be sought or read, or the stream does not end after the
    ``header``-th frame."""
    frames = []
    try:
        for index in [*wanted, header - 1]:
            capture.set(cv2.CAP_PROP_POS_FRAMES, index)
            if int(capture.get(cv2.CAP_PROP_POS_FRAMES)) != index:
                return None
            ok, frame = capture.read()
            if not ok:
                return None
            frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        last_ms = capture.get(cv2.CAP_PROP_POS_MSEC)
        if capture.grab():  # more frames than the container claims
            return None
    finally:
        capture.release()
    return frames[:-1], last_ms


def _open(path: Path) -> cv2.VideoCapture:
    capture = cv2.VideoCapture(str(path))
    if not capture.isOpened():
        capture.release()
        raise VideoError(f"{path}: OpenCV cannot open it as a video (corrupt or unsupported)")
    capture.set(cv2.CAP_PROP_ORIENTATION_AUTO, 1)  # the container's rotation tag first (OpenCV's default too)
    return capture


def _decode_pass(path: Path, capture: cv2.VideoCapture, wanted: list[int]) -> tuple[list, list, int, float]:
    """(RGB frames at ``wanted``, their indices, frames grabbed in all, the latest frame timestamp in ms): one
    pass over the whole video."""
    targets, frames, got, index, last_ms = set(wanted), [], [], 0, 0.0
    try:
        while capture.grab():
            last_ms = max(last_ms, capture.get(cv2.CAP_PROP_POS_MSEC))
            if index in targets:
                ok, frame = capture.retrieve()
                if not ok:
                    raise VideoError(f"{path}: frame {index} could be grabbed but not decoded")
                frames.append(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
                got.append(index)
            index += 1
    finally:
        capture.release()
    return frames, got, index, last_ms
