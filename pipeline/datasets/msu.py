"""MSU-MFSD: ``scene01/{real,attack}/`` videos, split by ``train_sub_list.txt`` / ``test_sub_list.txt``."""
from __future__ import annotations

import re
from pathlib import Path

from .base import DatasetIndexer, LayoutError, VideoRecord, match, split_parts

_LIST_FILES = {"train": "train_sub_list.txt", "test": "test_sub_list.txt"}
_CAMERAS = {"android": "mp4", "laptop": "mov"}
_ATTACKS = {"ipad_video": "replay", "iphone_video": "replay", "printed_photo": "print"}
_REAL = r"real_client(\d{3})_(android|laptop)_(SD|HD)_scene01\.(mp4|mov)"
_ATTACK = r"attack_client(\d{3})_(android|laptop)_(SD|HD)_(ipad_video|iphone_video|printed_photo)_scene01\.(mp4|mov)"
VIDEOS_PER_SUBJECT = 8


def read_subject_list(path: Path) -> list[int]:
    """Subject ids, one per line, written with or without leading zeros (``client`` prefix tolerated)."""
    ids = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        text = line.strip()
        if not text:
            continue
        m = re.fullmatch(r"(?:client)?0*(\d+)", text, flags=re.IGNORECASE)
        if not m:
            raise LayoutError(f"{path}:{lineno}: {text!r} is not a subject id")
        ids.append(int(m.group(1)))
    return ids


class MsuIndexer(DatasetIndexer):
    name = "msu"
    title = "MSU-MFSD"
    domain = "M"
    expected_per_split = {"train": 120, "test": 160}
    layout = """\
  ROOT/
    train_sub_list.txt   test_sub_list.txt      (one subject id per line)
    scene01/real/real_client002_android_SD_scene01.mp4
    scene01/real/real_client002_laptop_SD_scene01.mov
    scene01/attack/attack_client002_android_SD_ipad_video_scene01.mp4
                   (... _iphone_video_ ..., ... _printed_photo_ ...)"""

    full_subjects = {"train": 15, "test": 20}

    def __init__(self):
        self._split_of: dict[int, str] = {}

    def split_dirs(self):
        return ("scene01",)

    def prepare(self, root):
        self._split_of = {}
        for split, filename in _LIST_FILES.items():
            path = root / filename
            if not path.is_file():
                raise LayoutError(f"{path}: missing protocol file. MSU-MFSD's split is defined only by "
                                  f"{' and '.join(_LIST_FILES.values())} in the dataset root; "
                                  f"it is never guessed.\nExpected layout:\n{self.layout}")
            for subject in read_subject_list(path):
                other = self._split_of.get(subject)
                if other and other != split:
                    raise LayoutError(f"{path}: subject {subject} is listed for both {other} and {split}")
                self._split_of[subject] = split
        counts = {s: sum(v == s for v in self._split_of.values()) for s in _LIST_FILES}
        note = f"split lists: {counts['train']} train and {counts['test']} test subjects"
        if counts != self.full_subjects:
            note += f" (the full dataset lists {self.full_subjects['train']} and {self.full_subjects['test']})"
        return [note]

    def place(self, relpath):
        parts = split_parts(relpath)
        if len(parts) != 3 or parts[0].lower() != "scene01" or parts[1].lower() not in ("real", "attack"):
            return "expected scene01/real/<name> or scene01/attack/<name>"
        if parts[1].lower() == "real":
            m = match(_REAL, parts[2])
            if not m:
                return "real video name does not follow real_client<NNN>_<android|laptop>_SD_scene01.<mp4|mov>"
            client, camera = m.group(1), m.group(2).lower()
            label, attack, detail = "live", "none", ""
        else:
            m = match(_ATTACK, parts[2])
            if not m:
                return ("attack video name does not follow "
                        "attack_client<NNN>_<android|laptop>_SD_<ipad_video|iphone_video|printed_photo>_scene01")
            client, camera, detail = m.group(1), m.group(2).lower(), m.group(4).lower()
            label, attack = "spoof", _ATTACKS[detail]
        split = self._split_of.get(int(client))
        if split is None:
            return f"client {int(client)} is in neither {' nor '.join(_LIST_FILES.values())}"
        return VideoRecord(self.name, relpath, split, label, attack, f"client{client}",
                           attack_detail=detail, camera=camera)

    def expected_relpaths(self, records):
        """Every video of every subject the split lists name (and of any other subject present)."""
        expected = set()
        clients = {f"{c:03d}" for c in self._split_of} | {r.subject[len("client"):] for r in records}
        for client in clients:
            for camera, ext in _CAMERAS.items():
                expected.add(f"scene01/real/real_client{client}_{camera}_SD_scene01.{ext}")
                for detail in _ATTACKS:
                    expected.add(f"scene01/attack/attack_client{client}_{camera}_SD_{detail}_scene01.{ext}")
        return expected
