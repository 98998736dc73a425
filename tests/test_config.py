"""Build configs: the shipped ones load and fit the protocols and methods; bad ones are named precisely."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from fas_train.methods import METHODS
from fas_train.protocols import load_protocol
from pipeline.config import load_config

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("path", sorted((ROOT / "configs/build").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_build_configs_load(path):
    config = load_config(path)
    assert config.name == path.stem and len(config.config_hash()) == 64


def test_the_full_template_serves_every_protocol_and_the_video_method():
    full = load_config(ROOT / "configs/build/full.yaml")
    for path in sorted((ROOT / "fas_train/configs/protocols").glob("*.yaml")):
        protocol = load_protocol(path)
        assert set(protocol.sources) | {protocol.target} <= set(full.datasets), path.name
    clip_length = METHODS["ccdd-video"][1]().clip_length
    assert full.frames.count >= clip_length and full.depth.store_estimate  # ccdd-video clips, HFN + Depth


def test_bad_build_configs_name_the_file_and_the_field(tmp_path):
    good = yaml.safe_load((ROOT / "configs/build/demo.yaml").read_text())
    cases = [({**good, "frame": {"count": 2}}, r"unknown key\(s\) \['frame'\] in BuildConfig"),
             ({**good, "depth": {"backend": "prnet"}}, "depth.backend must be auto, face-alignment, mediapipe or generic"),
             ({**good, "depth": {"store_estimates": True}}, r"unknown key\(s\) \['store_estimates'\] in DepthConfig"),
             ({**good, "datasets": {"casia": "/x", "siw": "/y"}}, r"unknown \['siw'\]")]
    for number, (raw, message) in enumerate(cases):
        path = tmp_path / f"bad{number}.yaml"
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(ValueError, match=message) as caught:
            load_config(path)
        assert str(path) in str(caught.value)


def test_every_config_the_makefile_names_is_in_the_repository():
    named = set(re.findall(r"configs/[\w/.-]+\.yaml", (ROOT / "Makefile").read_text()))
    assert named and all((ROOT / path).is_file() for path in named), named
    tracked = subprocess.run(["git", "ls-files", *sorted(named)], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert set(tracked) == named  # committed, not only present here (a clean checkout must have them)
