"""Nothing the project loads can run code: a checkpoint, a best model or a depth weight file that carries a
pickle payload is refused, naming the file, and the payload never runs."""
from __future__ import annotations

import builtins
import hashlib
import json
import subprocess
import sys

import pytest
import torch

from fas_train.evaluation import evaluate_run
from fas_train.train import run
from pipeline.depth import DEPTH_WEIGHTS, FAN_WEIGHTS, FanLandmarks

from test_train import config


class Payload:
    """Unpickling this creates ``path`` (a stand-in for any code an attacker would run)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return builtins.open, (self.path, "w")


def crafted(path, marker) -> None:
    """Rewrite a real torch file with a payload beside its content (and, where a sha256 record is beside it,
    the record too, as a hostile author would: the hash detects damage, the loader must refuse the payload)."""
    data = torch.load(path, weights_only=True)
    torch.save({**data, "extra": Payload(marker)} if isinstance(data, dict) else {"x": Payload(marker)}, path)
    record = path.with_name(f"{path.name}.sha256")
    if record.is_file():
        record.write_text(json.dumps({"sha256": [hashlib.sha256(path.read_bytes()).hexdigest()]}))


def test_the_payload_runs_when_unpickled(tmp_path):  # the control: the crafted files are real threats
    path = tmp_path / "w.pt"
    torch.save({"x": Payload(tmp_path / "ran")}, path)
    torch.load(path, weights_only=False)
    assert (tmp_path / "ran").exists()


def test_a_crafted_checkpoint_is_refused_by_resume_and_eval(train_build, tmp_path):
    out = tmp_path / "run"
    run(config(train_build, out, 2))
    marker = tmp_path / "ran"
    crafted(out / "checkpoint.pt", marker)
    with pytest.raises(ValueError, match=rf"{out / 'checkpoint.pt'}: refused: not a plain weights file"):
        run(config(train_build, out, 4))
    with pytest.raises(ValueError, match="checkpoint.pt: refused"):
        evaluate_run(out)
    done = subprocess.run([sys.executable, "-m", "fas_train", "eval", "--run", str(out)], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 2 and "checkpoint.pt: refused" in done.stderr
    assert not marker.exists()

    clean = tmp_path / "clean"
    run(config(train_build, clean, 2))
    crafted(clean / "best.pt", marker)  # the kept model is read by the final report
    with pytest.raises(ValueError, match="best.pt: refused"):
        evaluate_run(clean)
    assert not marker.exists()


def test_a_crafted_depth_weight_file_is_refused(tmp_path):
    from face_alignment.models import FAN
    torch.save(FAN(4).state_dict(), tmp_path / FAN_WEIGHTS)
    torch.save({"state_dict": {}, "extra": Payload(tmp_path / "ran")}, tmp_path / DEPTH_WEIGHTS)
    with pytest.raises(ValueError, match=f"{DEPTH_WEIGHTS}: refused"):
        FanLandmarks(str(tmp_path))
    assert not (tmp_path / "ran").exists()
    torch.save({"x": Payload(tmp_path / "ran")}, tmp_path / FAN_WEIGHTS)
    with pytest.raises(ValueError, match=f"{FAN_WEIGHTS}: refused"):
        FanLandmarks(str(tmp_path))
    assert not (tmp_path / "ran").exists()
