"""Shared fixtures: one small demo corpus per test session (real videos, real faces) and one small build of it."""
from __future__ import annotations

import subprocess
import sys

import pytest
import yaml

from pipeline.demo import DemoConfig, write_demo_corpus

SMALL = DemoConfig(seed=3, frames=6, subjects_per_split=1)
PROTOCOL = "mico_OCI_to_M"


@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    write_demo_corpus(root, SMALL, quiet=True)
    return root


@pytest.fixture(scope="session")
def train_build(corpus, tmp_path_factory):
    """A build of the corpus: 2 frames per video, 64 px crops, generic depth, depth estimates stored."""
    tmp = tmp_path_factory.mktemp("trainbuild")
    config = {"name": "b", "datasets": {d: str(corpus / d) for d in ("casia", "replay", "msu", "oulu")},
              "output_dir": str(tmp / "out"), "manifest_dir": str(tmp / "manifests"),
              "frames": {"policy": "even", "count": 2}, "face": {"size": 64}, "depth": {"backend": "generic", "store_estimate": True},
              "compute": {"workers": 2, "device": "cpu"}}
    (tmp / "b.yaml").write_text(yaml.safe_dump(config))
    subprocess.run([sys.executable, "-m", "pipeline", "build", "--config", str(tmp / "b.yaml"), "--quiet"],
                   check=True, capture_output=True, timeout=300, umask=0o022)  # a shared cluster's usual umask
    return tmp / "manifests" / "b"


@pytest.fixture(scope="session")
def erm_run(train_build, tmp_path_factory):
    """A finished ERM run of ``train_build`` (two steps, the small network, 32 px)."""
    from fas_train.cli import main
    run = tmp_path_factory.mktemp("erm") / "run"
    assert main(["train", "--method", "erm", "--build", str(train_build), "--protocol", PROTOCOL, "--out", str(run),
                 "--steps", "2", "--eval-every", "2", "--per-class", "2", "--network", "small", "--input-size", "32",
                 "--device", "cpu", "--quiet"]) == 0
    return run


@pytest.fixture
def pca_widths(monkeypatch):
    """The (asked, returned) widths of every PCA the pseudo-domain clustering fits while the test runs."""
    import fas_train.pseudo_domains as pseudo
    seen = []

    class Recorded(pseudo.PCA):
        def fit_transform(self, X, y=None):
            out = super().fit_transform(X, y)
            seen.append((self.n_components, out.shape[1]))
            return out

    monkeypatch.setattr(pseudo, "PCA", Recorded)
    return seen
