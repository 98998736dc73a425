"""CASIA-FASD: ``train_release/<1..20>/`` and ``test_release/<1..30>/``, 12 .avi videos per subject."""
from __future__ import annotations

from .base import DatasetIndexer, VideoRecord, match, split_parts

_SPLIT_DIRS = {"train_release": "train", "test_release": "test"}
# file stem -> (label, attack, attack_detail, camera)
_NAMES = {
    "1": ("live", "none", "", "low_quality"),
    "2": ("live", "none", "", "normal_quality"),
    "hr_1": ("live", "none", "", "high_quality"),
    "3": ("spoof", "print", "warped_photo", "low_quality"),
    "4": ("spoof", "print", "warped_photo", "normal_quality"),
    "hr_2": ("spoof", "print", "warped_photo", "high_quality"),
    "5": ("spoof", "print", "cut_photo", "low_quality"),
    "6": ("spoof", "print", "cut_photo", "normal_quality"),
    "hr_3": ("spoof", "print", "cut_photo", "high_quality"),
    "7": ("spoof", "replay", "video", "low_quality"),
    "8": ("spoof", "replay", "video", "normal_quality"),
    "hr_4": ("spoof", "replay", "video", "high_quality"),
}


class CasiaIndexer(DatasetIndexer):
    name = "casia"
    title = "CASIA-FASD"
    domain = "C"
    expected_per_split = {"train": 240, "test": 360}
    layout = """\
  ROOT/
    train_release/1/ .. 20/     1.avi 2.avi HR_1.avi (live), 3 4 HR_2 (warped photo),
    test_release/1/ .. 30/      5 6 HR_3 (cut photo), 7 8 HR_4 (video replay)"""

    def split_dirs(self):
        return tuple(_SPLIT_DIRS)

    def place(self, relpath):
        parts = split_parts(relpath)
        if len(parts) != 3:
            return "expected <train_release|test_release>/<subject>/<name>.avi"
        split_dir, subject, filename = parts
        split = _SPLIT_DIRS.get(split_dir.lower())
        if split is None:
            return f"folder {split_dir!r} is not train_release or test_release"
        if not subject.isdigit():
            return f"subject folder {subject!r} is not a number"
        m = match(r"(\d|hr_\d)\.avi", filename)
        if not m or m.group(1).lower() not in _NAMES:
            return f"file name {filename!r} is not one of 1-8.avi or HR_1-4.avi"
        label, attack, detail, camera = _NAMES[m.group(1).lower()]
        return VideoRecord(self.name, relpath, split, label, attack, f"{split}_{int(subject):02d}",
                           attack_detail=detail, camera=camera)

    def expected_relpaths(self, records):
        folders = {r.relpath.rsplit("/", 1)[0] for r in records}
        return {f"{folder}/{stem.upper()}.avi" for folder in folders for stem in _NAMES}
