"""Input channels of a face crop, each uint8 C x H x W: RGB, HSV (Pillow's, H in 0-255, as RFM's code
makes it; or OpenCV's, H in 0-179) and colour LBP
(scikit-image's ``local_binary_pattern(P=8, R=1, method="default")`` per RGB channel, the 8-bit code map kept
spatially).

The LBP codes are bit-identical to scikit-image's (the tests compare them), computed in a few whole-array
passes instead of its per-pixel interpolation:

- the four axis-aligned neighbours fall on pixels: an integer comparison;
- a diagonal neighbour is scikit-image's bilinear interpolation with weights 0.29289 and 0.70711 (offsets
  rounded to 5 decimals). Scaled by 10^10 these weights are integers, so the comparison
  ``sum(W_i * corner_i) >= 10^10 * centre`` is done exactly in float64 (every term below 2^53) by one
  separable filter. Where the exact value is not zero it is at least 1e-10 away, more than scikit-image's
  float64 rounding (and its row/column weights' last-bit differences) can move it, so both agree;
- where it is exactly zero (a tie: the two corners weighted 0.70711^2 and 0.29289^2 equal the centre and the
  other two average to it, the only integer solution) scikit-image's answer depends on its rounding, which
  depends on the pixel's row and column only through a few weight values. Each (row, column) weight class's
  answers are tabulated from scikit-image's formula once per crop size; classes where every tie counts as
  ">=" (almost all pixels) need nothing more, the rest are looked up.
"""
from __future__ import annotations

import functools

import cv2
import numpy as np
from PIL import Image

P = 8
_SCALE = 10 ** 5  # the neighbour offsets have 5 decimals
_ANGLES = 2 * np.pi * np.arange(P, dtype=np.float64) / P
_ROW_OFFSETS = np.round(-np.sin(_ANGLES), 5)  # R = 1, as scikit-image computes them
_COL_OFFSETS = np.round(np.cos(_ANGLES), 5)
_AXIS_BITS = [b for b in range(P) if _ROW_OFFSETS[b] == int(_ROW_OFFSETS[b]) and _COL_OFFSETS[b] == int(_COL_OFFSETS[b])]
_MAX_SIDE = 2048  # beyond this scikit-image's row/column weights drift too far for the exactness argument


def hsv(rgb: np.ndarray, convention: str = "pil") -> np.ndarray:
    """H x W x 3 RGB uint8 -> 3 x H x W HSV uint8: ``pil`` (Pillow's ``convert("HSV")``, hue 0-255, the
    authors' input) or ``opencv`` (``COLOR_RGB2HSV``, hue 0-179)."""
    if convention == "pil":
        return np.asarray(Image.fromarray(np.ascontiguousarray(rgb), "RGB").convert("HSV")).transpose(2, 0, 1).copy()
    if convention == "opencv":
        return cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV).transpose(2, 0, 1).copy()
    raise ValueError(f"unknown HSV convention {convention!r}: use pil or opencv")


def _fractions(n: int, offset: float) -> np.ndarray:
    """scikit-image's interpolation weight along one axis for positions 0..n-1 shifted by ``offset``."""
    position = np.arange(n, dtype=np.float64) + offset
    return position - np.floor(position)


def _corner_weights(bit: int) -> tuple[np.ndarray, np.ndarray, int, int]:
    """Integer 3-tap row and column kernels (correlation, anchor at the middle) whose outer product is the
    bilinear interpolation of neighbour ``bit`` scaled by 10^10, and the offsets of its top-left corner."""
    top = int(np.floor(_ROW_OFFSETS[bit]))
    left = int(np.floor(_COL_OFFSETS[bit]))
    row_frac = round((_ROW_OFFSETS[bit] - top) * _SCALE)
    col_frac = round((_COL_OFFSETS[bit] - left) * _SCALE)
    rows, cols = np.zeros(3), np.zeros(3)
    rows[top + 1], rows[top + 2] = _SCALE - row_frac, row_frac
    cols[left + 1], cols[left + 2] = _SCALE - col_frac, col_frac
    return rows, cols, top, left


