"""Face detection (facenet-pytorch MTCNN, batched) and cropping (five-point aligned chip or box crop).

Per frame the most confident face is kept; a frame without a face scoring at least ``min_score`` is a
reject with its reason, never silently dropped.
"""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
from skimage.transform import SimilarityTransform

from .config import FaceConfig

# Five landmarks (left eye, right eye, nose tip, left and right mouth corner) of a mean face, in a unit
# box that spans the face from brow to chin; padding adds that fraction of the box on every side.
UNIT_TEMPLATE = np.array([[0.300, 0.360], [0.700, 0.360], [0.500, 0.555], [0.345, 0.760], [0.655, 0.760]])


@dataclass
class Detection:
    box: np.ndarray  # x1, y1, x2, y2 in frame pixels
    landmarks: np.ndarray  # 5 x 2 in frame pixels
    score: float


class FaceDetector:
    """MTCNN on a device; ``detect`` takes a list of same-sized RGB frames."""

    def __init__(self, config: FaceConfig, device: str = "cpu"):
        from facenet_pytorch import MTCNN
        self.config = config
        self.device = device
        self.mtcnn = MTCNN(min_face_size=config.min_face_size, thresholds=list(config.thresholds),
                           factor=config.factor, keep_all=True, device=device)

    def detect(self, frames: list[np.ndarray]) -> list[Detection | None]:
        """The most confident face of each frame, or None."""
        if not frames:
            return []
        h, w = frames[0].shape[:2]
        scale = min(1.0, self.config.max_side / max(h, w))
        batch = np.stack([cv2.resize(f, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)
                          if scale < 1 else f for f in frames])
        boxes, probs, points = self.mtcnn.detect(batch, landmarks=True)
        found = []
        for b, p, pts in zip(boxes, probs, points):
            if b is None or len(b) == 0:
                found.append(None)
                continue
            best = int(np.argmax(p))
            found.append(Detection(np.asarray(b[best], np.float64) / scale,
                                   np.asarray(pts[best], np.float64) / scale, float(p[best])))
        return found


def similarity(src: np.ndarray, dst: np.ndarray) -> SimilarityTransform:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping src to dst."""
    transform = SimilarityTransform.from_estimate(np.asarray(src, np.float64), np.asarray(dst, np.float64))
    if not transform:
        raise ValueError(f"degenerate landmarks, no similarity transform: {np.round(src, 1).tolist()}")
    return transform


def template(size: int, padding: float) -> np.ndarray:
    """The five template landmarks in a ``size`` x ``size`` chip with ``padding``."""
    return (UNIT_TEMPLATE + padding) / (1 + 2 * padding) * size


def crop_matrix(detection: Detection, config: FaceConfig) -> np.ndarray:
    """2 x 3 affine matrix from frame pixels to crop pixels."""
    if config.crop == "aligned":
        return similarity(detection.landmarks, template(config.size, config.padding)).params[:2].copy()
    x1, y1, x2, y2 = detection.box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * config.padding)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    s = config.size / side
    return np.array([[s, 0, config.size / 2 - s * cx], [0, s, config.size / 2 - s * cy]])


def crop_face(frame: np.ndarray, matrix: np.ndarray, size: int) -> np.ndarray:
    """The crop of ``frame`` under ``matrix``; outside the frame, edge pixels are replicated."""
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2 x 3 affine matrix to N x 2 points."""
    return points @ matrix[:, :2].T + matrix[:, 2]
