"""A build stops cleanly: SIGTERM and SIGINT print what was finished and that a re-run resumes, and the
LocalCluster's worker processes never outlive the build process, not even after kill -9."""
from __future__ import annotations

import signal
import subprocess
import sys
import time

import psutil
import pytest

from pipeline.audit import audit

from test_build import build, write_config


def start(config):
    return subprocess.Popen([sys.executable, "-m", "pipeline", "build", "--config", str(config), "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def workers_of(process, results, timeout=240) -> list:
    """The build's dask worker processes, once the first video results are on disk."""
    deadline = time.monotonic() + timeout
    while not any(results.rglob("*.json")):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.05)
    workers = [p for p in psutil.Process(process.pid).children(recursive=True)
               if "multiprocessing" in " ".join(p.cmdline())]
    assert len(workers) >= 2, [p.cmdline() for p in psutil.Process(process.pid).children(recursive=True)]
    return workers


def gone(processes, timeout=20) -> bool:
    _, alive = psutil.wait_procs(processes, timeout=timeout)
    return not alive


@pytest.mark.parametrize("number", [signal.SIGTERM, signal.SIGINT])
def test_a_signalled_build_says_what_it_finished_and_resumes(corpus, tmp_path, number):
    config = write_config(tmp_path, {"casia": corpus / "casia", "msu": corpus / "msu"})
    process = start(config)
    workers = workers_of(process, tmp_path / "out/t/videos")
    process.send_signal(number)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 128 + number
    name = signal.Signals(number).name
    line = next(line for line in err.splitlines() if line.startswith("build 't' stopped by"))
    assert f"stopped by {name} after" in line and "video(s) extracted" in line and "a re-run resumes" in line
    assert gone(workers)
    assert build(config).returncode == 0
    assert audit(tmp_path / "manifests/t") == []


def test_workers_exit_when_the_build_is_killed_outright(corpus, tmp_path):
    config = write_config(tmp_path, {"casia": corpus / "casia"})
    process = start(config)
    workers = workers_of(process, tmp_path / "out/t/videos")
    process.kill()
    process.wait(timeout=30)
    assert gone(workers), [p.cmdline() for p in workers if p.is_running()]
