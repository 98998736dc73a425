"""Frame rendering for the demo corpus: live faces with natural motion, print and replay recaptures,
and per-domain camera styles. All randomness comes from the ``numpy.random.Generator`` passed in.

The faces are real photographs: the 100 LFW faces that scikit-image ships (25 x 25 grayscale), colourised
and upscaled. Images are float32 RGB in [0, 1] until :func:`capture` turns them into uint8 frames.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

SKIN_TONES = np.array([[1.00, 0.80, 0.66], [0.93, 0.72, 0.58], [0.80, 0.60, 0.45],
                       [0.62, 0.45, 0.33], [0.98, 0.84, 0.74], [0.72, 0.52, 0.40]], np.float32)


@lru_cache(maxsize=1)
def lfw_faces() -> np.ndarray:
    """The 100 face images of scikit-image's LFW subset, float32 (100, 25, 25) in [0, 1]."""
    from skimage import data
    return data.lfw_subset()[:100].astype(np.float32)


@dataclass(frozen=True)
class Identity:
    """A subject: an LFW face, a skin tone, hair and clothing colours."""

    face_index: int
    tone: tuple
    hair: tuple
    shirt: tuple

    @classmethod
    def draw(cls, face_index: int, rng: np.random.Generator) -> "Identity":
        tone = SKIN_TONES[rng.integers(len(SKIN_TONES))] * rng.uniform(0.92, 1.05)
        hair = rng.uniform(0.05, 0.35) * np.array([1.0, 0.85, 0.7])
        shirt = rng.uniform(0.15, 0.85, 3)
        return cls(face_index, tuple(map(float, tone)), tuple(map(float, hair)), tuple(map(float, shirt)))

    def face_rgba(self, size: int) -> np.ndarray:
        """The colourised face, ``size`` x ``size`` x 4 (RGB + feathered elliptical alpha)."""
        gray = cv2.resize(lfw_faces()[self.face_index], (size, size), interpolation=cv2.INTER_CUBIC)
        rgb = np.clip((0.25 + 0.85 * gray)[..., None] * np.array(self.tone, np.float32), 0, 1)
        yy, xx = np.mgrid[0:size, 0:size].astype(np.float32) / size - 0.5
        alpha = np.clip((1.0 - np.sqrt((xx / 0.50) ** 2 + (yy / 0.56) ** 2)) / 0.10, 0, 1)
        return np.dstack([rgb, alpha]).astype(np.float32)


def background(height: int, width: int, rng: np.random.Generator) -> np.ndarray:
    """An indoor-looking background: a lit gradient wall with a few soft shapes."""
    base = rng.uniform(0.35, 0.85, 3).astype(np.float32)
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    direction = rng.uniform(-1, 1, 2)
    light = 0.75 + 0.25 * ((xx / width - 0.5) * direction[0] + (yy / height - 0.5) * direction[1])
    img = base * light[..., None]
    for _ in range(rng.integers(2, 5)):
        x0, y0 = int(rng.uniform(0, width)), int(rng.uniform(0, height))
        w, h = int(rng.uniform(0.1, 0.4) * width), int(rng.uniform(0.1, 0.5) * height)
        cv2.rectangle(img, (x0, y0), (x0 + w, y0 + h), tuple(map(float, rng.uniform(0.2, 0.9, 3))), -1)
    return cv2.GaussianBlur(img, (0, 0), max(1.0, width / 160))


