"""Builders of dataset trees with the official file names (empty or tiny files), for indexer tests."""
from __future__ import annotations

from pathlib import Path

CASIA_STEMS = ["1", "2", "HR_1", "3", "4", "HR_2", "5", "6", "HR_3", "7", "8", "HR_4"]


def touch(root: Path, relpath: str, content: bytes = b"") -> Path:
    path = root / relpath
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content or relpath.encode())  # distinct bytes, so hashes differ
    return path


def casia_tree(root: Path, train=range(1, 21), test=range(1, 31)) -> list[str]:
    names = [f"train_release/{s}/{stem}.avi" for s in train for stem in CASIA_STEMS]
    names += [f"test_release/{s}/{stem}.avi" for s in test for stem in CASIA_STEMS]
    for name in names:
        touch(root, name)
    return names


def replay_tree(root: Path, clients=None) -> list[str]:
    clients = clients or {"train": range(1, 16), "devel": range(16, 31), "test": range(31, 51)}
    names = []
    for split, ids in clients.items():
        for c in ids:
            for light in ("controlled", "adverse"):
                for k in (1, 2):
                    names.append(f"{split}/real/client{c:03d}_session01_webcam_authenticate_{light}_{k}.mov")
                for support in ("fixed", "hand"):
                    for medium, content in (("print", "highdef_photo"), ("highdef", "highdef_photo"),
                                            ("highdef", "highdef_video"), ("mobile", "mobile_photo"),
                                            ("mobile", "mobile_video")):
                        names.append(f"{split}/attack/{support}/attack_{medium}_client{c:03d}_session01_"
                                     f"{content}_{light}.mov")
    for name in names:
        touch(root, name)
    touch(root, "enroll/client001_session01_webcam_enroll_controlled_1.mov")
    return names


def msu_tree(root: Path, train=(2, 3, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 21, 22, 23),
             test=tuple(range(24, 36)) + (1, 4, 15, 16, 17, 18, 19, 20), list_format="{}") -> list[str]:
    names = []
    for c in list(train) + list(test):
        for camera, ext in (("android", "mp4"), ("laptop", "mov")):
            names.append(f"scene01/real/real_client{c:03d}_{camera}_SD_scene01.{ext}")
            for detail in ("ipad_video", "iphone_video", "printed_photo"):
                names.append(f"scene01/attack/attack_client{c:03d}_{camera}_SD_{detail}_scene01.{ext}")
    for name in names:
        touch(root, name)
    (root / "train_sub_list.txt").write_text("".join(list_format.format(c) + "\n" for c in train))
    (root / "test_sub_list.txt").write_text("".join(list_format.format(c) + "\n" for c in test))
    return names


def oulu_tree(root: Path, users=None, phones=range(1, 7), sessions=range(1, 4)) -> list[str]:
    users = users or {"Train_files": range(1, 21), "Dev_files": range(21, 36), "Test_files": range(36, 56)}
    names = []
    for folder, ids in users.items():
        for u in ids:
            for p in phones:
                for s in sessions:
                    for f in range(1, 6):
                        names.append(f"{folder}/{p}_{s}_{u:02d}_{f}.avi")
                        touch(root, f"{folder}/{p}_{s}_{u:02d}_{f}.txt")  # eye positions, not a video
    for name in names:
        touch(root, name)
    return names
