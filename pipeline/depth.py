"""PRNet-style depth maps: 3D face points, triangulated, rendered with a z-buffer into the crop's frame.

Three sources of 3D points:

- ``face-alignment``: the 68 3D landmarks of face-alignment's FAN (``LandmarksType.THREE_D``): FAN gives
  x, y and the depth network z. Weights are read from ``weights_dir`` or the torch hub cache
  (``$TORCH_HOME/hub/checkpoints``); nothing is downloaded.
- ``mediapipe``: Face Mesh's 468 3D landmarks of the aligned crop (:mod:`pipeline.face_mesh`), forehead to
  chin, from the model file bundled in the wheel; a crop it cannot fit gets the configured fallback.
- ``generic``: a fixed, smooth 3D face surface (ellipsoidal head with nose ridge, eye sockets, lips and
  forehead), registered to MTCNN's five landmarks by a similarity transform. It needs no weights; it
  knows nothing of a person's real shape, and every shard records that it was used.

Rendering: the surface is triangulated (Delaunay on x, y), rasterised at 2x the output size with a z-buffer
(nearest surface wins), averaged down, and normalised so that the nearest point is 1, the face's farthest
visible point 0.2 and the background 0 (PRNet's convention: brighter is nearer).
"""
from __future__ import annotations

import warnings
from functools import lru_cache
from pathlib import Path

import numpy as np
from scipy.spatial import Delaunay, QhullError

from . import face_mesh
from .faces import UNIT_TEMPLATE, similarity
from .hashing import sha256_file
from .weights import load_weights

FAN_WEIGHTS = "3DFAN4-7835d9f11d.pth.tar"  # the file names face-alignment 1.5 caches them under
DEPTH_WEIGHTS = "depth-2a464da4ea.pth.tar"
REFERENCE_SCALE = 195.0  # face-alignment's box-to-scale divisor for its default (SFD) detector boxes
FACE_EDGE = 0.2  # normalised depth of the farthest face point; background is 0
SUPERSAMPLE = 2


def render_depth(points: np.ndarray, triangles: np.ndarray, size: int) -> np.ndarray:
    """Render 3D ``points`` (N x 3: x, y in output pixels, z larger = nearer) as a ``size`` x ``size``
    float32 depth map in [0, 1]. Each triangle is tested only against the pixel centres of its bounding
    box; overlapping triangles resolve by z-buffer (the nearest wins)."""
    hi = size * SUPERSAMPLE
    xy = points[:, :2].astype(np.float64) * SUPERSAMPLE
    z = points[:, 2].astype(np.float64)
    corners = xy[triangles]  # M x 3 x 2
    lo = np.clip(np.ceil(corners.min(axis=1) - 0.5), 0, hi).astype(np.int64)  # first pixel centre inside
    up = np.clip(np.floor(corners.max(axis=1) - 0.5), -1, hi - 1).astype(np.int64)
    nx, ny = np.maximum(up[:, 0] - lo[:, 0] + 1, 0), np.maximum(up[:, 1] - lo[:, 1] + 1, 0)
    counts = nx * ny
    tri = np.repeat(np.arange(len(triangles)), counts)
    offset = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    px = lo[tri, 0] + offset % nx[tri]
    py = lo[tri, 1] + offset // nx[tri]
    a, b, c = corners[tri, 0], corners[tri, 1], corners[tri, 2]
    det = (b[:, 1] - c[:, 1]) * (a[:, 0] - c[:, 0]) + (c[:, 0] - b[:, 0]) * (a[:, 1] - c[:, 1])
    ok = np.abs(det) > 1e-12
    det = np.where(ok, det, 1.0)
    dx, dy = px + 0.5 - c[:, 0], py + 0.5 - c[:, 1]
    w0 = ((b[:, 1] - c[:, 1]) * dx + (c[:, 0] - b[:, 0]) * dy) / det
    w1 = ((c[:, 1] - a[:, 1]) * dx + (a[:, 0] - c[:, 0]) * dy) / det
    w2 = 1 - w0 - w1
    inside = ok & (w0 >= -1e-9) & (w1 >= -1e-9) & (w2 >= -1e-9)
    vz = z[triangles[tri]]
    depth = w0 * vz[:, 0] + w1 * vz[:, 1] + w2 * vz[:, 2]
    zbuf = np.full(hi * hi, -np.inf)
    np.maximum.at(zbuf, (py * hi + px)[inside], depth[inside])
    covered = np.isfinite(zbuf)
    out = np.zeros(hi * hi)
    if covered.any():
        near, far = zbuf[covered].max(), zbuf[covered].min()
        span = max(near - far, 1e-9)
        out[covered] = FACE_EDGE + (1 - FACE_EDGE) * (zbuf[covered] - far) / span
    return out.reshape(size, SUPERSAMPLE, size, SUPERSAMPLE).mean(axis=(1, 3)).astype(np.float32)