@functools.lru_cache(maxsize=16)
def _ties(bit: int, h: int, w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
    """For diagonal neighbour ``bit`` on an h x w image: the flat indices (row * w + col) of the pixels whose
    ties scikit-image does not always count as ">=", per-row and per-column weight classes, the answer table
    [row class, column class, centre, first cross corner - centre + 255], and that corner's (row, col) offset."""
    rows, cols, top, left = _corner_weights(bit)
    row_fracs, row_class = np.unique(_fractions(h, _ROW_OFFSETS[bit]), return_inverse=True)
    col_fracs, col_class = np.unique(_fractions(w, _COL_OFFSETS[bit]), return_inverse=True)
    drift = max(np.abs(row_fracs - rows[top + 2] / _SCALE).max(), np.abs(col_fracs - cols[left + 2] / _SCALE).max())
    if 2 * 255 * drift > 5e-11:  # exact values other than 0 are at least 1e-10 away from it
        raise ValueError(f"LBP of a {h} x {w} image: sides up to {_MAX_SIDE} px are supported")
    # corners a, b, c, d in scikit-image's order; at a tie the two "cross" corners (the middle weight,
    # 0.70711 * 0.29289) are centre + k and centre - k, the other two equal the centre
    weights = [rows[top + 1] * cols[left + 1], rows[top + 1] * cols[left + 2],
               rows[top + 2] * cols[left + 1], rows[top + 2] * cols[left + 2]]
    cross = [i for i, weight in enumerate(weights) if min(weights) < weight < max(weights)]
    centre = np.arange(256, dtype=np.float64)[:, None]
    k = np.arange(-255, 256, dtype=np.float64)[None, :]
    corners = [centre + 0 * k] * 4
    corners[cross[0]], corners[cross[1]] = centre + k, centre - k
    a, b, c, d = corners
    table = np.empty((len(row_fracs), len(col_fracs), 256, 511), bool)
    for i, dr in enumerate(row_fracs):
        for j, dc in enumerate(col_fracs):
            upper = (1 - dc) * a + dc * b
            lower = (1 - dc) * c + dc * d
            table[i, j] = (1 - dr) * upper + dr * lower >= centre
    possible = (centre + k >= 0) & (centre + k <= 255) & (centre - k >= 0) & (centre - k <= 255)
    always = (table | ~possible).all(axis=(2, 3))
    needed = np.flatnonzero(~always[row_class[:, None], col_class[None, :]])
    corner = (top + cross[0] // 2, left + cross[0] % 2)
    return needed, row_class, col_class, table, corner


def _lbp(image: np.ndarray) -> np.ndarray:
    """H x W x C uint8 -> H x W x C LBP codes, each channel as scikit-image's P=8, R=1 'default' method."""
    h, w, n = image.shape
    padded = cv2.copyMakeBorder(image, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0).reshape(h + 2, w + 2, n)
    codes = np.zeros((h, w, n), np.uint8)
    for bit in _AXIS_BITS:
        dy, dx = int(_ROW_OFFSETS[bit]) + 1, int(_COL_OFFSETS[bit]) + 1
        _set_bit(codes, cv2.compare(padded[dy:dy + h, dx:dx + w], image, cv2.CMP_GE), bit)
    scaled_centre = image.astype(np.float64) * float(_SCALE ** 2)
    for bit in sorted(set(range(P)) - set(_AXIS_BITS)):
        rows, cols, _, _ = _corner_weights(bit)
        texture = cv2.sepFilter2D(image, cv2.CV_64F, cols, rows, borderType=cv2.BORDER_CONSTANT).reshape(h, w, n)
        bits = cv2.compare(texture, scaled_centre, cv2.CMP_GE).reshape(h, w, n)
        needed, row_class, col_class, table, (dy, dx) = _ties(bit, h, w)
        if needed.size:
            pixel, channel = np.nonzero(texture.reshape(-1, n)[needed] == scaled_centre.reshape(-1, n)[needed])
            row, col = np.divmod(needed[pixel], w)
            centre = image[row, col, channel]
            k = padded[row + dy + 1, col + dx + 1, channel].astype(np.intp) - centre + 255
            bits[row, col, channel] = 255 * table[row_class[row], col_class[col], centre, k]
        _set_bit(codes, bits, bit)
    return codes


def _set_bit(codes: np.ndarray, mask: np.ndarray, bit: int) -> None:
    """codes |= bit ``bit`` where ``mask`` (0 or 255) is set."""
    mask = mask.reshape(codes.shape)
    np.bitwise_and(mask, 1 << bit, out=mask)
    np.bitwise_or(codes, mask, out=codes)


def lbp(gray: np.ndarray) -> np.ndarray:
    """H x W uint8 image -> H x W uint8 LBP codes, equal to scikit-image's P=8, R=1 'default' method."""
    return _lbp(np.asarray(gray, np.uint8)[:, :, None])[:, :, 0]


def color_lbp(rgb: np.ndarray) -> np.ndarray:
    """H x W x 3 RGB uint8 -> 3 x H x W LBP codes (0-255) per colour channel."""
    return _lbp(np.ascontiguousarray(rgb, np.uint8)).transpose(2, 0, 1).copy()


def channels(rgb: np.ndarray, hsv_convention: str = "pil") -> dict[str, np.ndarray]:
    """All channels of a face crop."""
    return {"rgb": rgb.transpose(2, 0, 1).copy(), "hsv": hsv(rgb, hsv_convention), "lbp": color_lbp(rgb)}
