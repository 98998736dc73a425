"""One demo video: a live recording, a printed-photo attack or a screen-replay attack, as uint8 BGR frames."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .render import AttackLook, CameraStyle, Identity, LiveSubject, background, bend, capture, place, \
    print_photo, screen_display

KINDS = ("live", "print", "replay")
PRINT_DETAILS = ("photo", "warped_photo", "cut_photo")
REPLAY_DETAILS = ("photo", "video")


@dataclass(frozen=True)
class Shot:
    """What one video shows and how it was filmed."""

    kind: str  # live | print | replay
    detail: str = ""  # print: photo | warped_photo | cut_photo; replay: photo | video
    handheld: bool = True  # attack medium held by hand, or on a fixed support
    screen_fraction: float = 0.9  # replay: screen size relative to the frame (a phone screen is smaller)
    light: str = "normal"  # normal | adverse (dim, side-lit)

    def __post_init__(self):
        allowed = {"live": ("",), "print": PRINT_DETAILS, "replay": REPLAY_DETAILS}[self.kind]
        if self.detail not in allowed:
            raise ValueError(f"{self.kind} shot cannot have detail {self.detail!r}")


def render_video(identity: Identity, shot: Shot, height: int, width: int, n_frames: int, fps: float,
                 style: CameraStyle, rng: np.random.Generator, look: AttackLook = AttackLook()) -> list[np.ndarray]:
    """Render ``n_frames`` frames of ``shot`` (its attack media looking as ``look`` says) as a camera of
    ``style`` captures them."""
    scene = background(height, width, rng)
    times = np.arange(n_frames) / fps
    if shot.kind == "live":
        subject = LiveSubject(identity, height, width, rng)
        frames = [subject.render(scene, t) for t in times]
    elif shot.kind == "print":
        frames = _print_frames(identity, shot, scene, times, rng, look)
    else:
        frames = _replay_frames(identity, shot, scene, times, rng, look)
    light = _lighting(height, width, shot.light, rng, style.adverse_light)
    return [capture(frame * light, style, rng) for frame in frames]


def _lighting(height, width, light, rng, strength: float = 1.0) -> np.ndarray:
    if light == "normal":
        return np.ones((height, width, 1), np.float32)
    side = np.linspace(0.35, 1.0, width, dtype=np.float32)
    if rng.random() < 0.5:
        side = side[::-1]
    lit = (0.8 * np.tile(side, (height, 1)))[..., None]
    return lit if strength == 1.0 else (1 - strength * (1 - lit)).astype(np.float32)


def _jitter(times, handheld, rng):
    """Rigid motion of a hand-held (or fixed) medium: small offsets (fraction of the frame) and roll."""
    amp = np.array([0.025, 0.02, 2.5]) if handheld else np.array([0.002, 0.002, 0.2])
    freqs, phases = rng.uniform(0.3, 1.2, 3), rng.uniform(0, 2 * np.pi, 3)
    return [amp * np.sin(2 * np.pi * freqs * t + phases) for t in times]


def _print_frames(identity, shot, scene, times, rng, look):
    height, width = scene.shape[:2]
    ph, pw = int(0.95 * height), int(0.95 * height * 0.78)
    portrait_subject = LiveSubject(identity, ph, pw, rng, face_fraction=0.6)
    portrait = portrait_subject.render(background(ph, pw, rng), 0.0)
    photo = print_photo(portrait, rng, look)
    if shot.detail == "cut_photo":  # eye holes: the attacker's real eyes show through, unprinted
        center, scale, _ = portrait_subject.pose(0.0)
        fs = portrait_subject.face_size * scale
        holes = np.zeros((ph, pw), np.float32)
        for dx in (-0.17, 0.17):
            cv2.ellipse(holes, (int(center[0] + dx * fs), int(center[1] - 0.08 * fs)),
                        (int(0.09 * fs), int(0.045 * fs)), 0, 0, 360, 1.0, -1)
        holes = holes[..., None]
        photo = photo * (1 - holes) + portrait * holes
    frames = []
    bend_base = rng.uniform(0.6, 0.9) if shot.detail == "warped_photo" else 0.0
    for k, (dx, dy, angle) in enumerate(_jitter(times, shot.handheld, rng)):
        amount = bend_base * (1 + 0.25 * np.sin(2 * np.pi * 0.5 * times[k])) if bend_base else 0.0
        sheet = bend(photo, amount)
        center = (width * (0.5 + dx), height * (0.5 + dy))
        frames.append(place(scene, sheet, center, 1.0, angle, border=(0.92, 0.92, 0.9), border_px=4))
    return frames


def _replay_frames(identity, shot, scene, times, rng, look):
    height, width = scene.shape[:2]
    sh, sw = int(shot.screen_fraction * height * 0.9), int(shot.screen_fraction * width * 0.9)
    recorded = LiveSubject(identity, sh, sw, rng, face_fraction=0.6)
    recorded_scene = background(sh, sw, rng)
    still = recorded.render(recorded_scene, 0.0) if shot.detail == "photo" else None
    bezel = max(3, int(0.04 * sw))
    screen_seed = int(rng.integers(2**31))  # one screen per video: the same grid, gamma and glare each frame
    frames = []
    for k, (dx, dy, angle) in enumerate(_jitter(times, shot.handheld, rng)):
        content = still if still is not None else recorded.render(recorded_scene, times[k])
        shown = screen_display(content, (sh, sw), np.random.default_rng(screen_seed), look)
        center = (width * (0.5 + dx), height * (0.5 + dy))
        frames.append(place(scene, shown, center, 1.0, angle, border=(0.03, 0.03, 0.035), border_px=bezel))
    return frames