def to_uint8(depth: np.ndarray) -> np.ndarray:
    return np.clip(np.rint(depth * 255), 0, 255).astype(np.uint8)


@lru_cache(maxsize=1)
def generic_surface() -> tuple[np.ndarray, np.ndarray]:
    """The generic face surface in the unit-template frame (x right, y down, z towards the camera),
    as (points N x 3, triangles M x 3)."""
    cx, cy, ax, ay = 0.5, 0.42, 0.52, 0.68  # the head ellipse covers forehead to chin
    grid = np.linspace(-1, 1, 25)
    u, v = np.meshgrid(grid, grid)
    inside = u ** 2 + v ** 2 <= 1.0
    u, v = u[inside], v[inside]
    x, y = cx + ax * u, cy + ay * v
    z = 0.45 * np.sqrt(np.clip(1 - u ** 2 - v ** 2, 0, 1))

    def bump(x0, y0, sx, sy, amp):
        return amp * np.exp(-((x - x0) ** 2 / (2 * sx ** 2) + (y - y0) ** 2 / (2 * sy ** 2)))

    z = (z + bump(0.5, 0.50, 0.06, 0.13, 0.16)  # nose ridge to tip
         + bump(0.3, 0.36, 0.07, 0.04, -0.04) + bump(0.7, 0.36, 0.07, 0.04, -0.04)  # eye sockets
         + bump(0.5, 0.77, 0.12, 0.04, 0.03) + bump(0.5, 0.98, 0.10, 0.06, 0.02))  # lips, chin
    points = np.stack([x, y, z], axis=1)
    return points, Delaunay(points[:, :2]).simplices.astype(np.int64)


def generic_depth(landmarks: np.ndarray, crop_size: int, size: int) -> np.ndarray:
    """Depth map of the generic surface registered to five landmarks given in crop pixels."""
    points, triangles = generic_surface()
    transform = similarity(UNIT_TEMPLATE, landmarks * (size / crop_size))
    xy = transform(points[:, :2])
    z = points[:, 2] * transform.scale
    return render_depth(np.column_stack([xy, z]), triangles, size)


def landmark_depth(landmarks: np.ndarray, crop_size: int, size: int) -> np.ndarray:
    """Depth map of 3D landmarks (68 of face-alignment or 468 of Face Mesh; x, y in crop pixels, z larger =
    farther)."""
    pts = np.asarray(landmarks, np.float64).copy()
    pts[:, :2] *= size / crop_size
    pts[:, 2] = -pts[:, 2] * (size / crop_size)  # face-alignment's z grows away from the camera
    try:
        triangles = Delaunay(pts[:, :2]).simplices.astype(np.int64)
    except QhullError as err:
        raise ValueError(f"degenerate 3D landmarks, no triangulation: {str(err).splitlines()[0]}") from None
    return render_depth(pts, triangles, size)


def weights_dir(configured: str | None) -> Path:
    """Where face-alignment weights are looked for: the configured folder, else the torch hub cache."""
    if configured:
        return Path(configured).expanduser()
    import torch.hub
    return Path(torch.hub.get_dir()) / "checkpoints"


def fan_weights_present(configured: str | None) -> bool:
    folder = weights_dir(configured)
    return (folder / FAN_WEIGHTS).is_file() and (folder / DEPTH_WEIGHTS).is_file()