class LiveSubject:
    """A person in front of a camera: head and shoulders with smooth, natural head motion."""

    def __init__(self, identity: Identity, height: int, width: int, rng: np.random.Generator,
                 face_fraction: float = 0.55):
        self.identity, self.height, self.width = identity, height, width
        self.face_size = int(min(height, width) * face_fraction * rng.uniform(0.9, 1.1))
        self.face = identity.face_rgba(self.face_size)
        self.center = np.array([width * rng.uniform(0.42, 0.58), height * rng.uniform(0.40, 0.50)])
        # motion: sums of slow sinusoids (sway, nod, breathing scale, head roll)
        self.freqs = rng.uniform(0.15, 0.6, 4)
        self.phases = rng.uniform(0, 2 * np.pi, 4)
        self.amp = np.array([0.05 * width, 0.03 * height, 0.03, 4.0]) * rng.uniform(0.6, 1.2, 4)

    def pose(self, t: float) -> tuple[np.ndarray, float, float]:
        """Face centre (x, y), scale and roll angle (degrees) at time ``t`` seconds."""
        s = np.sin(2 * np.pi * self.freqs * t + self.phases)
        center = self.center + np.array([self.amp[0] * s[0], self.amp[1] * s[1]])
        return center, 1.0 + self.amp[2] * s[2], float(self.amp[3] * s[3])

    def render(self, scene: np.ndarray, t: float) -> np.ndarray:
        """The subject composited over ``scene`` (H x W x 3) at time ``t``."""
        center, scale, angle = self.pose(t)
        img = scene.copy()
        fs = self.face_size * scale
        shoulders = (int(center[0]), int(center[1] + 1.25 * fs))
        cv2.ellipse(img, shoulders, (int(1.05 * fs), int(0.75 * fs)), 0, 180, 360, self.identity.shirt, -1)
        cv2.rectangle(img, (int(center[0] - 0.18 * fs), int(center[1] + 0.3 * fs)),
                      (int(center[0] + 0.18 * fs), int(center[1] + 0.75 * fs)),
                      tuple(0.8 * np.array(self.identity.tone)), -1)
        cv2.ellipse(img, (int(center[0]), int(center[1] - 0.12 * fs)), (int(0.58 * fs), int(0.60 * fs)),
                    angle, 0, 360, self.identity.hair, -1)
        matrix = cv2.getRotationMatrix2D((self.face_size / 2, self.face_size / 2), -angle, scale)
        matrix[:, 2] += center - self.face_size / 2
        warped = cv2.warpAffine(self.face, matrix, (self.width, self.height), flags=cv2.INTER_LINEAR)
        alpha = warped[..., 3:]
        return img * (1 - alpha) + warped[..., :3] * alpha


@dataclass(frozen=True)
class AttackLook:
    """How a domain's attack media look: prints (the share of colour saturation the inks keep, paper and ink
    levels, halftone contrast) and screens (the range of their gamma, colour cast, sub-pixel grid contrast,
    the range of glare strength). The defaults are the classic demo corpus's."""

    ink_keep: float = 0.55
    paper_floor: float = 0.10
    paper_range: float = 0.78
    halftone: float = 0.12
    screen_gamma: tuple = (0.75, 0.9)
    screen_cast: tuple = (0.92, 0.97, 1.08)
    moire: float = 0.3
    glare: tuple = (0.08, 0.18)


def print_photo(portrait: np.ndarray, rng: np.random.Generator, look: AttackLook = AttackLook()) -> np.ndarray:
    """A printed photograph of ``portrait``: gamut loss, halftone screen and paper texture."""
    h, w = portrait.shape[:2]
    gray = portrait.mean(axis=2, keepdims=True)
    img = look.ink_keep * portrait + (1 - look.ink_keep) * gray  # ink gamut loses saturation
    img = look.paper_floor + look.paper_range * img  # paper white is not white, ink black is not black
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    theta = np.deg2rad(rng.uniform(15, 75))
    period = rng.uniform(2.5, 3.5)
    screen = np.cos(2 * np.pi * (xx * np.cos(theta) + yy * np.sin(theta)) / period) * \
        np.cos(2 * np.pi * (-xx * np.sin(theta) + yy * np.cos(theta)) / period)
    img = img * ((1 - look.halftone) + look.halftone * screen[..., None])
    texture = cv2.GaussianBlur(rng.normal(0, 1, (h, w)).astype(np.float32), (0, 0), 2.0)
    img = img * (1 + 0.05 * texture[..., None]) + rng.normal(0, 0.01, img.shape).astype(np.float32)
    return np.clip(img, 0, 1).astype(np.float32)


