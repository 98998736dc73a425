"""Sweeps: the grid, Luigi runs (skip finished, resume killed, report failed, central scheduler), the table."""
from __future__ import annotations

import json
import re
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import yaml

from fas_train.cli import build_parser
from fas_train.methods import METHODS
from fas_train.protocols import CONFIGS, load_protocol
from fas_train.sweep import gpu_slot, load_sweep, run_sweep, train_command
from fas_train.table import frames_per_video, load_published, published_row, run_level, run_rows
from fas_train.settings import RunConfig

SETTINGS = {"steps": 4, "eval_every": 2, "per_class": 2, "network": "small", "input_size": 32, "device": "cpu"}


def write_sweep(tmp_path, train_build, name="s", methods=("erm",), seeds=(0,), **extra):
    raw = {"name": name, "build": str(train_build), "out": str(tmp_path / name), "protocols": ["mico_OCI_to_M"],
           "seeds": list(seeds), "settings": {**SETTINGS, **extra.pop("settings", {})}, "methods": list(methods),
           **extra}
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def test_the_grid_expands_and_each_command_is_its_run(tmp_path, train_build):
    path = write_sweep(tmp_path, train_build, methods=["erm", {"label": "rfm-fo", "method": "rfm",
                                                               "options": ["meta_gradient=first-order"]}],
                       seeds=[0, 1], variants=["all", "no-devel"])
    raw = yaml.safe_load(path.read_text())
    raw["protocols"].append("mico_OMI_to_C")
    path.write_text(yaml.safe_dump(raw))
    sweep = load_sweep(path)
    assert len(sweep.runs) == 2 * 2 * 2 * 2 and len({r.run_id for r in sweep.runs}) == 16
    run = next(r for r in sweep.runs if r.run_id == "rfm-fo/mico_OMI_to_C@no-devel/seed1")
    assert run.folder == tmp_path / "s" / "rfm-fo/mico_OMI_to_C@no-devel/seed1"
    for run in sweep.runs:  # the printed command gives the trainer exactly the run's settings
        args = build_parser().parse_args(train_command(run.config)[3:])
        parsed = RunConfig(**{k: getattr(args, k) for k in RunConfig.__dataclass_fields__ if hasattr(args, k)},
                           options=tuple(args.option))
        assert parsed == run.config
    for bad, message in (({"seed": [0]}, "unknown key"), ({"methods": ["nope"]}, "needs a method"),
                         ({"methods": ["erm", "erm"]}, "a label of its own"),
                         ({"protocols": ["mico_XYZ"]}, "no such file, nor a shipped protocol"),
                         ({"settings": {"out": "x"}}, "not trainer settings"),
                         ({"settings": {**SETTINGS, "steps": "60"}}, "settings.steps: Input should be a valid integer"),
                         ({"settings": {**SETTINGS, "eval_every": 0}}, "--eval-every 0: must be at least 1")):
        path.write_text(yaml.safe_dump({**raw, **bad}))
        with pytest.raises((ValueError, FileNotFoundError), match=message):
            load_sweep(path)


