"""One copy of the samples on disk: a video's images are removed once the shards holding it are committed, a
build killed while it writes shards resumes without rewriting the committed ones, and a shard that must be
written again (a plan shifted by a changed dataset, a shard deleted) gets its videos' images back from the
shards, or names the videos to extract again, ending with the bytes of a clean build."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import pandas as pd

from pipeline.audit import audit

from test_build import build, outputs, write_config

SETTINGS = {"face": {"size": 128}, "shards": {"samples_per_shard": 5}}  # 2 frames per video: videos straddle shards


def folder_bytes(folder, exclude=None) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*")
               if p.is_file() and (exclude is None or exclude not in p.parents))


def same_bytes(tmp_path, reference) -> bool:
    """Shards and tables as a clean build's (the manifest names its own folders)."""
    built, clean = outputs(tmp_path), outputs(reference)
    del built["manifest.json"], clean["manifest.json"]
    return built == clean


def mtimes(paths) -> dict:
    return {p: p.stat().st_mtime_ns for p in paths}


def tables_and_shards_removed(tmp_path):
    """What a user removes to index a changed copy again: the build's tables (index, extraction, samples) and
    its manifest; the per-video records and the shards stay."""
    out = tmp_path / "out/t"
    for path in [*out.glob("index/*.csv"), *out.glob("extract/*.csv"), out / "shards/samples.csv"]:
        path.unlink()
    shutil.rmtree(tmp_path / "manifests")


def test_a_finished_build_keeps_the_shards_and_the_records_not_the_images(corpus, tmp_path):
    build(write_config(tmp_path, {"msu": corpus / "msu"}, **SETTINGS))
    out = tmp_path / "out/t"
    records = sorted((out / "videos").rglob("*.json"))
    assert len(records) == 16 and not list((out / "videos").rglob("*.npz"))  # straddlers' images went too
    shards = sorted((out / "shards").glob("shard-*.h5"))
    assert len(shards) == 7 and sorted(p.name for p in (out / "shards/records").iterdir()) == \
        [f"{p.name}.json" for p in shards]
    shard_total = sum(p.stat().st_size for p in shards)
    assert folder_bytes(out, exclude=out / "shards") < 0.05 * shard_total  # records and tables: a few KiB
    parts = json.loads((out / "shards/records/shard-00001.h5.json").read_text())["parts"]
    assert [(p["row"], p["offset"], p["take"]) for p in parts] == [(0, 1, 1), (1, 0, 2), (3, 0, 2)]
    assert audit(tmp_path / "manifests/t") == []


def test_a_build_killed_while_it_writes_shards_keeps_the_committed_ones(corpus, tmp_path):
    settings = {"face": {"size": 256}, "shards": {"samples_per_shard": 1}}  # 32 shards, written one by one
    reference = tmp_path / "reference"
    reference.mkdir()
    build(write_config(reference, {"msu": corpus / "msu"}, **settings))
    config = write_config(tmp_path, {"msu": corpus / "msu"}, **settings)
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "build", "--config", str(config), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    records = tmp_path / "out/t/shards/records"
    deadline = time.time() + 240
    while time.time() < deadline and not (records.is_dir() and any(records.glob("*.json"))):
        time.sleep(0.005)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    committed = mtimes(p for p in (tmp_path / "out/t/shards").glob("shard-*.h5")
                       if (records / f"{p.name}.json").is_file())
    results = mtimes(p for p in (tmp_path / "out/t/videos").rglob("*.json") if not p.name.startswith("."))
    assert 1 <= len(committed) < 32, "the build must be killed while it writes the shards"
    assert len(results) == 16
    build(config)
    assert mtimes(committed) == committed and mtimes(results) == results  # neither rewritten nor extracted again
    assert same_bytes(tmp_path, reference)
    assert not list((tmp_path / "out/t/videos").rglob("*.npz"))


def test_a_shifted_plan_restores_images_from_the_shards_and_a_lost_shard_extracts_its_videos_again(corpus, tmp_path):
    copy = tmp_path / "msu"
    shutil.copytree(corpus / "msu", copy)
    config = write_config(tmp_path, {"msu": copy}, **SETTINGS)
    build(config)
    gone = sorted(copy.rglob("*.mov"))[1]  # an early video: every later sample moves to another shard or row
    gone.unlink()
    reference = tmp_path / "reference"
    reference.mkdir()
    build(write_config(reference, {"msu": copy}, **SETTINGS))
    records = mtimes(p for p in (tmp_path / "out/t/videos").rglob("*.json"))
    for shard in (tmp_path / "out/t/shards").glob("shard-*.h5"):  # as a copy that did not keep mtimes
        os.utime(shard, ns=(shard.stat().st_atime_ns, shard.stat().st_mtime_ns + 10**9))
    tables_and_shards_removed(tmp_path)
    build(config)
    assert same_bytes(tmp_path, reference)  # from images restored out of the old shards
    assert len(records) == 16 and mtimes(records) == records  # no video extracted again (the gone one's is unused)
    assert not list((tmp_path / "out/t/videos").rglob("*.npz"))

    lost = tmp_path / "out/t/shards/shard-00002.h5"
    lost.unlink()
    tables_and_shards_removed(tmp_path)
    failed = build(config, check=False)
    assert failed.returncode == 1
    named = [line for line in failed.stderr.splitlines() if "shards no longer hold all its samples" in line]
    assert named and "run the build again to extract that video anew" in named[0]
    samples = pd.read_csv(reference / "manifests/t/samples.csv")
    held = set(samples.query("shard == 'shard-00002.h5'")["video_id"])
    removed = {p for p in records if not p.exists()}
    assert removed and {str(p.relative_to(tmp_path / "out/t/videos")).rsplit(".", 2)[0] for p in removed} <= held
    build(config)
    assert same_bytes(tmp_path, reference)
    assert audit(tmp_path / "manifests/t") == []
