"""The controlled domain-shift profile of the demo corpus (``DemoConfig.shift``).

Every dataset (domain) gets one capture style and one attack look, each a neutral setting moved by ``shift``
times the domain's own offset: at 0 the four domains are captured alike and their attacks look alike (a
target is like held-out source data); at 1 (the default of the profile) each domain has its own colour cast,
tone curve, sharpness, noise and compression, its own print inks and screens, and its own strength of adverse
lighting; above 1 the differences grow. The offsets point different ways for each domain, so that no
leave-one-out target is special. What a method makes of it is measured (``bench/shift.py``), not designed:
the offsets follow the physics of capture and recapture (colour casts, tone curves, sharpness, print inks,
screens), and their sizes were set so that ERM's target AUC at shift 1 lands between about 0.65 and 0.90 on
each MICO protocol (two rounds, ERM only; no other method was run while setting them). Changing them
changes the corpus: bump ``DemoConfig.version`` with them.
"""
from __future__ import annotations

from dataclasses import fields, replace

from .render import AttackLook, CameraStyle

NEUTRAL_STYLE = CameraStyle(wb_gains=(1.0, 1.0, 1.0), exposure=1.0, gamma=1.0, blur_sigma=0.6, noise_sigma=0.015,
                            jpeg_quality=80, vignette=0.1, adverse_light=0.0)
NEUTRAL_LOOK = AttackLook()

# per domain, at shift 1: capture (white balance per channel, exposure, gamma, blur, noise, JPEG quality,
# vignetting, adverse light) ...
STYLE_OFFSETS = {
    "casia": {"wb_gains": (0.10, 0.0, -0.12), "exposure": 0.06, "gamma": -0.10, "blur_sigma": 0.7,
              "noise_sigma": 0.015, "jpeg_quality": -30, "vignette": 0.15, "adverse_light": 0.0},
    "replay": {"wb_gains": (-0.07, 0.0, 0.08), "exposure": -0.08, "gamma": 0.10, "blur_sigma": 0.3,
               "noise_sigma": 0.01, "jpeg_quality": -15, "vignette": 0.2, "adverse_light": 0.5},
    "msu": {"wb_gains": (-0.03, 0.07, -0.04), "exposure": 0.10, "gamma": -0.06, "blur_sigma": -0.3,
            "noise_sigma": -0.005, "jpeg_quality": 6, "vignette": -0.05, "adverse_light": 0.0},
    "oulu": {"wb_gains": (0.02, -0.06, 0.08), "exposure": 0.08, "gamma": -0.15, "blur_sigma": -0.5,
             "noise_sigma": -0.008, "jpeg_quality": 14, "vignette": -0.1, "adverse_light": 0.0},
}
# ... and attacks (how much colour the prints keep, paper and ink levels, halftone contrast; the screens'
# gamma, colour cast, sub-pixel grid contrast and glare)
LOOK_OFFSETS = {
    "casia": {"ink_keep": 0.12, "halftone": -0.04, "screen_gamma": (0.06, 0.06), "screen_cast": (0.06, 0.0, -0.1),
              "moire": -0.12, "glare": (0.0, 0.0)},
    "replay": {"ink_keep": 0.15, "halftone": -0.06, "screen_gamma": (-0.05, -0.05), "screen_cast": (-0.04, 0.0, 0.06),
               "moire": 0.1, "glare": (0.06, 0.08)},
    "msu": {"ink_keep": 0.1, "halftone": 0.04, "screen_gamma": (0.08, 0.08), "screen_cast": (0.05, 0.03, -0.06),
            "moire": -0.1, "glare": (-0.05, -0.08)},
    "oulu": {"ink_keep": 0.2, "halftone": -0.05, "screen_gamma": (0.1, 0.08), "screen_cast": (0.04, 0.02, -0.06),
             "moire": -0.1, "glare": (-0.04, -0.06)},
}


def _moved(base, offsets: dict, shift: float):
    """``base`` (a dataclass) with each field moved by ``shift`` x its offset (tuples element-wise)."""
    values = {}
    for f in fields(base):
        if f.name not in offsets:
            continue
        value, delta = getattr(base, f.name), offsets[f.name]
        if isinstance(value, tuple):
            values[f.name] = tuple(float(v + shift * d) for v, d in zip(value, delta))
        elif isinstance(value, int):
            values[f.name] = int(round(value + shift * delta))
        else:
            values[f.name] = float(value + shift * delta)
    return replace(base, **values)


def domain_style(dataset: str, shift: float) -> CameraStyle:
    """The capture style of ``dataset``'s videos at ``shift``."""
    style = _moved(NEUTRAL_STYLE, STYLE_OFFSETS[dataset], shift)
    return replace(style, blur_sigma=max(0.0, style.blur_sigma), noise_sigma=max(0.0, style.noise_sigma),
                   jpeg_quality=min(100, max(10, style.jpeg_quality)), vignette=max(0.0, style.vignette),
                   adverse_light=min(1.0, max(0.0, style.adverse_light)))


def domain_look(dataset: str, shift: float) -> AttackLook:
    """How ``dataset``'s attacks look at ``shift``."""
    return _moved(NEUTRAL_LOOK, LOOK_OFFSETS[dataset], shift)