def test_a_failed_run_is_reported_the_others_finish_and_finished_runs_are_skipped(tmp_path, train_build, capsys):
    broken = {"label": "broken", "method": "erm", "options": ["lr=.nan"]}  # a float, refused by the optimiser
    path = write_sweep(tmp_path, train_build, methods=["erm", broken], seeds=[0, 1])
    assert run_sweep(str(path), workers=2) == 1
    out = capsys.readouterr().out
    assert "2 of 4 runs finished" in out and f"NOT FINISHED broken/mico_OCI_to_M/seed0: folder {tmp_path}/s/broken" in out
    assert "Invalid learning rate: nan" in (tmp_path / "s/broken/mico_OCI_to_M/seed0/train.log").read_text()
    partial = (tmp_path / "s/table.partial.md").read_text()
    assert "PARTIAL" in partial and "| erm |" in partial and "| broken |" not in partial
    assert not (tmp_path / "s/table.md").exists()
    reports = {seed: json.loads((tmp_path / f"s/erm/mico_OCI_to_M/seed{seed}/report.json").read_text())
               for seed in (0, 1)}
    mtimes = {seed: os.stat(tmp_path / f"s/erm/mico_OCI_to_M/seed{seed}/report.json").st_mtime_ns for seed in (0, 1)}
    path.write_text(path.read_text().replace("- label: broken", "- label: gone").replace(
        "- lr=.nan", "- lr=0.01"))  # the broken entry fixed under another label
    assert run_sweep(str(path), workers=2) == 0
    assert mtimes == {s: os.stat(tmp_path / f"s/erm/mico_OCI_to_M/seed{s}/report.json").st_mtime_ns for s in (0, 1)}
    assert not (tmp_path / "s/table.partial.md").exists()
    # the table's cell is the mean and std over seeds of the reports, in %
    hter = [100 * r["metrics"]["video"]["hter_at_target_eer_threshold"] for r in reports.values()]
    auc = [100 * r["metrics"]["video"]["auc"] for r in reports.values()]
    mean, std = pd.Series(hter).mean(), pd.Series(hter).std(ddof=0)
    row = next(line for line in (tmp_path / "s/table.md").read_text().splitlines() if line.startswith("| erm |"))
    assert row.strip("| ").split(" | ")[1] == f"{mean:.2f} ± {std:.2f}"
    assert row.strip("| ").split(" | ")[2] == f"{pd.Series(auc).mean():.2f} ± {pd.Series(auc).std(ddof=0):.2f}"
    table = pd.read_csv(tmp_path / "s/table.csv")
    assert sorted(table["run"]) == ["erm/mico_OCI_to_M/seed0", "erm/mico_OCI_to_M/seed1",
                                    "gone/mico_OCI_to_M/seed0", "gone/mico_OCI_to_M/seed1"]
    first, video = table.set_index("run").loc["erm/mico_OCI_to_M/seed0"], reports[0]["metrics"]["video"]
    assert first["bpcer@apcer5%"] == video["bpcer_at_apcer"]["5%"]["bpcer"]  # the operating points as columns
    assert first["tpr@fpr0.1%"] == video["tpr_at_fpr"]["0.1%"]["tpr"]
    assert (tmp_path / "s/table.png").stat().st_size > 0
    text = (tmp_path / "s/table.md").read_text()
    assert "Published numbers are not shown" in text  # a demo build
    commit = json.loads((tmp_path / "s/erm/mico_OCI_to_M/seed0/run.json").read_text())["code"]["git_commit"]
    assert f"code {commit}" in text and f"fas-train sweep {path}" in text  # what made the table


