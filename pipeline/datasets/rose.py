"""ROSE-Youtu (for MICY), read tolerantly.

Its file names are ``<type>_<...>_<device>_<...>_<subject>_<index>.<ext>`` (e.g. ``G_NT_5s_g_E_2_1.mp4``);
the type code gives the label and attack, the split comes from a ``train``/``test`` folder on the path.
Anything that does not fit is reported, never guessed.
"""
from __future__ import annotations

import re

from .base import DatasetIndexer, LayoutError, VideoRecord, split_parts

# type code -> (label, attack, attack_detail)
_TYPES = {"g": ("live", "none", ""),
          "ps": ("spoof", "print", "still_paper"), "pq": ("spoof", "print", "quivering_paper"),
          "vl": ("spoof", "replay", "lenovo_screen"), "vm": ("spoof", "replay", "mac_screen"),
          "mc": ("spoof", "mask", "paper_mask_cropped"), "mf": ("spoof", "mask", "paper_mask_full"),
          "mu": ("spoof", "mask", "paper_mask_upper")}
_DEVICES = {"5s": "iphone5s", "hs": "hasee", "hw": "huawei", "ip": "ipad", "zte": "zte"}
_SPLIT_WORDS = {"train": "train", "training": "train", "dev": "devel", "devel": "devel",
                "test": "test", "testing": "test"}


class RoseIndexer(DatasetIndexer):
    name = "rose"
    title = "ROSE-Youtu"
    domain = "Y"
    expected_per_split = {}  # the per-split counts are not documented; only the total is
    expected_total = 3350
    expected_is_approximate = True
    layout = """\
  ROOT/
    train/ (or any path with a 'train' folder)  .../G_NT_5s_g_E_2_1.mp4
    test/  (or any path with a 'test' folder)   .../Ps_T_HW_wg_E_13_1.mp4
    type codes: G live; Ps/Pq print; Vl/Vm replay; Mc/Mf/Mu paper mask"""

    def check_layout(self, root):
        if not root.is_dir():
            raise LayoutError(f"{root}: not a directory. Expected the {self.title} root:\n{self.layout}")
        for dirpath in root.rglob("*"):
            if dirpath.is_dir() and dirpath.name.lower() in _SPLIT_WORDS:
                return
        raise LayoutError(f"{root} is not a {self.title} root (no train/ or test/ folder anywhere below it).\n"
                          f"Expected layout:\n{self.layout}")

    def place(self, relpath):
        folders = [p.lower() for p in split_parts(relpath)[:-1]]
        splits = {_SPLIT_WORDS[f] for f in folders if f in _SPLIT_WORDS}
        if len(splits) != 1:
            return "no single train/test folder on the path" if not splits else f"path names several splits {sorted(splits)}"
        (split,) = splits
        stem = split_parts(relpath)[-1].rsplit(".", 1)[0]
        tokens = stem.split("_")
        kind = _TYPES.get(tokens[0].lower())
        if kind is None:
            return f"type code {tokens[0]!r} is not one of {', '.join(sorted(_TYPES))} (case-insensitive)"
        if len(tokens) < 3 or not re.fullmatch(r"\d+", tokens[-2]):
            return "name does not end in _<subject>_<index>"
        devices = [_DEVICES[t.lower()] for t in tokens[1:-2] if t.lower() in _DEVICES]
        label, attack, detail = kind
        return VideoRecord(self.name, relpath, split, label, attack, f"subject{int(tokens[-2]):02d}",
                           attack_detail=detail, camera=devices[0] if len(devices) == 1 else "")

    def expected_relpaths(self, records):
        return set()  # the naming does not let us enumerate a complete copy