def bend(photo: np.ndarray, amount: float) -> np.ndarray:
    """Bend a sheet around a vertical axis (cylinder): foreshortened, darker towards the edges."""
    h, w = photo.shape[:2]
    if abs(amount) < 1e-3:
        return photo
    u = np.linspace(-1, 1, w, dtype=np.float32)
    src_u = np.arcsin(np.clip(u * np.sin(amount), -1, 1)) / amount
    map_x = np.tile((src_u + 1) / 2 * (w - 1), (h, 1)).astype(np.float32)
    map_y = np.tile(np.arange(h, dtype=np.float32)[:, None], (1, w))
    bent = cv2.remap(photo, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    shade = np.cos(src_u * amount) ** 0.5
    return (bent * shade[None, :, None]).astype(np.float32)


def screen_display(content: np.ndarray, out_hw: tuple[int, int], rng: np.random.Generator,
                   look: AttackLook = AttackLook()) -> np.ndarray:
    """``content`` as shown on an LCD and filmed: gamma and colour cast, sub-pixel grid moiré, reflection."""
    h, w = out_hw
    img = np.clip(content, 0, 1) ** rng.uniform(*look.screen_gamma)  # screen gamma: lifted mid-tones
    img = img * np.array(look.screen_cast, np.float32) + 0.03  # cool white point, raised black level
    # render at 3x with an RGB stripe sub-pixel grid, slightly rotated, then resample to the camera: moiré
    big = cv2.resize(img, (3 * w, 3 * h), interpolation=cv2.INTER_NEAREST)
    stripes = np.zeros((3 * h, 3 * w, 3), np.float32)
    for c in range(3):
        stripes[:, c::3, c] = 1.0
    stripes = (1 - look.moire) + look.moire * stripes
    rot = cv2.getRotationMatrix2D((1.5 * w, 1.5 * h), rng.uniform(-3, 3), rng.uniform(1.00, 1.04))
    stripes = cv2.warpAffine(stripes, rot, (3 * w, 3 * h), borderMode=cv2.BORDER_WRAP)
    # a camera pixel integrates a little less than 3 x 3 screen pixels: weak aliasing remains as moiré
    shown = cv2.resize(big * stripes * 1.25, (w, h), interpolation=cv2.INTER_AREA)
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    a, b = rng.uniform(-1, 1, 2)
    glare = np.clip(1 - np.abs((xx / w - 0.5) * a + (yy / h - 0.5) * b - rng.uniform(-0.2, 0.2)) / 0.25, 0, 1)
    return np.clip(shown + rng.uniform(*look.glare) * glare[..., None], 0, 1).astype(np.float32)


def place(scene: np.ndarray, item: np.ndarray, center: tuple[float, float], scale: float, angle: float,
          border: tuple | None = None, border_px: int = 0) -> np.ndarray:
    """Composite a rectangular ``item`` (a photo or a screen) into ``scene`` with a rigid transform."""
    h, w = item.shape[:2]
    if border is not None and border_px > 0:
        item = cv2.copyMakeBorder(item, border_px, border_px, border_px, border_px,
                                  cv2.BORDER_CONSTANT, value=border)
        h, w = item.shape[:2]
    matrix = cv2.getRotationMatrix2D((w / 2, h / 2), angle, scale)
    matrix[:, 2] += np.asarray(center) - np.array([w / 2, h / 2])
    size = (scene.shape[1], scene.shape[0])
    warped = cv2.warpAffine(item, matrix, size, flags=cv2.INTER_LINEAR)
    mask = cv2.warpAffine(np.ones((h, w), np.float32), matrix, size, flags=cv2.INTER_LINEAR)[..., None]
    return scene * (1 - mask) + warped * mask


@dataclass(frozen=True)
class CameraStyle:
    """How one domain's cameras capture: white balance, exposure, blur, noise and compression."""

    wb_gains: tuple = (1.0, 1.0, 1.0)
    exposure: float = 1.0
    gamma: float = 1.0
    blur_sigma: float = 0.0
    noise_sigma: float = 0.01
    jpeg_quality: int = 90
    vignette: float = 0.0
    adverse_light: float = 1.0  # how strong the side lighting of the domain's "adverse" shots is (0: none)


def capture(img: np.ndarray, style: CameraStyle, rng: np.random.Generator) -> np.ndarray:
    """Turn a rendered float RGB image into a camera's uint8 BGR frame, in the domain's style."""
    h, w = img.shape[:2]
    out = img * np.array(style.wb_gains, np.float32) * style.exposure
    if style.vignette:
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        r2 = ((xx / w - 0.5) ** 2 + (yy / h - 0.5) ** 2) / 0.5
        out = out * (1 - style.vignette * r2)[..., None]
    out = np.clip(out, 0, 1) ** style.gamma
    if style.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), style.blur_sigma)
    out = out + rng.normal(0, style.noise_sigma, out.shape).astype(np.float32)
    bgr = cv2.cvtColor((np.clip(out, 0, 1) * 255 + 0.5).astype(np.uint8), cv2.COLOR_RGB2BGR)
    ok, encoded = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, style.jpeg_quality])
    return cv2.imdecode(encoded, cv2.IMREAD_COLOR)
