"""Shared parts of the dataset indexers: the video record, layout errors, and the directory scan.

An indexer reads a user's copy of one dataset in its official layout and places every video file:
split, label (``live``/``spoof``), attack family and subject. A file it cannot place is never guessed;
it is reported with the reason.
"""
from __future__ import annotations

import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path

VIDEO_EXTENSIONS = frozenset({".avi", ".mov", ".mp4", ".m4v", ".mkv", ".wmv", ".flv", ".3gp", ".webm"})
SPLITS = ("train", "devel", "test")
LABELS = ("live", "spoof")
ATTACKS = ("none", "print", "replay", "mask")


class LayoutError(ValueError):
    """The root given is not the named dataset in its official layout (or a protocol file is missing)."""


class IndexWarning(UserWarning):
    """An index was built, but the copy is incomplete or holds files that could not be placed."""


@dataclass(frozen=True)
class VideoRecord:
    """One placed video. ``relpath`` is relative to the dataset root, with forward slashes."""

    dataset: str
    relpath: str
    split: str
    label: str
    attack: str
    subject: str
    attack_detail: str = ""
    camera: str = ""
    session: str = ""
    light: str = ""
    support: str = ""

    def __post_init__(self):
        if self.split not in SPLITS:
            raise ValueError(f"{self.relpath}: split {self.split!r} is not one of {SPLITS}")
        if self.label not in LABELS:
            raise ValueError(f"{self.relpath}: label {self.label!r} is not one of {LABELS}")
        if self.attack not in ATTACKS:
            raise ValueError(f"{self.relpath}: attack {self.attack!r} is not one of {ATTACKS}")
        if (self.label == "live") != (self.attack == "none"):
            raise ValueError(f"{self.relpath}: label {self.label!r} contradicts attack {self.attack!r}")

    @property
    def video_id(self) -> str:
        """Stable id, unique across datasets: ``<dataset>/<relpath without extension>``."""
        return f"{self.dataset}/{os.path.splitext(self.relpath)[0]}"


@dataclass
class ScanResult:
    """What an indexer found under a root."""

    records: list[VideoRecord]
    unplaced: list[tuple[str, str]]  # (relpath, reason)
    skipped: list[tuple[str, str]]  # (relpath, reason): deliberately not indexed, e.g. Replay's enroll/
    missing: list[str]  # expected relpaths (given the subjects present) that are absent
    notes: list[str] = field(default_factory=list)


class DatasetIndexer(ABC):
    """Base class of one dataset's indexer. Subclasses define the layout and the file-name grammar."""

    name: str  # cli name, e.g. "casia"
    title: str  # e.g. "CASIA-FASD"
    domain: str  # one-letter protocol code, e.g. "C"
    expected_per_split: dict[str, int]  # videos per split in the full dataset
    expected_total: int | None = None  # when only a total is documented
    expected_is_approximate: bool = False
    layout: str  # the expected tree, shown when a root does not match

    def total_expected(self) -> int:
        """Videos in the full dataset (as indexed, i.e. without deliberately skipped ones)."""
        return self.expected_total or sum(self.expected_per_split.values())

    def check_layout(self, root: Path) -> None:
        """Raise LayoutError unless ``root`` looks like this dataset."""
        if not root.is_dir():
            raise LayoutError(f"{root}: not a directory. Expected the {self.title} root:\n{self.layout}")
        found = [d for d in self.split_dirs() if _child_dir(root, d) is not None]
        if not found:
            raise LayoutError(self._layout_message(root, f"none of {', '.join(self.split_dirs())} found"))

    def split_dirs(self) -> tuple[str, ...]:
        """Top-level folder names of which at least one must exist."""
        return ()

    @abstractmethod
    def place(self, relpath: str) -> VideoRecord | str:
        """Return the record for a video path, or the reason it cannot be placed."""

    @abstractmethod
    def expected_relpaths(self, records: list[VideoRecord]) -> set[str]:
        """The relpaths a complete copy has for the subjects present in ``records`` (compared case-insensitively)."""

    def skip_reason(self, relpath: str) -> str | None:
        """Why a video file is deliberately not indexed, or None."""
        return None

    def prepare(self, root: Path) -> list[str]:
        """Read protocol files needed to place videos; return notes for the summary."""
        return []

    def scan(self, root: Path) -> ScanResult:
        """Walk ``root`` in sorted order and place every video file found."""
        root = Path(root)
        self.check_layout(root)
        notes = self.prepare(root)
        records, unplaced, skipped, repeated = [], [], [], []
        for relpath in _walk_videos(root, repeated):
            reason = self.skip_reason(relpath)
            if reason:
                skipped.append((relpath, reason))
                continue
            placed = self.place(relpath)
            if isinstance(placed, str):
                unplaced.append((relpath, placed))
            else:
                records.append(placed)
        seen = {r.relpath.lower() for r in records}
        missing = sorted(p for p in self.expected_relpaths(records) if p.lower() not in seen)
        if repeated:
            notes.append(f"{len(repeated)} folder(s) reached again through a symbolic link were not followed "
                         f"(each folder is read once, by its real path): {', '.join(repeated)}")
        return ScanResult(records, unplaced, skipped, missing, notes)

    def _layout_message(self, root: Path, problem: str) -> str:
        hint = ""
        for child in sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []:
            if any(_child_dir(child, d) is not None for d in self.split_dirs()):
                hint = f"\nThe layout was found one level down: did you mean --root {child}?"
                break
        return (f"{root} is not a {self.title} root ({problem}).\n"
                f"Expected layout:\n{self.layout}{hint}")


def _child_dir(root: Path, name: str) -> Path | None:
    """The sub-folder of ``root`` named ``name``, compared case-insensitively."""
    exact = root / name
    if exact.is_dir():
        return exact
    for child in root.iterdir():
        if child.is_dir() and child.name.lower() == name.lower():
            return child
    return None


def _walk_videos(root: Path, repeated: list):
    """Yield relpaths (forward slashes) of video files under root, sorted, following symlinks, each folder once
    by its real path: a folder reached again (a link loop such as ``train/loop -> ..``, or a second link to
    it) is not entered, and its relpath is appended to ``repeated``.

    Hidden files and folders (names starting with a dot: temporary files, macOS ``._`` forks) are not videos.
    """
    visited = set()
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        rel_dir = os.path.relpath(dirpath, root)
        real = os.path.realpath(dirpath)
        if real in visited:
            dirnames[:] = []
            repeated.append(rel_dir.replace(os.sep, "/"))
            continue
        visited.add(real)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in VIDEO_EXTENSIONS:
                rel = name if rel_dir == "." else f"{rel_dir}/{name}"
                yield rel.replace(os.sep, "/")


def split_parts(relpath: str) -> list[str]:
    """Path components of a relpath."""
    return relpath.split("/")


def match(pattern: str, text: str) -> re.Match | None:
    """Case-insensitive full match."""
    return re.fullmatch(pattern, text, flags=re.IGNORECASE)
