"""OULU-NPU: ``Train_files/ Dev_files/ Test_files/`` with ``<phone>_<session>_<user>_<file>.avi``."""
from __future__ import annotations

import warnings
from pathlib import Path

from .base import DatasetIndexer, IndexWarning, VideoRecord, match, split_parts
from .oulu_protocols import check_protocol_files

_SPLITS = {"train_files": ("train", range(1, 21)),
           "dev_files": ("devel", range(21, 36)),
           "test_files": ("test", range(36, 56))}
# file number -> (label, attack, attack_detail)
_FILES = {1: ("live", "none", ""), 2: ("spoof", "print", "printer1"), 3: ("spoof", "print", "printer2"),
          4: ("spoof", "replay", "display1"), 5: ("spoof", "replay", "display2")}
_PHONES, _SESSIONS = range(1, 7), range(1, 4)


class OuluIndexer(DatasetIndexer):
    name = "oulu"
    title = "OULU-NPU"
    domain = "O"
    expected_per_split = {"train": 1800, "devel": 1350, "test": 1800}
    layout = """\
  ROOT/
    Train_files/ (users 1-20)  Dev_files/ (21-35)  Test_files/ (36-55)
      <phone 1-6>_<session 1-3>_<user 01-55>_<file 1-5>.avi, e.g. 1_1_01_1.avi
      (file 1 live, 2-3 print, 4-5 replay; eye-position .txt files beside them are ignored)"""

    def split_dirs(self):
        return ("Train_files", "Dev_files", "Test_files")

    def prepare(self, root):
        """Check the copy's ``Protocols/`` lists, when it has them, against the protocols' rules; every
        disagreement is a warning naming the file and line."""
        if not (Path(root) / "Protocols").is_dir():
            return []
        problems = check_protocol_files(root)
        if problems:
            shown = "\n".join(f"    {p}" for p in problems[:20])
            more = f"\n    ... and {len(problems) - 20} more" if len(problems) > 20 else ""
            warnings.warn(f"{root}: the Protocols/ lists disagree with OULU-NPU's protocol rules in "
                          f"{len(problems)} place(s):\n{shown}{more}", IndexWarning, stacklevel=4)
            return [f"Protocols/: {len(problems)} disagreement(s) with the protocol rules (see the warning)"]
        return ["Protocols/: every list of protocols 1-4 agrees with the protocol rules"]

    def place(self, relpath):
        parts = split_parts(relpath)
        if len(parts) != 2 or parts[0].lower() not in _SPLITS:
            return "expected <Train_files|Dev_files|Test_files>/<name>.avi"
        split, users = _SPLITS[parts[0].lower()]
        m = match(r"([1-6])_([1-3])_(\d{2})_([1-5])\.avi", parts[1])
        if not m:
            return "name does not follow <phone 1-6>_<session 1-3>_<user NN>_<file 1-5>.avi"
        phone, session, user, number = (int(g) for g in m.groups())
        if user not in users:
            return f"user {user} does not belong to {parts[0]} (users {users.start}-{users.stop - 1})"
        label, attack, detail = _FILES[number]
        return VideoRecord(self.name, relpath, split, label, attack, f"user{user:02d}",
                           attack_detail=detail, camera=f"phone{phone}", session=str(session))

    def expected_relpaths(self, records):
        folders = {(r.relpath.split("/")[0], r.subject[len("user"):]) for r in records}
        return {f"{folder}/{p}_{s}_{user}_{f}.avi"
                for folder, user in folders for p in _PHONES for s in _SESSIONS for f in _FILES}
