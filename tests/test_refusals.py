"""Clear refusals: each names the file and what is wrong, exits 2 before any work (or keeps what was done), with
no traceback: duplicate keys in any YAML or model-folder JSON, changed or truncated checkpoints, two trainers on
one run folder, a sweep that cannot start, a checkpoint that the disk cannot hold, score files with nothing to
measure."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time

import pytest
import yaml

from fas_train.cli import main

from test_integrity import small_disk
from test_sweep import write_sweep

SMALL = ["--eval-every", "2", "--per-class", "2", "--network", "small", "--input-size", "32", "--device", "cpu",
         "--quiet"]


def train_args(build, out, steps=2):
    return ["train", "--method", "erm", "--build", str(build), "--protocol", "mico_OCI_to_M", "--out", str(out),
            "--steps", str(steps), *SMALL]


def test_a_duplicate_key_in_any_yaml_is_refused_naming_the_file_and_lines(tmp_path, train_build, erm_run, capsys):
    from fas_train.protocols import load_protocol
    from fas_train.sweep import load_sweep
    from pipeline.config import load_config
    from pipeline.yaml_files import parse_yaml
    config = tmp_path / "dup.yaml"
    config.write_text(f"name: dup\ndatasets:\n  msu: {tmp_path}\noutput_dir: {tmp_path}/out\nname: dup2\n")
    with pytest.raises(ValueError, match=re.escape(f"{config}:5:1: malformed YAML: duplicate key 'name' (also on "
                                                   "line 1)")):
        load_config(config)
    done = subprocess.run([sys.executable, "-m", "pipeline", "build", "--config", str(config)], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 2 and "duplicate key 'name'" in done.stderr and "Traceback" not in done.stderr
    assert not (tmp_path / "out").exists()  # refused before any work
    protocol = tmp_path / "p.yaml"
    protocol.write_text("name: p\ntrain: [O]\ntrain: [C]\n")
    with pytest.raises(ValueError, match=re.escape(f"{protocol}:3:1: malformed YAML: duplicate key 'train'")):
        load_protocol(protocol)
    sweep = write_sweep(tmp_path, train_build)
    sweep.write_text(sweep.read_text() + "settings: {steps: 8}\n")
    with pytest.raises(ValueError, match=re.escape(f"{sweep}") + r":\d+:1: malformed YAML: duplicate key 'settings'"):
        load_sweep(sweep)
    assert parse_yaml("a: 1\nb: {c: 2, d: 3}\n") == {"a": 1, "b": {"c": 2, "d": 3}}  # a nested pair is no repeat
    with pytest.raises(yaml.YAMLError, match="duplicate key 'c'"):
        parse_yaml("b: {c: 2, c: 3}")
    model = tmp_path / "model"
    assert main(["export", "--run", str(erm_run), "--out", str(model)]) == 0
    spec = (model / "model.json").read_text()
    (model / "model.json").write_text(spec.replace('{"format": 2,', '{"format": 2, "format": 1,', 1)
                                      if spec.startswith('{"format": 2,') else '{"format": 1, ' + spec[1:])
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--out", str(tmp_path / "p"), str(tmp_path)]) == 2
    assert f"{model / 'model.json'}: not JSON, or not as written (duplicate key(s) ['format'])" in capsys.readouterr().err


def test_a_changed_or_truncated_checkpoint_is_refused_naming_it(erm_run, train_build, tmp_path, capsys):
    run = tmp_path / "run"
    shutil.copytree(erm_run, run)
    checkpoint, best = run / "checkpoint.pt", run / "best.pt"
    assert json.loads((run / "checkpoint.pt.sha256").read_text())["sha256"] != []
    kept = checkpoint.read_bytes()
    changed = bytearray(kept)
    changed[len(changed) // 2] ^= 0x01  # same size, one bit: loads fine, resumes other weights
    checkpoint.write_bytes(bytes(changed))
    capsys.readouterr()
    assert main(train_args(train_build, run, steps=4)) == 2
    err = capsys.readouterr().err
    assert f"{checkpoint}: its bytes are not those written" in err and "Traceback" not in err
    checkpoint.write_bytes(kept[:len(kept) // 2])  # cut, and its record gone (a copy that lost it)
    (run / "checkpoint.pt.sha256").unlink()
    assert main(train_args(train_build, run, steps=4)) == 2
    assert f"{checkpoint}: not a complete weights file, truncated or damaged" in capsys.readouterr().err
    checkpoint.write_bytes(kept)  # the real bytes (its record gone: files of earlier runs load unchecked)
    best.write_bytes(best.read_bytes()[:100])
    assert main(["eval", "--run", str(run)]) == 2
    assert f"{best}: its bytes are not those written" in capsys.readouterr().err
    (run / "best.pt.sha256").unlink()
    assert main(["eval", "--run", str(run)]) == 2
    assert f"{best}: not a complete weights file, truncated or damaged" in capsys.readouterr().err
    shutil.copy(erm_run / "best.pt", best)
    assert main(train_args(train_build, run, steps=4)) == 0
    assert json.loads((run / "report.json").read_text())["steps"] == 4


def test_a_second_trainer_on_one_run_folder_is_refused_and_a_killed_ones_lock_taken_over(train_build, tmp_path):
    out = tmp_path / "run"
    command = [sys.executable, "-m", "fas_train", *train_args(train_build, out, steps=100000)]
    first = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (out / "metrics.jsonl").is_file():
            time.sleep(0.2)  # training: the lock is held and rows are being written
        assert (out / "metrics.jsonl").is_file()
        second = subprocess.run([sys.executable, "-m", "fas_train", *train_args(train_build, out, steps=4)],
                                capture_output=True, text=True, timeout=120)
        assert second.returncode == 2 and "Traceback" not in second.stderr
        assert f"{out}: another trainer is running in this run folder (host {socket.gethostname()}, pid " \
               f"{first.pid}, since" in second.stderr
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    third = subprocess.run([sys.executable, "-m", "fas_train", *train_args(train_build, out, steps=4)],
                           capture_output=True, text=True, timeout=300)
    assert third.returncode == 0, third.stderr  # the killed trainer's lock went with it
    steps = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()
             if json.loads(line).get("kind") == "train"]
    assert steps == sorted(set(steps)) and len(steps) >= 4  # no row written twice
    assert f"pid {os.getpid()}" not in (out / ".lock").read_text()  # the lock names the trainer, not the test


def test_a_refused_run_leaves_no_folder(train_build, tmp_path):
    out = tmp_path / "never"
    assert main([*train_args(train_build, out), "--option", "nope=1"]) == 2
    assert not out.exists()


def test_a_sweep_that_cannot_start_is_refused_before_any_run(tmp_path, train_build, capsys):
    path = write_sweep(tmp_path, train_build)
    with socket.socket() as probe:  # a port with nothing listening
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    capsys.readouterr()
    assert main(["sweep", str(path), "--scheduler", f"127.0.0.1:{port}"]) == 2
    err = capsys.readouterr().err
    assert f"--scheduler 127.0.0.1:{port}: nothing answers there" in err and "Traceback" not in err
    raw = yaml.safe_load(path.read_text())
    for change, message in (({"methods": [{"method": "erm", "options": ["nope=1"]}]}, "method entry 'erm': option "
                                                                                      "'nope=1'"),
                            ({"methods": [{"method": "rfm", "options": ["inner_lr=fast"]}]}, "inner_lr is float"),
                            ({"methods": ["erm", {"method": "rfm", "label": "erm"}]}, "a label of its own"),
                            ({"build": str(tmp_path / "missing")}, "build manifest not found")):
        path.write_text(yaml.safe_dump({**raw, **change}))
        assert main(["sweep", str(path)]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert not (tmp_path / "s").exists()  # no run started


def test_a_full_disk_while_a_checkpoint_is_written_keeps_the_previous_one(erm_run, train_build, tmp_path,
                                                                          monkeypatch, capsys):
    with small_disk(tmp_path / "disk", 200) as resize:
        run = tmp_path / "disk" / "run"
        shutil.copytree(erm_run, run)
        kept = (run / "checkpoint.pt").read_bytes()
        if resize is None:  # no tmpfs here: torch.save fails as it does on a full disk, and the disk reads full
            import fas_train.checkpoint as checkpoint
            real_usage = shutil.disk_usage

            def full(content, path):
                open(path, "wb").write(b"PK")
                raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 576 vs 534")
            monkeypatch.setattr(checkpoint.torch, "save", full)
            monkeypatch.setattr(checkpoint.shutil, "disk_usage", lambda p: real_usage(p)._replace(free=1 << 20))
        else:
            used = sum(p.stat().st_size for p in run.rglob("*") if p.is_file())
            resize(max(1, (used >> 20) + 1))  # room for nothing new
        capsys.readouterr()
        assert main(train_args(train_build, run, steps=4)) == 1
        err = capsys.readouterr().err
        assert re.search(rf"{re.escape(str(run))}/(checkpoint|best)\.pt: could not be written \(.*MiB free on its "
                         r"device: the disk is full\); the previous (checkpoint|best)\.pt is kept", err), err
        assert "Traceback" not in err
        assert (run / "checkpoint.pt").read_bytes() == kept and not list(run.glob(".*.tmp*"))
        monkeypatch.undo()
        if resize is not None:
            resize(200)
        assert main(train_args(train_build, run, steps=4)) == 0  # the kept checkpoint resumes
        assert json.loads((run / "report.json").read_text())["steps"] == 4


def test_score_files_with_nothing_to_measure_are_named(tmp_path, capsys):
    header, one_class, scores = tmp_path / "header.csv", tmp_path / "live.csv", tmp_path / "scores.csv"
    header.write_text("label,score\n")
    one_class.write_text("label,score\n1,0.9\n1,0.8\n")
    scores.write_text("label,score\n1,0.9\n0,0.2\n1,0.7\n0,0.4\n")
    for args, message in (([str(header)], f"{header}: holds no scores (a header only)"),
                          ([str(scores), "--dev", str(one_class)], f"{one_class}: only bona fide presentations (2)"),
                          ([str(scores), "--dev", str(header)], f"{header}: holds no scores")):
        assert main(["metrics", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert main(["metrics", str(scores), "--dev", str(scores)]) == 0
