"""A training run stopped by SIGTERM, SIGINT or SIGUSR1 writes a checkpoint at the current step, says how
to resume, exits with status 75, and resumes to the same losses and scores as an uninterrupted run; under
torchrun every process stops after the same step."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pandas as pd
import psutil
import pytest
import torch

from fas_train.preemption import PREEMPTED_EXIT
from fas_train.train import run

from conftest import PROTOCOL
from test_train import config, train_rows

STEPS = 24


def command(train_build, out, method="rfm"):
    return ["-m", "fas_train", "train", "--method", method, "--build", str(train_build), "--protocol", PROTOCOL,
            "--out", str(out), "--steps", str(STEPS), "--eval-every", "10", "--checkpoint-every", "1000",
            "--per-class", "2", "--network", "small", "--input-size", "32", "--device", "cpu", "--quiet"]


def logged_steps(out) -> int:
    path = out / "metrics.jsonl"
    if not path.exists():
        return 0
    return sum('"kind": "train"' in line for line in path.read_text().splitlines() if line.endswith("}"))


def wait_for_steps(process, out, steps: int, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while logged_steps(out) < steps:
        assert process.poll() is None, "the run ended before it was signalled"
        assert time.monotonic() < deadline
        time.sleep(0.02)


def checkpoint_step(out) -> int:
    return json.loads(torch.load(out / "checkpoint.pt", weights_only=True)["state_json"])["step"]


def test_signals_stop_training_at_a_checkpoint_and_the_resumed_run_is_the_same(train_build, tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # the same arithmetic in every process
    straight = subprocess.run([sys.executable, *command(train_build, tmp_path / "straight")], env=env, timeout=300)
    assert straight.returncode == 0
    out = tmp_path / "stopped"
    stops = []
    for number, after in ((signal.SIGUSR1, 3), (signal.SIGINT, 9), (signal.SIGTERM, 15)):
        process = subprocess.Popen([sys.executable, *command(train_build, out)], stderr=subprocess.PIPE, text=True,
                                   env=env)
        wait_for_steps(process, out, after)
        process.send_signal(number)
        _, err = process.communicate(timeout=240)
        assert process.returncode == PREEMPTED_EXIT, err[-2000:]
        step = checkpoint_step(out)
        assert step == logged_steps(out) >= after and step < STEPS  # no eval point is needed: steps 4, 10 ...
        lines = [line for line in err.splitlines() if line.startswith("preempted:")]
        assert len(lines) == 1 and signal.Signals(number).name in lines[0] and f"after step {step} " in lines[0]
        assert "run the same train command again" in lines[0] and str(out / "checkpoint.pt") in lines[0]
        stops.append(step)
    assert len(set(stops)) == 3
    done = subprocess.run([sys.executable, *command(train_build, out)], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    straight, resumed = train_rows(tmp_path / "straight"), train_rows(out)
    assert sorted(resumed) == list(range(1, STEPS + 1))
    for step in resumed:
        assert resumed[step]["total"] == pytest.approx(straight[step]["total"], rel=1e-6, abs=1e-9), step
    first, second = (json.loads((folder / "report.json").read_text()) for folder in (tmp_path / "straight", out))
    flat = [pd.json_normalize(report["metrics"]).iloc[0].to_dict() for report in (first, second)]
    numbers = [{k: v for k, v in f.items() if isinstance(v, float)} for f in flat]
    assert first["best_step"] == second["best_step"] and numbers[0] == pytest.approx(numbers[1], rel=1e-6, nan_ok=True)
    assert [{k: v for k, v in f.items() if k not in n} for f, n in zip(flat, numbers)] == [
        {k: v for k, v in flat[1].items() if k not in numbers[1]}] * 2  # counts, names and flags exactly
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "straight/scores.csv"), pd.read_csv(out / "scores.csv"),
                                  rtol=1e-6)


def test_checkpoint_every_writes_checkpoints_between_evaluations(train_build, tmp_path):
    out = tmp_path / "run"
    run(config(train_build, out, 5, eval_every=100, checkpoint_every=2))
    assert checkpoint_step(out) == 5  # the last step evaluates
    run(config(train_build, tmp_path / "short", 3, eval_every=100, checkpoint_every=2))
    data = torch.load(tmp_path / "short/checkpoint.pt", weights_only=True)
    assert json.loads(data["state_json"])["best"]["step"] == 3
    process = subprocess.Popen([sys.executable, *command(train_build, tmp_path / "every")[:-1],
                                "--checkpoint-every", "2", "--eval-every", "1000"], stderr=subprocess.PIPE, text=True)
    wait_for_steps(process, tmp_path / "every", 5)
    process.kill()  # no chance to write anything: the last periodic checkpoint is what is left
    process.wait(timeout=60)
    step = checkpoint_step(tmp_path / "every")
    assert step % 2 == 0 and step >= 4


def test_under_torchrun_every_process_stops_after_the_same_step(train_build, tmp_path):
    out = tmp_path / "ddp"
    launcher = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
                                 "2", *command(train_build, out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    wait_for_steps(launcher, out, 3)
    ranks = {int(p.environ().get("LOCAL_RANK", -1)): p for p in psutil.Process(launcher.pid).children(recursive=True)
             if "fas_train" in p.cmdline()}
    ranks[1].send_signal(signal.SIGUSR1)  # only the second process hears it, as when one node is told to stop
    _, err = launcher.communicate(timeout=240)
    assert launcher.returncode != 0
    assert err.count("preempted:") == 1  # process 0 reports it
    step = checkpoint_step(out)
    assert step == logged_steps(out) >= 3 and step < STEPS
    assert len(torch.load(out / "checkpoint.pt", weights_only=True)["torch_rng"]) == 2
