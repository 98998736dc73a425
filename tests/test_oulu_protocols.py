"""OULU-NPU's protocols 1-4 by the dataset's rules: the published per-part counts on a full-size naming tree,
and the lists a copy ships checked at indexing, every disagreement named with its file and line."""
from __future__ import annotations

import subprocess
import sys
import warnings

import pytest

from pipeline.datasets import IndexWarning
from pipeline.datasets.oulu_protocols import EXPECTED, check_protocol_files, folds, list_path, members
from pipeline.index import index_dataset


def full_tree(root):
    """Every OULU-NPU video name as a file holding its own name (the indexer only hashes them; distinct bytes,
    as real videos have), 4,950 in all."""
    for folder, users in (("Train_files", range(1, 21)), ("Dev_files", range(21, 36)), ("Test_files", range(36, 56))):
        (root / folder).mkdir(parents=True)
        for u in users:
            for p in range(1, 7):
                for s in range(1, 4):
                    for f in range(1, 6):
                        (root / folder / f"{p}_{s}_{u:02d}_{f}.avi").write_text(f"{p}_{s}_{u:02d}_{f}")


def write_lists(root):
    """The Protocols folder a copy ships, written from the rules (label +1 live, -1 print, -2 replay)."""
    labels = {1: "+1", 2: "-1", 3: "-1", 4: "-2", 5: "-2"}
    for protocol in "1234":
        for fold in folds(protocol):
            for part in ("train", "devel", "test"):
                path = list_path(root, protocol, fold, part)
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("".join(f"{labels[int(n[-1])]},{n}\n" for n in members(protocol, fold, part)))


def test_the_rules_give_the_published_counts_on_a_full_naming_tree(tmp_path):
    full_tree(tmp_path)
    index = index_dataset("oulu", tmp_path, quiet=True)
    names = set(index.table["relpath"].str.split("/").str[-1].str[:-4])
    assert len(names) == 4950
    for protocol in "1234":
        for fold in folds(protocol):
            counts = {part: len(members(protocol, fold, part)) for part in ("train", "devel", "test")}
            assert counts == EXPECTED[protocol], (protocol, fold)
            for part in ("train", "devel", "test"):
                assert set(members(protocol, fold, part)) <= names
    assert EXPECTED["1"] == {"train": 1200, "devel": 900, "test": 600}
    p4 = members("4", 2, "test")
    assert all(n.startswith("2_3_") and n[-1] in "135" for n in p4)  # phone 2, session 3, files 1, 3, 5
    assert not any(n.startswith("2_") for n in members("3", 2, "train"))  # the left-out phone
    with pytest.raises(ValueError, match="takes a fold 1-6"):
        members("3", None, "train")


def test_lists_that_disagree_with_the_rules_are_named_at_indexing(tmp_path):
    full_tree(tmp_path)
    write_lists(tmp_path)
    assert check_protocol_files(tmp_path) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error", IndexWarning)
        index = index_dataset("oulu", tmp_path, quiet=True)  # agreeing lists: no warning
    assert any("Protocols" in note and "agree" in note for note in index.summary["notes"])
    wrong = list_path(tmp_path, "3", 4, "train")
    lines = wrong.read_text().splitlines()
    lines[6] = "+1,4_1_01_1"  # phone 4 is fold 4's left-out phone: it cannot train
    wrong.write_text("\n".join(lines) + "\n")
    list_path(tmp_path, "2", None, "test").unlink()
    problems = check_protocol_files(tmp_path)
    assert f"{wrong}:7: 4_1_01_1 does not belong to protocol 3 fold 4 train by the dataset's rules" in problems
    assert any(p.startswith(f"{wrong}: lacks 1 video(s)") for p in problems)
    assert f"{list_path(tmp_path, '2', None, 'test')}: missing" in problems
    result = subprocess.run([sys.executable, "-m", "pipeline", "index", "--dataset", "oulu", "--root", str(tmp_path),
                             "--out", str(tmp_path / "oulu.csv"), "--quiet"], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0 and f"{wrong}:7: 4_1_01_1 does not belong" in result.stderr
