"""Bad things that happen to real builds: a full disk (a real tmpfs where the test may mount one, else the
free-space reading injected), a truncated video, a source changed after indexing, a cluster without workers,
temporary files left by a kill. Each is named, loses nothing finished, and resumes to the same bytes."""
from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from pipeline.hashing import sha256_file

from test_build import build, outputs, write_config


@contextlib.contextmanager
def small_disk(path: Path, megabytes: int):
    """A tmpfs of ``megabytes`` at ``path`` (yields a resize function), or None where mounting is not allowed."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={megabytes}m", "tmpfs", str(path)],
                             capture_output=True).returncode == 0
    try:
        yield (lambda mb: subprocess.run(["mount", "-o", f"remount,size={mb}m", str(path)], check=True)) \
            if mounted else None
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(path)], capture_output=True)


def shard_bytes(root: Path) -> dict:
    return {p.name: p.read_bytes() for p in sorted((root / "out/t/shards").glob("*.h5"))}


def test_a_full_disk_while_shards_are_written_is_named_cleaned_up_and_resumes_identically(corpus, tmp_path,
                                                                                        monkeypatch):
    roots = {"msu": corpus / "msu"}
    settings = {"face": {"size": 256}, "shards": {"samples_per_shard": 512}}
    reference = tmp_path / "reference"
    reference.mkdir()
    build(write_config(reference, roots, **settings))  # 32 samples: results and the shard about 19 MiB each
    with small_disk(tmp_path / "disk", 30) as resize:
        disk = tmp_path / "disk"
        config = write_config(disk, roots, **settings)
        if resize is None:  # no tmpfs here: the free-space reading says the disk is nearly full
            import pipeline.shards
            from pipeline.build import run_build
            real = shutil.disk_usage
            monkeypatch.setattr(pipeline.shards.shutil, "disk_usage",
                                lambda p: real(p)._replace(free=5 << 20))
            assert run_build(config, quiet=True) == 1
            monkeypatch.setattr(pipeline.shards.shutil, "disk_usage", real)
        else:
            failed = build(config, check=False)
            assert failed.returncode == 1
            assert "shard-*.h5: not enough free disk space to write the build's 1 shard(s), 1 at a time (each " \
                "video's images are removed once its shards are committed): it needs up to" in failed.stderr
            assert "Segmentation fault" not in failed.stderr
            resize(80)
        shards = disk / "out/t/shards"
        assert not list(shards.glob(".*")) and not list(shards.glob("*.h5"))  # no temporary shard keeps the disk full
        assert len(list((disk / "out/t/videos").rglob("*.npz"))) == 16  # every finished video's images are kept
        (shards / ".shard-00000.h5.k1ll3d.tmp.h5").write_bytes(b"left by a kill")
        build(config)
        assert not list(shards.glob(".*"))  # the next run removed the leftover
        assert shard_bytes(disk) == shard_bytes(reference)


def test_a_full_disk_during_extraction_names_the_videos(corpus, tmp_path):
    with small_disk(tmp_path / "disk", 6) as resize:
        if resize is None:
            pytest.skip("mounting a tmpfs is not allowed here")
        disk = tmp_path / "disk"
        config = write_config(disk, {"msu": corpus / "msu"}, face={"size": 256})
        failed = build(config, check=False)
        assert failed.returncode == 1
        report = failed.stderr[failed.stderr.rindex("could not be processed"):].splitlines()[1:]
        listed = [line for line in report if line.startswith("  ")]
        assert listed and all(line.strip().startswith("msu/scene01/") and "): [Errno 28] No space left" in line
                              for line in listed), listed
        assert not list((disk / "out/t/videos").rglob(".*.tmp*"))
        resize(60)
        build(config)
        assert json.loads((disk / "manifests/t/manifest.json").read_text())["samples"] == 32


def truncated_copy(corpus, tmp_path) -> tuple[Path, str]:
    root = tmp_path / "casia"
    shutil.copytree(corpus / "casia/train_release", root / "train_release")
    victim = root / "train_release/1/1.avi"
    victim.write_bytes(victim.read_bytes()[:int(victim.stat().st_size * 0.7)])  # 30% cut off
    return root, "casia/train_release/1/1"


def test_a_truncated_video_is_recorded_and_its_frames_flagged(corpus, tmp_path):
    root, video = truncated_copy(corpus, tmp_path)
    result = build(write_config(tmp_path, {"casia": root}))
    assert "flagged: 1 video(s) whose frames are kept" in result.stdout
    rejects = pd.read_csv(tmp_path / "manifests/t/rejects.csv")
    row = rejects[rejects["video_id"] == video].iloc[0]
    assert row["reason"] == "truncated: decoded 4 of the 6 frames the container claims"
    assert row["action"] == "flagged (frames kept)" and row["frame_index"] == -1
    samples = pd.read_csv(tmp_path / "manifests/t/samples.csv", keep_default_na=False)
    assert set(samples.loc[samples["video_id"] == video, "flags"]) == {"truncated"}
    assert set(samples.loc[samples["video_id"] != video, "flags"]) == {""}
    manifest = json.loads((tmp_path / "manifests/t/manifest.json").read_text())
    assert manifest["rejects"]["flagged_videos"] == 1 and manifest["rejects"]["videos"] == 0

    strict = tmp_path / "strict"
    strict.mkdir()
    build(write_config(strict, {"casia": root}, frames={"policy": "even", "count": 2, "truncated": "reject"}))
    rejects = pd.read_csv(strict / "manifests/t/rejects.csv")
    assert rejects.set_index("video_id").loc[video, "action"] == "rejected"
    assert video not in set(pd.read_csv(strict / "manifests/t/samples.csv")["video_id"])


def test_a_source_changed_after_indexing_is_refused(corpus, tmp_path):
    root = tmp_path / "msu"
    shutil.copytree(corpus / "msu", root)
    config = write_config(tmp_path, {"msu": root}, compute={"workers": 1, "device": "cpu"})
    subprocess.run([sys.executable, "-c", "import luigi, sys; from pipeline.tasks import IndexSource; "
                    f"sys.exit(not luigi.build([IndexSource(config={str(config)!r}, dataset='msu', quiet=True)], "
                    "local_scheduler=True))"], check=True, timeout=120, capture_output=True)
    victim = root / "scene01/attack/attack_client001_laptop_SD_ipad_video_scene01.mov"
    other = root / "scene01/real/real_client001_laptop_SD_scene01.mov"
    kept, indexed = victim.read_bytes(), sha256_file(victim)
    shutil.copyfile(other, victim)  # another video copied over an indexed one
    failed = build(config, check=False)
    assert failed.returncode == 1
    assert (f"{victim}: changed since it was indexed (sha256 now {sha256_file(other)}, the index says {indexed})"
            in failed.stderr)
    assert not list((tmp_path / "out/t/videos").rglob(f"*{indexed[:16]}*"))  # never built under the old hash
    victim.write_bytes(kept)
    build(config)
    assert json.loads((tmp_path / "manifests/t/manifest.json").read_text())["samples"] == 32


def test_an_unreadable_result_is_named_removed_and_extracted_again(corpus, tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    build(write_config(reference, {"msu": corpus / "msu"}))
    config = write_config(tmp_path, {"msu": corpus / "msu"})
    subprocess.run([sys.executable, "-c", "import luigi, sys; from pipeline.tasks import ExtractFaces; "
                    f"sys.exit(not luigi.build([ExtractFaces(config={str(config)!r}, dataset='msu', quiet=True)], "
                    "local_scheduler=True))"], check=True, timeout=300, capture_output=True)
    records = sorted((tmp_path / "out/t/videos").rglob("*.json"))
    results = sorted((tmp_path / "out/t/videos").rglob("*.npz"))
    cut_short, flipped = results[3], results[6]  # in the first shard, in this order: one failure per run
    data = bytearray(flipped.read_bytes())
    data[len(data) // 2] ^= 1  # inside an image array: only its zip CRC tells
    flipped.write_bytes(bytes(data))
    cut_short.write_bytes(cut_short.read_bytes()[:1000])
    for victim, why in ((cut_short, "File is not a zip file"), (flipped, "Bad CRC-32")):
        failed = build(config, check=False)
        assert failed.returncode == 1
        assert f"{victim}: unreadable extraction result (BadZipFile: {why}" in failed.stderr
        assert "removed it: run the build again to extract that video anew" in failed.stderr
        assert not victim.exists() and not victim.with_suffix(".json").exists()  # extracted again next time
        assert not list((tmp_path / "out/t/shards").glob(".*"))
    build(config)
    assert sorted((tmp_path / "out/t/videos").rglob("*.json")) == records
    assert not list((tmp_path / "out/t/videos").rglob("*.npz"))  # in the shards now
    rebuilt, clean = outputs(tmp_path), outputs(reference)
    del rebuilt["manifest.json"], clean["manifest.json"]  # it names its own folders
    assert rebuilt == clean


@pytest.mark.parametrize("device, says", [("cpu", "for 3 s"), ("auto", "answered within 3 s")])
def test_a_cluster_without_workers_stops_the_build_naming_the_scheduler(corpus, tmp_path, device, says):
    # "auto" asks the workers which device they have: with none, that question times out
    from dask.distributed import LocalCluster
    with LocalCluster(n_workers=0, processes=True, dashboard_address=None) as cluster:
        config = write_config(tmp_path, {"msu": corpus / "msu"},
                              compute={"scheduler": cluster.scheduler_address, "device": device, "worker_timeout": 3})
        start = time.monotonic()
        failed = build(config, check=False)
    assert failed.returncode == 1 and time.monotonic() - start < 120
    assert f"no dask worker at {cluster.scheduler_address} {says} (compute.worker_timeout)" in failed.stderr


def test_a_cluster_without_workers_when_the_shards_are_due_stops_the_build(corpus, tmp_path):
    from dask.distributed import LocalCluster
    config = write_config(tmp_path, {"msu": corpus / "msu"})
    subprocess.run([sys.executable, "-c", "import luigi, sys; from pipeline.tasks import ExtractFaces; "
                    f"sys.exit(not luigi.build([ExtractFaces(config={str(config)!r}, dataset='msu', quiet=True)], "
                    "local_scheduler=True))"], check=True, timeout=300, capture_output=True)
    with LocalCluster(n_workers=0, processes=True, dashboard_address=None) as cluster:
        elsewhere = write_config(tmp_path, {"msu": corpus / "msu"},  # extracted: only the shards need workers
                                 compute={"scheduler": cluster.scheduler_address, "worker_timeout": 3})
        failed = build(elsewhere, check=False)
    assert failed.returncode == 1
    assert (f"no dask worker at {cluster.scheduler_address} for 3 s (compute.worker_timeout) with 1 task(s) to go; "
            "finished videos are kept, the shards are written again") in failed.stderr
    build(write_config(tmp_path, {"msu": corpus / "msu"}))  # back on a local cluster (the same file name)
    assert len(list((tmp_path / "out/t/shards").glob("*.h5"))) == 2


def test_compare_tells_a_rebuilt_cache_from_a_different_one(corpus, tmp_path):
    from pipeline.compare import Tolerances, compare
    first, second = tmp_path / "a", tmp_path / "b"
    first.mkdir()
    second.mkdir()
    build(write_config(first, {"msu": corpus / "msu"}))
    build(write_config(second, {"msu": corpus / "msu"}, face={"size": 96, "max_side": 200}))  # another detector scale
    a, b = first / "manifests/t", second / "manifests/t"
    same, per_sample = compare(a, a)
    assert same["reasons"] == [] and same["common"] == 32 and (per_sample.drop(columns=["video_id", "frame_index",
                                                                                         "box_iou"]) == 0).all().all()
    assert (per_sample["box_iou"] == 1).all()
    summary, per_sample = compare(a, b)
    assert summary["common"] == 32 and summary["only_a"] == summary["only_b"] == 0
    assert summary["metadata_difference_count"] == 0
    assert 0.5 < summary["box_iou"]["mean"] < 1 and summary["rgb_mad"]["mean"] > 0  # rebuilt, not identical
    strict = compare(a, b, Tolerances(min_iou=0.999))[0]
    assert any(r.startswith("mean box IoU") for r in strict["reasons"])
    edited = tmp_path / "edited"
    shutil.copytree(b, edited)
    table = pd.read_csv(edited / "samples.csv", keep_default_na=False)
    victim = table.index[table["label"] == "spoof"][0]
    table.loc[victim, "label"] = "live"
    table.drop(index=[victim + 1]).to_csv(edited / "samples.csv", index=False)
    done = subprocess.run([sys.executable, "-m", "pipeline", "compare", str(a), str(edited)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 1, done.stdout
    assert f"{table.loc[victim, 'video_id']}#{table.loc[victim, 'frame_index']}: label 'spoof' vs 'live'" in done.stdout
    assert "31 in both, 1 only in A, 0 only in B" in done.stdout and "verdict: different caches" in done.stdout
    done = subprocess.run([sys.executable, "-m", "pipeline", "compare", str(a), str(edited), "--json"],
                          capture_output=True, text=True, timeout=120)
    printed = json.loads(done.stdout)
    assert done.returncode == 1 and (printed["common"], printed["only_a"], printed["only_b"]) == (31, 1, 0)
    assert printed["metadata_difference_count"] == 1 and printed["reasons"]


def write_clip(path: Path, frames: list) -> None:
    """A short MJPEG clip of RGB frames."""
    import cv2
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 15, (w, h))
    for frame in frames:
        writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    writer.release()


def test_a_build_records_rotated_videos(corpus, tmp_path):
    import cv2
    from pipeline.frames import read_frames
    from pipeline.config import FrameConfig
    root = tmp_path / "msu"
    shutil.copytree(corpus / "msu", root)
    victim = root / "scene01/real/real_client001_laptop_SD_scene01.mov"
    frames = read_frames(victim, FrameConfig(policy="all")).frames
    victim.unlink()
    write_clip(victim.with_suffix(".avi"), [cv2.rotate(f, cv2.ROTATE_180) for f in frames])
    victim.with_suffix(".avi").rename(victim)  # the same name, recorded upside down
    result = build(write_config(tmp_path, {"msu": root}))
    assert "turned upright: 1 video(s) by 180 degrees" in result.stdout
    samples = pd.read_csv(tmp_path / "manifests/t/samples.csv", keep_default_na=False)
    rotated = samples.groupby("video_id")["rotation"].first()
    assert rotated["msu/scene01/real/real_client001_laptop_SD_scene01"] == 180 and (rotated == 180).sum() == 1
    manifest = json.loads((tmp_path / "manifests/t/manifest.json").read_text())
    assert manifest["rotated_videos"] == {"180": 1}
    orientation = manifest["orientation"]  # how each of the 16 videos was decided, in the manifest
    assert orientation["sure"] + orientation["compared"] == 16 and orientation["turned"] == {"180": 1}
    assert orientation["compared"] >= 1 and "orientation: " in result.stdout


def test_a_build_takes_the_hashes_of_an_earlier_index_and_its_workers_still_check_each_file(corpus, tmp_path):
    from test_index_cli import flip_keeping_stat
    root = tmp_path / "msu"
    shutil.copytree(corpus / "msu", root)
    table = tmp_path / "indexed/msu.csv"
    subprocess.run([sys.executable, "-m", "pipeline", "index", "--dataset", "msu", "--root", str(root), "--out",
                    str(table), "--quiet"], check=True, capture_output=True, timeout=120)
    config = write_config(tmp_path, {"msu": root}, index_tables={"msu": str(table)})
    victim = root / "scene01/attack/attack_client001_laptop_SD_ipad_video_scene01.mov"
    kept, stat = victim.read_bytes(), victim.stat()
    flip_keeping_stat(victim)  # changed after indexing, size and mtime as they were: the index's hash is stale
    failed = build(config, check=False)
    assert failed.returncode == 1 and f"{victim}: changed since it was indexed" in failed.stderr
    victim.write_bytes(kept)
    os.utime(victim, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    build(config)
    assert json.loads((tmp_path / "out/t/index/msu.json").read_text())["hashes_reused"] == 16  # none read again
    assert (tmp_path / "manifests/t/sources.csv").read_bytes() == table.read_bytes()


@pytest.mark.parametrize("stage", ["extract", "tables", "shard"])
def test_a_worker_killed_while_its_results_are_gathered_stops_the_build_in_time(corpus, tmp_path, monkeypatch,
                                                                               capfd, stage):
    """kill -9 of the last dask worker just after its tasks finished, while the build gathers their results (in
    extraction, the shard tables and the shards): dask loses the results and would compute them again, but no
    worker is left. The build gives up after compute.worker_timeout, naming the worker; finished videos are
    kept, and a build with a worker again finishes."""
    from dask.distributed import Client
    import pipeline.tasks as tasks
    from pipeline.build import run_build
    from pipeline.cluster import close_clients
    from test_build import BIN
    real = tasks.ClusterWatch.gather

    def gather_after_a_kill(self, futures, pending):
        if futures and str(futures[0].key).startswith(f"{stage}-") and worker.poll() is None:
            worker.kill()  # SIGKILL: the worker and the results it holds are gone
            worker.wait()
        return real(self, futures, pending)

    monkeypatch.setattr(tasks.ClusterWatch, "gather", gather_after_a_kill)
    # the scheduler and the worker in processes of their own: the build's client is the only one in this process
    address_file = tmp_path / "scheduler.json"
    scheduler = subprocess.Popen([str(BIN / "dask"), "scheduler", "--scheduler-file", str(address_file),
                                  "--host", "127.0.0.1", "--port", "0", "--no-dashboard"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while not address_file.is_file() and time.monotonic() < deadline:
            time.sleep(0.1)
        with Client(scheduler_file=str(address_file), timeout=60) as client:
            scheduler_address = client.scheduler.address
            worker = subprocess.Popen([str(BIN / "dask"), "worker", scheduler_address, "--nthreads", "1",
                                       "--no-nanny"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            client.wait_for_workers(1, timeout=60)
            address = next(iter(client.nthreads()))
        config = write_config(tmp_path, {"msu": corpus / "msu"}, compute={
            "scheduler": scheduler_address, "device": "cpu", "worker_timeout": 5})
        start = time.monotonic()
        capfd.readouterr()
        assert run_build(config, quiet=True) == 1
        took = time.monotonic() - start
        err = capfd.readouterr().err
    finally:
        close_clients()
        worker.kill()
        scheduler.kill()
    assert took < 120, took  # bounded by the timeout, not by a signal
    kept = "finished videos are kept" + (" and a re-run resumes" if stage == "extract" else
                                         ", the shards are written again")
    assert re.search(rf"no dask worker at {re.escape(scheduler_address)} for 5 s \(compute.worker_timeout\) "
                     rf"with \d+ task\(s\) to go; lost: the worker\(s\) {re.escape(address)}; {kept}", err), err
    assert "AllExit" not in err
    if stage == "extract":  # the videos the worker finished before it was killed are kept, and a build with
        assert list((tmp_path / "out/t/videos").rglob("*.json"))  # workers again (a local cluster) finishes
        build(write_config(tmp_path, {"msu": corpus / "msu"}))
        assert json.loads((tmp_path / "manifests/t/manifest.json").read_text())["samples"] == 32