def test_a_killed_sweep_resumes_its_runs(tmp_path, train_build):
    path = write_sweep(tmp_path, train_build, settings={"steps": 40, "eval_every": 10})
    folder = tmp_path / "s/erm/mico_OCI_to_M/seed0"
    sweep = subprocess.Popen([sys.executable, "-m", "fas_train", "sweep", str(path)], start_new_session=True,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while not (folder / "checkpoint.pt").exists() and time.monotonic() < deadline and sweep.poll() is None:
        time.sleep(0.2)
    os.killpg(sweep.pid, signal.SIGKILL)
    sweep.wait()
    assert (folder / "checkpoint.pt").exists() and not (folder / "report.json").exists()
    result = subprocess.run([sys.executable, "-m", "fas_train", "sweep", str(path)], capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    losses = pd.read_csv(folder / "metrics.csv").query("kind == 'train' and name == 'total'")["step"].tolist()
    assert losses == list(range(1, 41))  # resumed from the checkpoint: every step's loss logged once
    assert (folder / "train.log").read_text().count("$ ") == 2


def test_luigis_central_scheduler_runs_a_sweep(tmp_path, train_build):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    luigid = subprocess.Popen([str(Path(sys.executable).parent / "luigid"), "--port", str(port), "--address",
                               "127.0.0.1", "--state-path", str(tmp_path / "luigi.state"), "--logdir",
                               str(tmp_path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(100):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            time.sleep(0.1)
        path = write_sweep(tmp_path, train_build)
        result = subprocess.run([sys.executable, "-m", "fas_train", "sweep", str(path), "--scheduler",
                                 f"127.0.0.1:{port}"], capture_output=True, text=True, timeout=300)
        assert result.returncode == 0, result.stdout + result.stderr
        assert (tmp_path / "s/table.md").is_file() and "1 of 1 runs finished" in result.stdout
    finally:
        luigid.terminate()
        luigid.wait()


def test_runs_on_several_gpus_each_get_their_own(tmp_path):
    with gpu_slot(tmp_path, ["0", "1"]) as first, gpu_slot(tmp_path, ["0", "1"]) as second:
        assert {first, second} == {"0", "1"}
    with gpu_slot(tmp_path, ["0"]) as only:
        assert only is None  # one GPU (or none): runs see what the sweep sees


def test_published_numbers_name_their_paper_and_table():
    entries = load_published()
    assert entries
    protocols = {load_protocol(p).name for p in (CONFIGS / "protocols").glob("*.yaml")}
    for entry in entries:
        assert {"paper", "table", "where", "method", "protocol", "hter", "auc"} <= set(entry), entry
        assert entry["method"] in METHODS and entry["protocol"] in protocols, entry
        assert entry["auc"] is not None and all(0 <= entry[k] <= 100 for k in ("hter", "auc") if entry[k] is not None)
        assert entry["level"] in ("frame", "video", "video branch") and isinstance(entry["frames"], str), entry
    assert len({(e["method"], e["protocol"]) for e in entries}) == len(entries)  # one number per method and cell
    assert {e["paper"] for e in entries} == {"RFM", "D2AM", "PDL-FAS", "CCDD", "Meta Pattern"}


def test_shipped_sweeps_and_the_makefiles_load():
    for path in sorted((CONFIGS / "sweeps").glob("*.yaml")):
        sweep = load_sweep(path.stem)
        assert sweep.name == path.stem and len(sweep.runs) == len({r.run_id for r in sweep.runs}) > 0
    named = re.findall(r"fas_train sweep (\w+)", (Path(__file__).parents[1] / "Makefile").read_text())
    assert named == ["benchmark_mico"] and len(load_sweep(named[0]).runs) == 7 * 4 * 3


def test_a_paper_level_sweep_compares_each_method_at_its_published_level(tmp_path):
    """RFM's numbers are frame-level (its code scores frames), CCDD's the video branch's, Meta Pattern's taken
    at video level: ``level: paper`` tabulates each run so, and the published row says how both were made."""
    assert [run_level("paper", m) for m in ("rfm", "d2am", "pdl", "metapattern", "erm")] == \
        ["frame", "frame", "frame", "video", "video"]
    assert run_level("frame", "metapattern") == "frame" and run_level("video", "rfm") == "video"
    runs = []
    for method, compared in (("rfm", "frame_scores"), ("metapattern", "frame_scores"), ("ccdd-video", "video_branch")):
        folder = tmp_path / method
        folder.mkdir()
        metrics = {level: {"auc": auc, "hter_at_target_eer_threshold": 0.1} for level, auc in
                   (("frame", 0.6), ("video", 0.7), ("video_branch", 0.8))}
        (folder / "report.json").write_text(json.dumps({"protocol": "mico_OCI_to_M", "variant": "all", "selection":
                                                        "source validation", "compared": compared, "metrics": metrics}))
        runs.append(SimpleNamespace(folder=folder, run_id=method, label=method, protocol="mico_OCI_to_M", seed=0,
                                    variant=None, config=SimpleNamespace(method=method)))
    rows = run_rows(SimpleNamespace(runs=runs, level="paper")).set_index("method")
    assert rows.loc["rfm", "auc"] == 0.6 and rows.loc["metapattern", "auc"] == 0.7
    assert rows.loc["ccdd-video", "auc"] == 0.8 and rows.loc["ccdd-video", "level"] == "video branch"
    paper = {e["protocol"]: e for e in load_published() if e["method"] == "rfm"}
    row = published_row(paper, ["O&C&I->M"], lambda column: None, "ours: frame level, 2 evenly spaced frames per video")
    assert "(RFM, Table 1; frame level, every pre-cut frame; ours: frame level, 2 evenly spaced" in row
    assert "| 13.89 | 93.98 |" in row


def test_a_builds_frames_per_video_in_words(train_build):
    assert frames_per_video(train_build) == "2 evenly spaced frames per video"
