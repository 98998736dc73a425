"""OULU-NPU's four official protocols, from the dataset's definition (file names are
``<phone>_<session>_<user>_<file>``; users 1-20 train, 21-35 development, 36-55 test in every protocol):

- Protocol 1 (environment): train and development on sessions 1-2, test on session 3.
- Protocol 2 (attack instrument): train and development on files 1, 2, 4 (live, print 1, replay 1), test on
  files 1, 3, 5.
- Protocol 3 (camera), folds 1-6: fold k leaves phone k out of training and development and tests on it alone.
- Protocol 4 (all three), folds 1-6: train and development on sessions 1-2, files 1, 2, 4, phones other than
  k; test on session 3, files 1, 3, 5, phone k.

:func:`members` gives each part's videos by these rules; :func:`check_protocol_files` compares them with the
lists a copy ships in ``Protocols/Protocol_N/{Train,Dev,Test}[_k].txt`` (lines ``label,name``), naming every
disagreement with its file and line.
"""
from __future__ import annotations

from pathlib import Path

PHONES, SESSIONS, FILES = range(1, 7), range(1, 4), range(1, 6)
USERS = {"train": range(1, 21), "devel": range(21, 36), "test": range(36, 56)}
PART_FILES = {"train": "Train", "devel": "Dev", "test": "Test"}  # the lists' file names
FOLDED = ("3", "4")  # protocols with six folds (one per left-out phone)

# per protocol, a rule (phone, session, file, fold) -> bool for training/development and one for test
_RULES = {
    "1": (lambda p, s, f, k: s in (1, 2), lambda p, s, f, k: s == 3),
    "2": (lambda p, s, f, k: f in (1, 2, 4), lambda p, s, f, k: f in (1, 3, 5)),
    "3": (lambda p, s, f, k: p != k, lambda p, s, f, k: p == k),
    "4": (lambda p, s, f, k: p != k and s in (1, 2) and f in (1, 2, 4),
          lambda p, s, f, k: p == k and s == 3 and f in (1, 3, 5)),
}
# videos per part of the full dataset, by the rules (per fold for protocols 3 and 4)
EXPECTED = {"1": {"train": 1200, "devel": 900, "test": 600}, "2": {"train": 1080, "devel": 810, "test": 1080},
            "3": {"train": 1500, "devel": 1125, "test": 300}, "4": {"train": 600, "devel": 450, "test": 60}}


def folds(protocol: str) -> list[int | None]:
    """The folds of a protocol (None for protocols 1 and 2)."""
    return list(PHONES) if protocol in FOLDED else [None]


def members(protocol: str, fold: int | None, part: str) -> list[str]:
    """Names (``p_s_uu_f``) of the full dataset's videos in ``part`` (train, devel, test) of a protocol/fold."""
    if protocol not in _RULES:
        raise ValueError(f"OULU-NPU has protocols 1-4, not {protocol!r}")
    if (fold is None) != (protocol not in FOLDED) or (fold is not None and fold not in PHONES):
        raise ValueError(f"protocol {protocol} takes {'a fold 1-6' if protocol in FOLDED else 'no fold'}, not {fold}")
    rule = _RULES[protocol][part == "test"]
    return [f"{p}_{s}_{u:02d}_{f}" for u in USERS[part] for p in PHONES for s in SESSIONS for f in FILES
            if rule(p, s, f, fold)]


def list_path(root: Path, protocol: str, fold: int | None, part: str) -> Path:
    """Where a copy keeps a part's list: ``Protocols/Protocol_N/Train.txt``, ``.../Train_k.txt`` for folds."""
    name = PART_FILES[part] + (f"_{fold}" if fold is not None else "")
    return Path(root) / "Protocols" / f"Protocol_{protocol}" / f"{name}.txt"


def check_protocol_files(root: Path) -> list[str]:
    """Disagreements between the rules and the lists under ``root/Protocols`` (empty when they agree or a copy
    has no such folder), each naming the file and line, or the videos a list lacks."""
    problems = []
    if not (Path(root) / "Protocols").is_dir():
        return problems
    for protocol in _RULES:
        for fold in folds(protocol):
            for part in USERS:
                path = list_path(root, protocol, fold, part)
                if not path.is_file():
                    problems.append(f"{path}: missing")
                    continue
                expected, seen = set(members(protocol, fold, part)), set()
                for number, line in enumerate(path.read_text().splitlines(), start=1):
                    if not line.strip():
                        continue
                    name = line.split(",")[-1].strip()
                    seen.add(name)
                    if name not in expected:
                        problems.append(f"{path}:{number}: {name} does not belong to protocol {protocol}"
                                        + (f" fold {fold}" if fold else "") + f" {part} by the dataset's rules")
                lacking = sorted(expected - seen)
                if lacking:
                    problems.append(f"{path}: lacks {len(lacking)} video(s) the rules put there, e.g. "
                                    f"{', '.join(lacking[:3])}")
    return problems
