"""Input channels of a face crop, each uint8 C x H x W: RGB, HSV (Pillow's, H in 0-255, as RFM's code
makes it; or OpenCV's, H in 0-179) and colour LBP
(scikit-image's ``local_binary_pattern(P=8, R=1, method="default")`` per RGB channel, the 8-bit code map kept
spatially).

The LBP is computed here with whole-array operations that follow scikit-image's definition step by step
(circle points rounded to 5 decimals, bilinear interpolation, constant-0 border, ``neighbour - centre >= 0``),
so the codes are bit-identical to scikit-image's (the tests check it) at several times its speed.
"""
from __future__ import annotations

import cv2
import numpy as np
from PIL import Image

P, R = 8, 1.0
_ANGLES = 2 * np.pi * np.arange(P, dtype=np.float64) / P
_ROW_OFFSETS = np.round(-R * np.sin(_ANGLES), 5)
_COL_OFFSETS = np.round(R * np.cos(_ANGLES), 5)


def hsv(rgb: np.ndarray, convention: str = "pil") -> np.ndarray:
    """H x W x 3 RGB uint8 -> 3 x H x W HSV uint8: ``pil`` (Pillow's ``convert("HSV")``, hue 0-255, the
    authors' input) or ``opencv`` (``COLOR_RGB2HSV``, hue 0-179)."""
    if convention == "pil":
        return np.asarray(Image.fromarray(np.ascontiguousarray(rgb), "RGB").convert("HSV")).transpose(2, 0, 1).copy()
    if convention == "opencv":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).transpose(2, 0, 1).copy()
    raise ValueError(f"unknown HSV convention {convention!r}: use pil or opencv")


def lbp(gray: np.ndarray) -> np.ndarray:
    """H x W image -> H x W uint8 LBP codes, equal to scikit-image's P=8, R=1 'default' method.

    The four axis-aligned neighbours fall on pixels (no interpolation: an integer comparison); the four
    diagonal ones are interpolated with scikit-image's formula and per-row/column weights, in float64.
    """
    image = np.asarray(gray, np.float64)
    h, w = image.shape
    padded = np.zeros((h + 2, w + 2))
    padded[1:-1, 1:-1] = image
    rows, cols = np.arange(h, dtype=np.float64), np.arange(w, dtype=np.float64)
    codes = np.zeros((h, w), np.uint8)
    for bit, (dr_off, dc_off) in enumerate(zip(_ROW_OFFSETS, _COL_OFFSETS)):
        r, c = rows + dr_off, cols + dc_off  # sample positions, as scikit-image computes them
        r0, c0 = np.floor(r), np.floor(c)
        ri0, ci0 = int(r0[0]) + 1, int(c0[0]) + 1  # +1: the zero border
        if dr_off == int(dr_off) and dc_off == int(dc_off):
            texture = padded[ri0:ri0 + h, ci0:ci0 + w]
        else:
            dr, dc = (r - r0)[:, None], (c - c0)[None, :]
            ri1, ci1 = ri0 + 1, ci0 + 1
            top = (1 - dc) * padded[ri0:ri0 + h, ci0:ci0 + w]
            top += dc * padded[ri0:ri0 + h, ci1:ci1 + w]
            bottom = (1 - dc) * padded[ri1:ri1 + h, ci0:ci0 + w]
            bottom += dc * padded[ri1:ri1 + h, ci1:ci1 + w]
            top *= 1 - dr
            bottom *= dr
            texture = top
            texture += bottom
        codes |= (texture >= image).view(np.uint8) << bit
    return codes


def color_lbp(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 RGB uint8 -> 3 x H x W LBP codes (0-255) per colour channel."""
    return np.stack([lbp(rgb[..., c]) for c in range(3)])


def channels(rgb: np.ndarray, hsv_convention: str = "pil") -> dict[str, np.ndarray]:
    """All channels of a face crop."""
    return {"rgb": rgb.transpose(2, 0, 1).copy(), "hsv": hsv(rgb, hsv_convention), "lbp": color_lbp(rgb)}
