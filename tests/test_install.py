"""Installed, not only cloned: a wheel of the project in a fresh virtual environment runs the trainer's train,
eval and sweep commands from another folder, with the protocols and sweeps it ships."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pandas as pd
import yaml

ROOT = Path(__file__).resolve().parents[1]


def test_a_wheel_in_a_fresh_environment_trains_evaluates_and_sweeps(train_build, tmp_path):
    source = tmp_path / "source"  # the files a wheel is built from, away from the checkout's build/ folder
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for package in ("pipeline", "fas_train"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w",
                    str(tmp_path / "dist"), str(source)], check=True, capture_output=True, timeout=300)
    env = tmp_path / "env"
    venv.create(env, with_pip=True)
    # the dependencies come from the project's environment (a second copy of torch would take minutes): its
    # site-packages is appended to the new environment's path, where its .pth files (the checkout's editable
    # install) are not read, so the code imported is the wheel's
    site = next((env / "lib").glob("python3*/site-packages"))
    (site / "project-dependencies.pth").write_text(next(Path(p) for p in sys.path if p.endswith("site-packages")
                                                         and Path(p, "torch").is_dir()).as_posix() + "\n")
    wheel = next((tmp_path / "dist").glob("fas_dg-*.whl"))
    subprocess.run([str(env / "bin/python"), "-m", "pip", "install", "--no-deps", "--no-index", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    def run(*args):
        result = subprocess.run([str(env / "bin" / args[0]), *args[1:]], cwd=elsewhere, capture_output=True,
                                text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        return result.stdout

    where = run("python", "-c", "import fas_train, pipeline; print(fas_train.__file__, pipeline.__file__)")
    assert where.count(str(site)) == 2  # the installed package, not the checkout
    settings = ["--steps", "4", "--eval-every", "2", "--per-class", "2", "--network", "small", "--input-size", "32",
                "--device", "cpu", "--quiet"]
    run("fas-train", "train", "--method", "erm", "--build", str(train_build), "--protocol", "mico_OCI_to_M",
        "--out", "run", *settings)
    assert "report:" in run("fas-train", "eval", "--run", "run")
    assert json.loads((elsewhere / "run/report.json").read_text())["protocol"] == "O&C&I->M"
    # the exported model scores new footage with nothing but the wheel: no run folder, build or checkout
    run("fas-train", "export", "--run", "run", "--out", str(tmp_path / "model"))
    shutil.move(elsewhere / "run", tmp_path / "run-away")
    manifest = json.loads((train_build / "manifest.json").read_text())
    sources = pd.read_csv(train_build / "sources.csv", dtype=str, keep_default_na=False)
    msu = sources[sources["dataset"] == "msu"]
    videos = {str(Path(manifest["config"]["datasets"]["msu"]) / r): v for r, v in zip(msu["relpath"], msu["video_id"])}
    run("fas-train", "predict", "--model", str(tmp_path / "model"), "--out", "predicted", "--quiet", "--device", "cpu",
        *videos)
    frames = pd.concat(pd.read_csv(f) for f in (elsewhere / "predicted").glob("*.csv") if f.name != "predictions.csv")
    frames["video_id"] = frames["input"].map(videos)
    expected = pd.read_csv(tmp_path / "run-away/scores.csv", dtype={"video_id": str})
    both = expected.merge(frames, on=["video_id", "frame_index"])
    assert len(both) == len(expected) and (both["score_x"] - both["score_y"]).abs().max() < 1e-5
    (elsewhere / "s.yaml").write_text(yaml.safe_dump({
        "name": "s", "build": str(train_build), "out": "sweep", "protocols": ["mico_OMI_to_C"], "methods": ["erm"],
        "settings": {"steps": 4, "eval_every": 2, "per_class": 2, "network": "small", "input_size": 32,
                     "device": "cpu"}}))
    assert "1 of 1 runs finished" in run("fas-train", "sweep", "s.yaml")
    assert (elsewhere / "sweep/table.md").is_file()
    shipped = run("fas-train", "sweep", "demo_mico", "--print-commands").splitlines()
    assert len(shipped) == 6 * 4 * 3 and "--protocol mico_ICM_to_O" in shipped[-1]
    assert "build" in run("fas-pipeline", "--help")
    # the build config templates ship in the wheel: init-config fills one in from anywhere
    roots = {d: Path(manifest["config"]["datasets"][d]) for d in ("msu", "casia")}
    run("fas-pipeline", "init-config", "full", *(f"--root={d}={r}" for d, r in roots.items()), "--out", "mine.yaml")
    written = yaml.safe_load((elsewhere / "mine.yaml").read_text())
    assert written["datasets"] == {d: str(r) for d, r in roots.items()} and written["frames"]["count"] == 8
