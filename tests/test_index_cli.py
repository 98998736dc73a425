"""The index command: files written atomically and deterministically, summary contents, exit codes."""
from __future__ import annotations

import hashlib
import json
import subprocess
import sys

import pytest

from layouts import casia_tree, touch
from pipeline.datasets import IndexWarning
from pipeline.index import index_dataset, read_table, write_index


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "pipeline", *args], capture_output=True, text=True, timeout=120)


def test_index_command_writes_table_and_summary(tmp_path):
    casia_tree(tmp_path / "casia", train=[1, 2], test=[1])
    out = tmp_path / "manifests" / "casia.csv"
    result = run_cli("index", "--dataset", "casia", "--root", str(tmp_path / "casia"), "--out", str(out), "--quiet")
    assert result.returncode == 0, result.stderr
    assert "incomplete CASIA-FASD copy: 36 of 600" in result.stderr
    assert "train  live 6; spoof 18 (print 12, replay 6)" in result.stdout
    table = read_table(out)
    summary = json.loads(out.with_suffix(".json").read_text())
    assert len(table) == summary["videos"] == 36
    assert summary["counts"]["test"]["spoof"] == {"print": 6, "replay": 3}
    assert summary["total_bytes"] == int(table["size_bytes"].sum())
    assert summary["table_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert summary["tool"]["name"] == "fas-dg" and summary["tool"]["version"]
    row = table.set_index("relpath").loc["train_release/2/HR_4.avi"]
    assert row["sha256"] == hashlib.sha256(b"train_release/2/HR_4.avi").hexdigest()
    assert not [p.name for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary files left
    again = run_cli("index", "--dataset", "casia", "--root", str(tmp_path / "casia"), "--out", str(out), "--quiet",
                    "--json")
    printed = json.loads(again.stdout)  # nothing but the JSON on stdout
    assert again.returncode == 0 and printed["table_path"] == str(out)
    assert printed["summary_path"] == str(out.with_suffix(".json"))
    rewritten = json.loads(out.with_suffix(".json").read_text())  # the same copy: its time is all that moved
    assert {k: printed[k] for k in rewritten} == rewritten and printed["counts"] == summary["counts"]


def test_index_table_is_deterministic(tmp_path):
    casia_tree(tmp_path / "casia", train=[3], test=[2])
    paths = []
    for name in ("a.csv", "b.csv"):
        with pytest.warns(IndexWarning, match="incomplete"):
            index = index_dataset("casia", tmp_path / "casia", quiet=True, workers=1 if name == "a.csv" else 3)
        paths.append(write_index(index, tmp_path / name)[0])
    assert paths[0].read_bytes() == paths[1].read_bytes()


def test_index_command_fails_clearly_on_a_wrong_root(tmp_path):
    touch(tmp_path / "notcasia", "videos/clip.avi")
    result = run_cli("index", "--dataset", "casia", "--root", str(tmp_path / "notcasia"),
                     "--out", str(tmp_path / "x.csv"), "--quiet")
    assert result.returncode == 2
    assert "is not a CASIA-FASD root" in result.stderr and "train_release/1/" in result.stderr
    assert not (tmp_path / "x.csv").exists()


def test_index_out_naming_a_folder_is_refused_before_hashing(tmp_path):
    casia_tree(tmp_path / "casia", train=[1], test=[])
    (tmp_path / "tables").mkdir()
    result = run_cli("index", "--dataset", "casia", "--root", str(tmp_path / "casia"), "--out",
                     str(tmp_path / "tables"), "--quiet")
    assert result.returncode == 2 and "sha256" not in result.stderr
    assert f"{tmp_path / 'tables'}: is a folder; --out names the table to write, e.g. " in result.stderr
    assert list((tmp_path / "tables").iterdir()) == []


def test_unreadable_video_is_reported_not_indexed(tmp_path):
    casia_tree(tmp_path, train=[1], test=[])
    broken = tmp_path / "train_release/1/HR_2.avi"
    broken.unlink()
    broken.symlink_to(tmp_path / "nowhere.avi")  # a dangling link: listed, but cannot be read
    with pytest.warns(IndexWarning) as caught:
        index = index_dataset("casia", tmp_path, quiet=True)
    assert any("HR_2.avi: unreadable: No such file" in str(w.message) for w in caught)
    assert "train_release/1/HR_2.avi" not in set(index.table["relpath"])
    (entry,) = [u for u in index.summary["unplaced"] if u["relpath"] == "train_release/1/HR_2.avi"]
    assert entry["reason"].startswith("unreadable")


def test_a_symlink_loop_is_followed_once_and_files_with_the_same_content_are_listed(tmp_path):
    root = tmp_path / "casia"
    casia_tree(root, train=[1], test=[1])
    (root / "train_release/loop").symlink_to("..")  # one file must stay one video
    (root / "test_release/1/HR_1.avi").write_bytes((root / "train_release/1/HR_1.avi").read_bytes())
    with pytest.warns(IndexWarning) as caught:
        index = index_dataset("casia", root, quiet=True, workers=1)
    assert len(index.table) == 24 and index.table["relpath"].is_unique
    assert not any("loop" in relpath for relpath in index.table["relpath"])
    assert any("train_release/loop" in note and "not followed" in note for note in index.summary["notes"])
    assert index.summary["same_content"] == [{"sha256": hashlib.sha256(b"train_release/1/HR_1.avi").hexdigest(),
                                              "relpaths": ["test_release/1/HR_1.avi", "train_release/1/HR_1.avi"]}]
    said = [str(w.message) for w in caught]
    assert any("2 files share their content" in m and "test_release/1/HR_1.avi, train_release/1/HR_1.avi" in m
               for m in said)


def flip_keeping_stat(path, mtime_ns=None) -> None:
    """Change one byte of a file, its size kept; its mtime restored, or set to ``mtime_ns``."""
    import os
    before = path.stat()
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    os.utime(path, ns=(before.st_atime_ns, before.st_mtime_ns if mtime_ns is None else mtime_ns))


def test_an_index_of_the_same_copy_reads_only_the_files_that_changed(tmp_path, monkeypatch):
    import pipeline.index
    from pipeline.index import files_path, read_known
    root = tmp_path / "casia"
    casia_tree(root, train=[1], test=[1])
    out = tmp_path / "casia.csv"
    first = index_dataset("casia", root, quiet=True)
    write_index(first, out)
    record = json.loads(files_path(out).read_text())
    assert (record["dataset"], record["root"]) == ("casia", str(root.resolve()))
    assert {k: v[2] for k, v in record["files"].items()} == dict(zip(first.table["relpath"], first.table["sha256"]))
    changed, sneaky = root / "train_release/1/1.avi", root / "test_release/1/2.avi"
    flip_keeping_stat(changed, mtime_ns=changed.stat().st_mtime_ns + 10**9)  # a new mtime: read again
    flip_keeping_stat(sneaky)  # the same size and mtime: taken as unchanged (a build's workers still check)
    read = []
    real = pipeline.index.hash_files
    monkeypatch.setattr(pipeline.index, "hash_files", lambda paths, **kw: read.extend(paths) or real(paths, **kw))
    second = index_dataset("casia", root, quiet=True, known=read_known(out, "casia", root))
    assert read == [root.resolve() / "train_release/1/1.avi"] and second.summary["hashes_reused"] == 23
    old, new = (t.set_index("relpath")["sha256"] for t in (first.table, second.table))
    name = "train_release/1/1.avi"
    assert new[name] == hashlib.sha256(changed.read_bytes()).hexdigest() != old[name]
    assert (new.drop(name) == old.drop(name)).all()
    assert index_dataset("casia", root, quiet=True).summary["hashes_reused"] == 0
    with pytest.raises(ValueError, match="an index of casia at .*, not of msu at"):
        read_known(out, "msu", root)
    with pytest.raises(ValueError, match="not of casia at"):
        read_known(out, "casia", tmp_path)
    files_path(out).unlink()  # a table written before file records existed
    assert read_known(out, "casia", root) == {}
