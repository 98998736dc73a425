"""Input channels of a face crop, each uint8 C x H x W: RGB, HSV (OpenCV: H in 0-179) and colour LBP
(scikit-image, P=8 neighbours at R=1 per RGB channel, the 8-bit code map kept spatially)."""
from __future__ import annotations

import cv2
import numpy as np
from skimage.feature import local_binary_pattern


def hsv(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 RGB uint8 -> 3 x H x W HSV uint8."""
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).transpose(2, 0, 1).copy()


def color_lbp(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 RGB uint8 -> 3 x H x W LBP codes (0-255) per colour channel."""
    return np.stack([local_binary_pattern(rgb[..., c], P=8, R=1, method="default").astype(np.uint8)
                     for c in range(3)])


def channels(rgb: np.ndarray) -> dict[str, np.ndarray]:
    """All channels of a face crop."""
    return {"rgb": rgb.transpose(2, 0, 1).copy(), "hsv": hsv(rgb), "lbp": color_lbp(rgb)}
