"""The whole build through real Luigi and real dask workers on the demo corpus: shards and manifest, rerun as a
no-op, kill -9 and resume equal to a clean build (byte for byte), audit, bad videos, an external scheduler."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.audit import audit
from pipeline.config import config_from_dict
from pipeline.hashing import content_sha256
from pipeline.tasks import EXIT_CODES

BIN = Path(sys.executable).parent


def write_config(tmp_path, roots, name="t", **overrides):
    config = {"name": name, "datasets": {d: str(r) for d, r in roots.items()},
              "output_dir": str(tmp_path / "out"), "manifest_dir": str(tmp_path / "manifests"),
              "frames": {"policy": "even", "count": 2}, "face": {"size": 96},
              "depth": {"backend": "generic"}, "shards": {"samples_per_shard": 16},
              "compute": {"workers": 2, "device": "cpu"}}
    config.update(overrides)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def build(config, *extra, check=True, **kwargs):
    result = subprocess.run([sys.executable, "-m", "pipeline", "build", "--config", str(config), "--quiet", *extra],
                            capture_output=True, text=True, timeout=300, **kwargs)
    if check:
        assert result.returncode == 0, result.stdout + result.stderr
    return result


def outputs(tmp_path, name="t"):
    """Every byte that must be identical between builds: shards, manifest and its tables."""
    files = sorted((tmp_path / "out" / name / "shards").glob("*.h5"))
    files += [tmp_path / "manifests" / name / f for f in ("manifest.json", "samples.csv", "rejects.csv",
                                                          "sources.csv")]
    return {f.name: f.read_bytes() for f in files}


@pytest.fixture(scope="module")
def clean_build(corpus, tmp_path_factory):
    tmp_path = tmp_path_factory.mktemp("build")
    config = write_config(tmp_path, {"casia": corpus / "casia", "msu": corpus / "msu"})
    result = build(config)
    return tmp_path, config, result


def test_build_writes_shards_and_manifest(clean_build, corpus):
    tmp_path, config, result = clean_build
    manifest = json.loads((tmp_path / "manifests/t/manifest.json").read_text())
    samples = pd.read_csv(tmp_path / "manifests/t/samples.csv")
    assert manifest["samples"] == len(samples) == 2 * (24 + 16)  # two frames of every video
    assert manifest["depth_backend"] == "generic" and manifest["label_polarity"] == {"spoof": 0, "live": 1}
    assert "depth" in manifest["shard_datasets"] and "depth_estimate" not in manifest["shard_datasets"]
    assert sum(s["samples"] for s in manifest["shards"]) == len(samples) and len(manifest["shards"]) == 5
    assert "80 samples in 5 shard(s)" in result.stdout and "skipped: 0 frame(s), 0 video(s)" in result.stdout
    assert manifest["config"]["compute"]["workers"] == manifest["local_workers"] == 2
    assert "Informed scheduler that task" not in result.stderr and "INFO" not in result.stderr  # --quiet
    assert set(manifest["code"]) >= {"version", "git_commit"} and manifest["packages"]["torch"] == "2.14.1"
    sources = pd.read_csv(tmp_path / "manifests/t/sources.csv")
    assert len(sources) == 40 and sources["sha256"].str.len().eq(64).all()
    # the shard rows agree with the index table, and the depth target with the label
    for shard, group in samples.groupby("shard"):
        with h5py.File(tmp_path / "out/t/shards" / shard, "r") as f:
            assert f["rgb"].shape == (len(group), 3, 96, 96) and f["rgb"].chunks == (1, 3, 96, 96)
            assert f["lbp"].dtype == np.uint8 and f["depth"].shape[1:] == (1, 32, 32)
            assert f.attrs["config_hash"] == manifest["config_hash"] and f.attrs["depth_backend"] == "generic"
            ids = [v.decode() if isinstance(v, bytes) else v for v in f["video_id"][:]]
            assert ids == group.sort_values("row")["video_id"].tolist()
            live = f["label"][:] == 1
            assert np.array_equal(live, (group.sort_values("row")["label"] == "live").to_numpy())
            depth_sum = f["depth"][:].reshape(len(group), -1).sum(axis=1)
            assert (depth_sum[live] > 0).all() and (depth_sum[~live] == 0).all()
            assert set(f["domain"][:]) <= {1, 3}  # casia 1, msu 3
    assert audit(tmp_path / "manifests/t") == []


def test_rerun_is_a_no_op(clean_build):
    tmp_path, config, _ = clean_build
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*") if p.is_file()}
    result = build(config)
    assert "already complete: nothing to do" in result.stdout
    assert before == {p: p.stat().st_mtime_ns for p in (tmp_path / "out").rglob("*") if p.is_file()}
    printed = json.loads(build(config, "--json").stdout)  # nothing but the JSON on stdout
    manifest = json.loads((tmp_path / "manifests/t/manifest.json").read_text())
    assert printed["status"] == "already complete" and printed["build"] == "t"
    assert (printed["samples"], printed["shards"]) == (manifest["samples"], len(manifest["shards"]))
    assert printed["videos"] == {d: s["videos"] for d, s in manifest["sources"].items()} == {"casia": 24, "msu": 16}
    assert printed["rejects"] == manifest["rejects"]
    assert printed["manifest"] == str(tmp_path / "manifests/t/manifest.json")


def test_luigi_command_line_runs_the_same_graph(clean_build, tmp_path):
    _, config, _ = clean_build
    raw = yaml.safe_load(config.read_text())
    raw.update(output_dir=str(tmp_path / "out"), manifest_dir=str(tmp_path / "manifests"))
    other = tmp_path / "t.yaml"
    other.write_text(yaml.safe_dump(raw))
    result = subprocess.run([str(BIN / "luigi"), "--module", "pipeline.tasks", "BuildManifest", "--config", str(other),
                             "--quiet", "--local-scheduler"], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert result.returncode == 0, result.stderr
    assert outputs(tmp_path)["manifest.json"] != b""
    # same inputs and config -> the same shards, whatever the output folder
    first = outputs(clean_build[0])
    again = outputs(tmp_path)
    assert {k: v for k, v in again.items() if k.endswith(".h5")} == {k: v for k, v in first.items() if k.endswith(".h5")}
    assert again["samples.csv"] == first["samples.csv"] and again["sources.csv"] == first["sources.csv"]


def test_videos_batched_across_tasks_give_the_same_samples(clean_build, corpus, tmp_path):
    """compute.videos_per_task (the GPU feed) through Luigi and dask: the same samples, boxes within float
    noise, the setting recorded in the manifest."""
    config = write_config(tmp_path, {"casia": corpus / "casia", "msu": corpus / "msu"},
                          compute={"workers": 2, "device": "cpu", "videos_per_task": 5})
    build(config)
    manifest = json.loads((tmp_path / "manifests/t/manifest.json").read_text())
    first = json.loads((clean_build[0] / "manifests/t/manifest.json").read_text())
    assert manifest["extraction"] == {d: [{"device": "cpu", "videos_per_task": 5, "videos": n}]
                                      for d, n in (("casia", 24), ("msu", 16))}
    assert first["extraction"]["casia"] == [{"device": "cpu", "videos_per_task": 8, "videos": 24}]  # auto: 16 frames
    assert (tmp_path / "manifests/t/samples.csv").read_bytes() == (clean_build[0] / "manifests/t/samples.csv").read_bytes()
    for shard in sorted((tmp_path / "out/t/shards").glob("*.h5")):
        with h5py.File(shard) as a, h5py.File(clean_build[0] / "out/t/shards" / shard.name) as b:
            assert np.allclose(a["box"][:], b["box"][:], atol=1e-2)
            assert np.abs(a["rgb"][:].astype(int) - b["rgb"][:]).mean() < 1


def test_the_manifest_counts_the_videos_each_device_and_batching_detected():
    from pipeline.tasks import ResultInfo, detection_counts

    def video(dataset, detection, samples):
        return ResultInfo(dataset, "v", "r.npz", None, "", 0, np.arange(samples), np.array(["generic"] * samples),
                          detection)
    cpu, cuda = {"device": "cpu", "videos_per_task": 4}, {"device": "cuda", "videos_per_task": 16}
    videos = [video("msu", cpu, 4), video("msu", cpu, 0),  # a video without a usable face was detected too
              video("msu", cuda, 4), video("msu", None, 0),  # resumed on a GPU; a video that never decoded
              video("casia", None, 4), video("casia", cpu, 2)]  # a result from before the record
    assert detection_counts(videos) == {
        "casia": [{"device": "cpu", "videos_per_task": 4, "videos": 1},
                  {"device": None, "videos_per_task": None, "videos": 1}],
        "msu": [{"device": "cpu", "videos_per_task": 4, "videos": 2},
                {"device": "cuda", "videos_per_task": 16, "videos": 1}]}


def test_killed_build_resumes_to_the_same_bytes(clean_build):
    tmp_path, config, _ = clean_build
    expected = outputs(tmp_path)
    shutil.rmtree(tmp_path / "out")
    shutil.rmtree(tmp_path / "manifests")
    videos = tmp_path / "out/t/videos"
    process = subprocess.Popen([sys.executable, "-m", "pipeline", "build", "--config", str(config), "--quiet"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 240
    def finished():  # per-video records, not the hidden temporary files a kill leaves (the next run removes them)
        return [p for p in videos.rglob("*.json") if not p.name.startswith(".")]

    while time.time() < deadline and len(finished()) < 8:
        time.sleep(0.02)
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()
    done = {p: p.stat().st_mtime_ns for p in finished()}
    assert 8 <= len(done) < 40, "the build must be killed part-way"
    assert not (tmp_path / "manifests/t/manifest.json").exists()
    build(config)
    assert all(p.stat().st_mtime_ns == t for p, t in done.items())  # finished videos were not redone
    assert outputs(tmp_path) == expected
    assert audit(tmp_path / "manifests/t") == []


def test_a_changed_config_under_an_existing_name_is_refused(clean_build, tmp_path):
    source, config, _ = clean_build
    before = {p: p.stat().st_mtime_ns for p in source.rglob("*") if p.is_file()}
    raw = yaml.safe_load(config.read_text())
    # another frame count while the build folder holds results of the first: per-video results would be reused
    changed = {**raw, "frames": {"policy": "even", "count": 3}, "manifest_dir": str(tmp_path / "m")}
    (tmp_path / "count.yaml").write_text(yaml.safe_dump(changed))
    result = build(tmp_path / "count.yaml", check=False)
    assert result.returncode == 2
    assert f"{source / 'out/t/config.json'}: build 't' was made with other settings (changed: frames.count)" in result.stderr
    luigi_run = subprocess.run([str(BIN / "luigi"), "--module", "pipeline.tasks", "BuildManifest", "--config",
                                str(tmp_path / "count.yaml"), "--local-scheduler"], capture_output=True, text=True,
                               timeout=300, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])},
                               cwd=tmp_path)  # no luigi.cfg here: pipeline.tasks sets the exit codes
    assert luigi_run.returncode == EXIT_CODES["scheduling_error"] and "changed: frames.count" in luigi_run.stderr
    # another copy of a dataset under the same name: its index and per-video results would be reused
    other_copy = {**raw, "datasets": {**raw["datasets"], "casia": str(tmp_path / "casia_copy")}}
    (tmp_path / "copy.yaml").write_text(yaml.safe_dump(other_copy))
    result = build(tmp_path / "copy.yaml", check=False)
    assert result.returncode == 2 and "(changed: root.casia)" in result.stderr
    # the same manifest folder for a build written elsewhere: the manifest would describe other shards
    moved = {**raw, "output_dir": str(tmp_path / "elsewhere")}
    (tmp_path / "moved.yaml").write_text(yaml.safe_dump(moved))
    result = build(tmp_path / "moved.yaml", check=False)
    assert result.returncode == 2 and "manifest.json: describes the shards in" in result.stderr
    assert before == {p: p.stat().st_mtime_ns for p in source.rglob("*") if p.is_file()}
    assert not (tmp_path / "elsewhere").exists() and not (tmp_path / "m").exists()


def test_audit_names_a_flipped_byte_and_a_truncated_shard(clean_build, tmp_path):
    source, _, _ = clean_build
    shards = tmp_path / "shards"
    shutil.copytree(source / "out/t/shards", shards)
    manifest = source / "manifests/t"
    assert audit(manifest, shards) == []
    victim = shards / "shard-00001.h5"
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0x01
    victim.write_bytes(bytes(data))
    cut = shards / "shard-00003.h5"
    cut.write_bytes(cut.read_bytes()[:4096])
    problems = audit(manifest, shards)
    assert any("shard-00001.h5: sha256" in p for p in problems)
    assert any("shard-00003.h5" in p and "unreadable" in p for p in problems)
    result = subprocess.run([sys.executable, "-m", "pipeline", "audit", str(manifest), "--shard-dir", str(shards)],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 1 and "shard-00001.h5" in result.stderr and "shard-00003.h5" in result.stderr
    for shard_dir, ok in ((shards, False), (source / "out/t/shards", True)):
        result = subprocess.run([sys.executable, "-m", "pipeline", "audit", str(manifest), "--shard-dir",
                                 str(shard_dir), "--json"], capture_output=True, text=True, timeout=120)
        printed = json.loads(result.stdout)
        assert result.returncode == (0 if ok else 1) and printed["ok"] is ok
        assert printed["problems"] == ([] if ok else problems) and printed["leftovers"] == []


def test_audit_checks_the_tables_and_the_manifests_own_content(clean_build, tmp_path):
    source, _, _ = clean_build
    manifest_dir = tmp_path / "manifest"
    shutil.copytree(source / "manifests/t", manifest_dir)
    assert audit(manifest_dir) == []
    samples = (manifest_dir / "samples.csv").read_text()
    (manifest_dir / "samples.csv").write_text(samples.replace(",spoof,", ",live,", 1))
    rejects = manifest_dir / "rejects.csv"
    rejects.write_text(rejects.read_text() + "casia/x,-1,made up\n")
    problems = audit(manifest_dir)
    assert [p.split(":")[0] for p in problems] == [str(manifest_dir / "samples.csv"), str(rejects)]
    (manifest_dir / "samples.csv").write_text(samples)
    rejects.write_bytes((source / "manifests/t/rejects.csv").read_bytes())
    manifest = json.loads((manifest_dir / "manifest.json").read_text())
    manifest["config"]["face"]["size"] = 256  # an edited config: the tables and shards still match
    (manifest_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    problems = audit(manifest_dir)
    assert "manifest.json: content edited" in problems[0]
    manifest["config"]["face"]["size"] = 999  # the same edit with the content hash recomputed: still found
    manifest["content_sha256"] = content_sha256(manifest)
    (manifest_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    problems = audit(manifest_dir)
    assert "config hashes to" in problems[0] and "config edited after the build?" in problems[0]
    assert sum("rgb holds samples of shape (3, 96, 96), the config (999 px faces" in p for p in problems) == 5
    manifest["config_hash"] = config_from_dict(manifest["config"], "x").config_hash()  # both hashes redone:
    manifest["content_sha256"] = content_sha256(manifest)  # the shards' own config_hash attributes disagree
    (manifest_dir / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    problems = audit(manifest_dir)
    assert sum("samples / config" in p for p in problems) == 5 and not any("config hashes to" in p for p in problems)
    leftover = source / "out/t/shards/.shard-00000.h5.abc123.tmp.h5"
    leftover.write_bytes(b"half a shard")
    try:
        result = subprocess.run([sys.executable, "-m", "pipeline", "audit", str(source / "manifests/t")],
                                capture_output=True, text=True, timeout=120)
        assert result.returncode == 0 and f"LEFTOVER {leftover}" in result.stdout
    finally:
        leftover.unlink()


def test_bad_videos_are_recorded_and_the_build_goes_on(corpus, tmp_path):
    root = tmp_path / "casia"
    shutil.copytree(corpus / "casia/train_release", root / "train_release")
    (root / "train_release/1/2.avi").write_bytes(os.urandom(20000))  # corrupt
    (root / "train_release/1/HR_1.avi").write_bytes(b"")  # zero length
    config = write_config(tmp_path, {"casia": root})
    result = build(config)
    assert "skipped: 0 frame(s), 2 video(s)" in result.stdout
    rejects = pd.read_csv(tmp_path / "manifests/t/rejects.csv")
    reasons = dict(zip(rejects["video_id"], rejects["reason"]))
    assert reasons["casia/train_release/1/HR_1"] == "zero-length file"
    assert "cannot open" in reasons["casia/train_release/1/2"] or "no frame" in reasons["casia/train_release/1/2"]
    samples = pd.read_csv(tmp_path / "manifests/t/samples.csv")
    assert len(samples) == 2 * 10 and not samples["video_id"].isin(reasons).any()


def test_missing_source_stops_extraction_and_keeps_the_rest(corpus, tmp_path):
    root = tmp_path / "msu"
    shutil.copytree(corpus / "msu", root)
    config = write_config(tmp_path, {"msu": root})
    subprocess.run([sys.executable, "-c", "import luigi, sys; from pipeline.tasks import IndexSource; "
                    f"sys.exit(not luigi.build([IndexSource(config={str(config)!r}, dataset='msu', quiet=True)], "
                    "local_scheduler=True))"], check=True, timeout=120, capture_output=True)
    victim = root / "scene01/real/real_client001_laptop_SD_scene01.mov"
    kept = victim.read_bytes()
    victim.unlink()
    result = build(config, check=False)
    assert result.returncode == 1
    assert "real_client001_laptop_SD_scene01.mov: source video is missing" in result.stdout + result.stderr
    assert len(list((tmp_path / "out/t/videos").rglob("*.json"))) == 15  # the other videos are done and kept
    victim.write_bytes(kept)
    build(config)
    assert json.loads((tmp_path / "manifests/t/manifest.json").read_text())["samples"] == 32


def test_an_existing_dask_scheduler_runs_the_work(corpus, tmp_path):
    from dask.distributed import LocalCluster
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        config = write_config(tmp_path, {"msu": corpus / "msu"},
                              compute={"scheduler": cluster.scheduler_address, "device": "cpu"})
        verbose = build(config, "--verbose")  # Luigi's INFO lines too (a quiet build shows none)
        assert "Informed scheduler that task" in verbose.stderr
        prefix = cluster.scheduler.task_prefixes["extract"]
        assert prefix.state_counts["memory"] == 2  # every task (16 videos, 8 per task) finished on this cluster


def test_the_local_cluster_keeps_glibc_malloc_defaults_no_profiler_and_names_its_device(tmp_path, monkeypatch):
    # dask's nanny would set MALLOC_TRIM_THRESHOLD_ (extraction took 1.75x the CPU time); its profiler cost 8%
    from pipeline.config import load_config
    from pipeline.extract import resolve_device
    from pipeline.cluster import close_clients, dask_client
    from pipeline.tasks import workers_device
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)  # another test's nanny may have set it here
    config = load_config(write_config(tmp_path, {"msu": tmp_path}, compute={"workers": 2, "device": "auto"}))
    try:
        client = dask_client(config)
        environ = client.run(lambda: {k: os.environ.get(k) for k in ("MALLOC_TRIM_THRESHOLD_", "OMP_NUM_THREADS")})
        profiled = client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
        preloaded = client.run(lambda: "torch" in sys.modules)  # before any task: imported as they started
        device = workers_device(client, config)  # "auto": each worker is asked
    finally:
        close_clients()
    assert list(environ.values()) == [{"MALLOC_TRIM_THRESHOLD_": None, "OMP_NUM_THREADS": "1"}] * 2
    assert list(profiled.values()) == [False, False]  # no stack sample every 10 ms
    assert list(preloaded.values()) == [True, True]
    assert device == resolve_device("auto")


def test_a_cluster_started_in_the_background_is_the_one_the_build_gets_and_a_failed_start_is_reported(tmp_path):
    import dask
    from pipeline.cluster import close_clients, dask_client, start_client
    from pipeline.config import load_config
    config = load_config(write_config(tmp_path, {"msu": tmp_path}, compute={"workers": 2, "device": "cpu"}))
    try:
        start_client(config)
        client = dask_client(config)  # waits for the start under way instead of starting a second cluster
        assert dask_client(config) is client and len(client.scheduler_info()["workers"]) == 2
    finally:
        close_clients()
    unreachable = load_config(write_config(tmp_path, {"msu": tmp_path}, compute={"scheduler": "tcp://127.0.0.1:9"}))
    with dask.config.set({"distributed.comm.timeouts.connect": "1s"}):
        start_client(unreachable)
        with pytest.raises(OSError, match="tcp://127.0.0.1:9"):
            dask_client(unreachable)
    close_clients()


def test_the_shipped_dask_worker_config_keeps_them_too(tmp_path, monkeypatch):
    from dask.distributed import Client, LocalCluster
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    config = Path(__file__).resolve().parents[1] / "configs/dask/workers.yaml"
    with LocalCluster(n_workers=0, processes=True, dashboard_address=None) as cluster, Client(cluster) as client:
        worker = subprocess.Popen([str(BIN / "dask"), "worker", cluster.scheduler_address, "--nthreads", "1"],
                                  env={**os.environ, "DASK_CONFIG": str(config)}, stdout=subprocess.DEVNULL,
                                  stderr=subprocess.DEVNULL)
        try:
            client.wait_for_workers(1, timeout=60)
            environ = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_", "unset"))
            profiled = client.run(lambda dask_worker: "profile" in dask_worker.periodic_callbacks)
            preloaded = client.run(lambda: "torch" in sys.modules)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    assert list(environ.values()) == ["unset"] and list(profiled.values()) == [False]
    assert list(preloaded.values()) == [True]


def test_the_manifest_takes_a_shards_hash_from_its_record_only_while_the_file_is_unchanged(tmp_path):
    from pipeline.assemble import record_path
    from pipeline.atomic import write_json
    from pipeline.hashing import file_record, sha256_file
    from pipeline.tasks import shard_sha256
    shard = tmp_path / "shard-00000.h5"
    shard.write_bytes(b"a" * 64)
    write_json(record_path(shard), {**file_record(shard), "sha256": "as written"})
    assert record_path(shard) == tmp_path / "records" / "shard-00000.h5.json"
    assert shard_sha256(shard) == "as written"  # not hashed again
    time.sleep(0.01)
    shard.write_bytes(b"b" * 64)  # same size, new bytes
    assert shard_sha256(shard) == sha256_file(shard) != "as written"
    record_path(shard).unlink()
    assert shard_sha256(shard) == sha256_file(shard)  # a shard without a record


def test_dask_warns_only_from_errors_up_and_verbose_shows_both_libraries_info():
    import logging
    from pipeline.build import log_levels
    assert log_levels(quiet=False, verbose=False) == {"luigi": logging.WARNING, "distributed": logging.ERROR}
    assert log_levels(quiet=True, verbose=False) == {"luigi": logging.ERROR, "distributed": logging.ERROR}
    assert log_levels(quiet=True, verbose=True) == {"luigi": logging.INFO, "distributed": logging.INFO}
