"""Outputs honour the umask: a build and a run are readable by the team under umask 022 and private under
077, as files made by a plain ``open()`` would be."""
from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pandas as pd
import pytest

from fas_train.train import run
from pipeline.atomic import TempFile, write_csv, write_json, write_text

from test_train import config


def modes(folder) -> dict:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_atomic_writes_get_the_mode_open_gives(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        write_text(tmp_path / "a.txt", "x")
        write_json(tmp_path / "b.json", {"a": 1})
        write_csv(tmp_path / "c.csv", pd.DataFrame({"a": [1]}))
        tmp = TempFile(tmp_path / "d.h5", suffix=".tmp.h5")
        tmp.path.write_bytes(b"data")
        tmp.commit()
        with open(tmp_path / "plain", "w"):
            pass
    finally:
        os.umask(old)
    assert set(modes(tmp_path).values()) == {mode}
    assert sorted(modes(tmp_path)) == ["a.txt", "b.json", "c.csv", "d.h5", "plain"]


def test_a_build_made_under_umask_022_is_readable_by_others(train_build):
    manifest = json.loads((train_build / "manifest.json").read_text())
    build_dir = Path(manifest["shard_dir"]).parent  # the build folder: shards, per-video results, tables
    found = {**modes(train_build), **modes(build_dir)}
    assert any(name.endswith(".h5") for name in found)
    assert any(name.startswith("videos/") and name.endswith(".json") for name in found)  # per-video records
    assert {name: m for name, m in found.items() if m != 0o644} == {}


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600)])
def test_a_run_folder_follows_the_umask(train_build, tmp_path, umask, mode):
    out = tmp_path / "run"
    old = os.umask(umask)
    try:
        run(config(train_build, out, 2, eval_every=1))
    finally:
        os.umask(old)
    found = modes(out)
    assert {"checkpoint.pt", "best.pt", "run.json", "report.json", "scores.csv", "roc.png", "metrics.jsonl",
            "metrics.csv"} <= set(found)
    assert {name: m for name, m in found.items() if m != mode} == {}
    assert stat.S_IMODE(out.stat().st_mode) == 0o777 & ~umask
