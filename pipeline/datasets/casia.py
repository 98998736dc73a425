"""CASIA-FASD: ``train_release/<1..20>/`` and ``test_release/<1..30>/``, 12 .avi videos per subject."""
from __future__ import annotations

from .base import DatasetIndexer, VideoRecord, match, split_parts

_SPLIT_DIRS = {"train_release": "train", "test_release": "test"}
# file stem -> (label, attack, attack_detail)
_CONTENT = {
    "1": ("live", "none", ""), "2": ("live", "none", ""), "hr_1": ("live", "none", ""),
    "3": ("spoof", "print", "warped_photo"), "4": ("spoof", "print", "warped_photo"),
    "hr_2": ("spoof", "print", "warped_photo"),
    "5": ("spoof", "print", "cut_photo"), "6": ("spoof", "print", "cut_photo"), "hr_3": ("spoof", "print", "cut_photo"),
    "7": ("spoof", "replay", "video"), "8": ("spoof", "replay", "video"), "hr_4": ("spoof", "replay", "video"),
}
# file stem -> capture quality (the ``camera`` column). The source: Idiap's published CASIA-FASD interface,
# bob.db.casia_fasd 2.0.10, ``File.get_quality``: 1 3 5 7 normal, 2 4 6 8 low, HR_* high.
CAPTURE_QUALITY = {
    "1": "normal_quality", "3": "normal_quality", "5": "normal_quality", "7": "normal_quality",
    "2": "low_quality", "4": "low_quality", "6": "low_quality", "8": "low_quality",
    "hr_1": "high_quality", "hr_2": "high_quality", "hr_3": "high_quality", "hr_4": "high_quality",
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
        stem = m.group(1).lower() if m else None
        if stem not in _CONTENT:
            return f"file name {filename!r} is not one of 1-8.avi or HR_1-4.avi"
        label, attack, detail = _CONTENT[stem]
        return VideoRecord(self.name, relpath, split, label, attack, f"{split}_{int(subject):02d}",
                           attack_detail=detail, camera=CAPTURE_QUALITY[stem])

    def expected_relpaths(self, records):
        folders = {r.relpath.rsplit("/", 1)[0] for r in records}
        return {f"{folder}/{stem.upper()}.avi" for folder in folders for stem in _CONTENT}
