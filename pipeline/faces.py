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

# Five landmarks (left eye, right eye, nose tip, left and right mouth corner) of a mean face, in a unit box;
# padding adds that fraction of the box on every side: template = (padding + m) / (1 + 2 padding) x size.
# "public": the mean face of the aligned chips every public FAS result was trained on (the MTCNN extractor the
# SSDG and Meta Pattern authors used, padding 0.37), black outside the frame. "compact": this project's first
# template (eyes 0.40 of the box apart instead of 0.53: faces about 25% smaller in the chip), edge pixels
# replicated outside the frame; it is also the frame the generic depth surface is defined in.
PUBLIC_TEMPLATE = np.array([[0.224152, 0.2119465], [0.75610125, 0.2119465], [0.490127, 0.628106],
                            [0.254149, 0.780233], [0.726104, 0.780233]])
UNIT_TEMPLATE = np.array([[0.300, 0.360], [0.700, 0.360], [0.500, 0.555], [0.345, 0.760], [0.655, 0.760]])
TEMPLATES = {"public": PUBLIC_TEMPLATE, "compact": UNIT_TEMPLATE}
BORDERS = {"public": cv2.BORDER_CONSTANT, "compact": cv2.BORDER_REPLICATE}  # outside the frame: black, or edges


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


# clockwise turns that put a frame upright, compared with the frames as they are
TURNS = {90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180, 270: cv2.ROTATE_90_COUNTERCLOCKWISE}
# A video whose every sampled frame shows an upright face at least this sure is kept as it is without trying the
# turns: MTCNN also "finds" upright faces in turned frames of real faces (its landmarks placed as if upright), but
# at most 0.98 on the faces measured (astronaut, LFW; turned by 90, 180 and 270 degrees, also padded portrait).
SURE_UPRIGHT = 0.999
# A turn is taken only when its upright evidence exceeds the frames' own by this much: the log-odds of one face
# at 0.99, so that neither a face missed in a frame or two nor one spurious upright face decides
TURN_MARGIN = 4.6
MAX_LOG_ODDS = 13.8  # a face's evidence is capped at p = 1 - 1e-6


def is_upright(detection: Detection) -> bool:
    """Whether the five landmarks sit as on an upright face: the eyes above the nose above the mouth corners,
    each left eye and mouth corner left of its right one."""
    points = detection.landmarks
    eyes, nose, mouth = points[:2, 1].mean(), points[2, 1], points[3:, 1].mean()
    return bool(eyes < nose < mouth and points[0, 0] < points[1, 0] and points[3, 0] < points[4, 0])


def orientation_evidence(detections: list, min_score: float) -> dict:
    """How surely the frames show an upright face: ``faces`` (frames with an upright face scoring at least
    ``min_score``), their ``mean_score``, and ``evidence``, the sum of those faces' log-odds (capped at
    MAX_LOG_ODDS), which weighs a face at 0.9999 about three times one at 0.98."""
    scores = [d.score for d in detections if d is not None and d.score >= min_score and is_upright(d)]
    odds = [min(MAX_LOG_ODDS, max(0.0, float(np.log(s / (1 - s))) if s < 1 else MAX_LOG_ODDS)) for s in scores]
    return {"faces": len(scores), "mean_score": round(float(np.mean(scores)), 6) if scores else 0.0,
            "evidence": round(sum(odds), 4)}


def find_upright(detector: "FaceDetector", frames: list, detections: list, min_score: float):
    """(clockwise degrees, frames, detections, evidence): the frames turned upright, decided per video on its
    sampled frames.

    When every frame shows an upright face scoring at least SURE_UPRIGHT, the frames are kept as they are
    (``decided: sure``). Otherwise the same frames are detected turned by 90, 180 and 270 degrees, and the turn
    with the most upright evidence (:func:`orientation_evidence`) is taken if it beats the frames as they are by
    TURN_MARGIN (``decided: compared``). Counting frames with an upright face is not enough either way: MTCNN
    reports upright faces in upside-down and sideways frames too, at scores up to 0.98, so a turned video keeps
    a spurious upright face or two, and an upright one whose face is missed in a frame or two shows spurious
    ones turned. ``evidence`` has each tried orientation's record and the decision."""
    record = {"0": orientation_evidence(detections, min_score)}
    if detections and all(d is not None and d.score >= SURE_UPRIGHT and is_upright(d) for d in detections):
        return 0, frames, detections, {**record, "decided": "sure", "turn": 0}
    best = (0, frames, detections, record["0"]["evidence"] + TURN_MARGIN)
    for degrees, code in TURNS.items():
        turned = [cv2.rotate(f, code) for f in frames]
        found = detector.detect(turned)
        record[str(degrees)] = orientation_evidence(found, min_score)
        if record[str(degrees)]["evidence"] > best[3]:
            best = (degrees, turned, found, record[str(degrees)]["evidence"])
    return best[0], best[1], best[2], {**record, "decided": "compared", "turn": best[0]}


def similarity(src: np.ndarray, dst: np.ndarray) -> SimilarityTransform:
    """Least-squares similarity transform (rotation, uniform scale, translation) mapping src to dst."""
    transform = SimilarityTransform.from_estimate(np.asarray(src, np.float64), np.asarray(dst, np.float64))
    if not transform:
        raise ValueError(f"degenerate landmarks, no similarity transform: {np.round(src, 1).tolist()}")
    return transform


def template(size: int, padding: float, name: str = "public") -> np.ndarray:
    """The five landmarks of template ``name`` in a ``size`` x ``size`` chip with ``padding``."""
    return (TEMPLATES[name] + padding) / (1 + 2 * padding) * size


def crop_matrix(detection: Detection, config: FaceConfig) -> np.ndarray:
    """2 x 3 affine matrix from frame pixels to crop pixels."""
    if config.crop == "aligned":
        target = template(config.size, config.padding, config.template)
        return similarity(detection.landmarks, target).params[:2].copy()
    x1, y1, x2, y2 = detection.box
    side = max(x2 - x1, y2 - y1) * (1 + 2 * config.padding)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    s = config.size / side
    return np.array([[s, 0, config.size / 2 - s * cx], [0, s, config.size / 2 - s * cy]])


def crop_face(frame: np.ndarray, matrix: np.ndarray, size: int, template_name: str = "public") -> np.ndarray:
    """The crop of ``frame`` under ``matrix``; outside the frame black (``public``) or edge pixels replicated
    (``compact``)."""
    return cv2.warpAffine(frame, matrix, (size, size), flags=cv2.INTER_LINEAR, borderMode=BORDERS[template_name],
                          borderValue=0)


def transform_points(points: np.ndarray, matrix: np.ndarray) -> np.ndarray:
    """Apply a 2 x 3 affine matrix to N x 2 points."""
    return points @ matrix[:, :2].T + matrix[:, 2]