def resolve_backend(backend: str, configured_dir: str | None) -> str:
    """The backend a build will use: ``auto`` picks face-alignment when its weights are present, else
    mediapipe when it is installed with its model, else generic (with a loud warning)."""
    if backend == "face-alignment" and not fan_weights_present(configured_dir):
        folder = weights_dir(configured_dir)
        raise FileNotFoundError(f"face-alignment weights not found: need {folder / FAN_WEIGHTS} and "
                                f"{folder / DEPTH_WEIGHTS} (set depth.weights_dir or TORCH_HOME; nothing is "
                                f"downloaded). Or choose depth.backend: mediapipe.")
    if backend == "mediapipe":
        face_mesh.model_sha256()  # a clear error naming the model file when it cannot be used
    if backend == "auto":
        if fan_weights_present(configured_dir):
            return "face-alignment"
        if face_mesh.available():
            return "mediapipe"
        warnings.warn(f"neither face-alignment weights (in {weights_dir(configured_dir)}) nor mediapipe's Face Mesh "
                      f"model are available: depth maps will come from the GENERIC face surface registered to five "
                      f"landmarks, not from 3D landmarks. Set depth.backend: generic to silence this.", stacklevel=2)
        return "generic"
    return backend


@lru_cache(maxsize=4)
def backend_model(backend: str, configured_dir: str | None) -> dict:
    """The model files a backend's depth maps come from, with their sha256 (recorded in shards and manifest;
    hashed once per process: face-alignment's weights are large)."""
    if backend == "mediapipe":
        return {"mediapipe/" + "/".join(face_mesh.MODEL): face_mesh.model_sha256()}
    if backend == "face-alignment":
        folder = weights_dir(configured_dir)
        return {name: sha256_file(folder / name) for name in (FAN_WEIGHTS, DEPTH_WEIGHTS)}
    return {}


class FanLandmarks:
    """face-alignment's 3D FAN and depth network, loaded from local weights, on a device."""

    def __init__(self, configured_dir: str | None, device: str = "cpu"):
        from face_alignment.models import FAN, ResNetDepth
        folder = weights_dir(configured_dir)
        self.device = device
        self.fan = FAN(4)
        self.fan.load_state_dict(load_weights(folder / FAN_WEIGHTS))
        state = load_weights(folder / DEPTH_WEIGHTS)
        self.depth = ResNetDepth()
        self.depth.load_state_dict({k.replace("module.", ""): v for k, v in state["state_dict"].items()})
        self.fan.to(device).eval()
        self.depth.to(device).eval()

    def predict(self, images: list[np.ndarray], boxes: list[np.ndarray]) -> list[np.ndarray]:
        """68 x 3 landmarks per face (x, y in its image's pixels; z relative, larger = farther), the faces of
        a video in one batch through each network."""
        import torch
        from face_alignment.api import CENTER_Y_OFFSET, CROP_RESOLUTION, NUM_LANDMARKS, SCALE_FACTOR
        from face_alignment.utils import crop, draw_gaussian, get_preds_fromhm
        if not images:
            return []
        centers, scales, crops = [], [], []
        for image, (x1, y1, x2, y2) in zip(images, boxes):
            centers.append(np.array([(x1 + x2) / 2, (y1 + y2) / 2 - (y2 - y1) * CENTER_Y_OFFSET]))
            scales.append((x2 - x1 + y2 - y1) / REFERENCE_SCALE)
            crops.append(crop(image, centers[-1], scales[-1]).transpose(2, 0, 1).astype(np.float32) / 255)
        inp = torch.from_numpy(np.stack(crops))
        with torch.no_grad():
            out = self.fan(inp.to(self.device))
            out = (out[-1] if isinstance(out, list) else out).float().cpu().numpy()
            heat = np.zeros((len(images), NUM_LANDMARKS, CROP_RESOLUTION, CROP_RESOLUTION), np.float32)
            points = []
            for k, (center, scale) in enumerate(zip(centers, scales)):
                pts, pts_img, _ = get_preds_fromhm(out[k:k + 1], center, scale)
                pts = pts.reshape(NUM_LANDMARKS, 2) * 4
                for j in range(NUM_LANDMARKS):
                    if pts[j, 0] > 0 and pts[j, 1] > 0:
                        heat[k, j] = draw_gaussian(heat[k, j], pts[j], 2)
                points.append(pts_img.reshape(NUM_LANDMARKS, 2))
            depth_in = torch.cat([inp, torch.from_numpy(heat)], 1).to(self.device)
            z = self.depth(depth_in).float().cpu().numpy().reshape(len(images), NUM_LANDMARKS, 1)
        return [np.concatenate([p, zk * (1.0 / (CROP_RESOLUTION / (SCALE_FACTOR * scale)))], axis=1)
                for p, zk, scale in zip(points, z, scales)]
