"""Run folders are portable: run.json records the build's absolute path and manifest content hash, a build
moved whole (manifest folder and output folder together) still finds its shards, and ``eval --build`` points
a run at a moved or copied build, refusing one whose manifest content is not the run's."""
from __future__ import annotations

import json
import shutil

import pandas as pd

from fas_train.cli import main
from pipeline.hashing import content_sha256

from conftest import PROTOCOL


def site_copy(train_build, site):
    """The fixture's build as if it had been built in ``site`` (manifest folder and output folder)."""
    shutil.copytree(train_build.parent.parent, site)
    path = site / "manifests" / train_build.name / "manifest.json"
    manifest = json.loads(path.read_text())
    manifest["shard_dir"] = str(site / "out" / train_build.name / "shards")
    manifest["content_sha256"] = content_sha256(manifest)
    path.write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    (path.parent / "verified.json").unlink(missing_ok=True)
    return path.parent


def test_a_moved_run_and_build_evaluate_from_another_folder(train_build, tmp_path, monkeypatch, capsys):
    def fas_train(*args, cwd):
        """The command line's exit status and what it wrote to stderr, run from ``cwd``."""
        monkeypatch.chdir(cwd)
        capsys.readouterr()
        status = main([str(a) for a in args])
        return status, capsys.readouterr().err

    site = tmp_path / "site"
    build = site_copy(train_build, site)
    status, err = fas_train("train", "--method", "rfm", "--build", "manifests/b", "--protocol", PROTOCOL, "--out",
                            "run", "--steps", "2", "--eval-every", "2", "--per-class", "2", "--network", "small",
                            "--input-size", "32", "--device", "cpu", "--quiet", cwd=site)  # relative, as users type
    assert status == 0, err[-2000:]
    started = json.loads((site / "run/run.json").read_text())
    assert started["config"]["build"] == str(build)
    assert started["build_manifest_content_sha256"] == json.loads((build / "manifest.json").read_text())["content_sha256"]
    before = json.loads((site / "run/report.json").read_text())["metrics"]

    moved = tmp_path / "moved"
    site.rename(moved)  # the build and the run folder, together, somewhere else; eval from a third folder
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    status, err = fas_train("eval", "--run", moved / "run", cwd=elsewhere)
    assert status == 2 and f"{build}: the build run" in err and "--build PATH" in err
    status, err = fas_train("eval", "--run", moved / "run", "--build", moved / "manifests/b", cwd=elsewhere)
    assert status == 0, err[-2000:]
    after = json.loads((moved / "run/report.json").read_text())["metrics"]
    assert pd.json_normalize(after).iloc[0].to_dict() == pd.json_normalize(before).iloc[0].to_dict()

    record = json.loads((moved / "run/run.json").read_text())  # a relative build path: from the run folder
    record["config"]["build"] = "../manifests/b"
    (moved / "run/run.json").write_text(json.dumps(record))
    assert fas_train("eval", "--run", moved / "run", cwd=elsewhere)[0] == 0

    other = tmp_path / "other"  # a different build (its manifest content differs) is refused, naming both
    shutil.copytree(moved / "manifests/b", other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest["build"] = "another"
    manifest["content_sha256"] = content_sha256(manifest)
    (other / "manifest.json").write_text(json.dumps(manifest))
    status, err = fas_train("eval", "--run", moved / "run", "--build", other, cwd=elsewhere)
    assert status == 2 and "is not the manifest this run started on" in err
    assert manifest["content_sha256"][:12] in err and started["build_manifest_content_sha256"][:12] in err
