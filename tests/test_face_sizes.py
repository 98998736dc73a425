"""Detector sizing per dataset: measured face sizes, the recommendation, and the build using it."""
from __future__ import annotations

import numpy as np
import pytest
import yaml

from pipeline import extract
from pipeline.cli import main
from pipeline.config import BuildConfig, FaceConfig, FrameConfig, config_from_dict
from pipeline.face_sizes import STOCK, FaceSizes, measure, recommend, smallest_searched
from pipeline.faces import FaceDetector
from pipeline.frames import read_frames


def sizes(sides, frame):
    return FaceSizes("oulu", 1, len(sides), np.array(sides, float), np.array([frame] * len(sides), float), [])


def test_recommendation_downscales_as_far_as_the_smallest_face_allows():
    advice = recommend(sizes([300, 400], (1080, 1920)), margin=0.5)
    assert advice == {"max_side": 512, "min_face_size": 40}  # 150 frame px -> 40 detector px: 1920 * 40 / 150
    assert smallest_searched(FaceConfig(**advice), 1080, 1920) == pytest.approx(150, abs=0.5)
    # faces too small to downscale: full frames, smaller faces searched
    assert recommend(sizes([60, 90], (240, 320)), margin=0.5) == {"max_side": 320, "min_face_size": 30}
    with pytest.raises(ValueError, match="no face found"):
        recommend(sizes([], (240, 320)))


def test_sizing_is_per_dataset_validated_and_hashed_only_when_set():
    base = {"name": "x", "datasets": {"oulu": "/o", "msu": "/m"}, "output_dir": "/tmp/x"}
    plain = config_from_dict(base, "t.yaml")
    sized = config_from_dict({**base, "face": {"sizing": {"oulu": {"max_side": 480, "min_face_size": 60}}}}, "t.yaml")
    assert "sizing" not in plain.content()["face"] and plain.config_hash() != sized.config_hash()
    assert (sized.face.for_dataset("oulu").max_side, sized.face.for_dataset("oulu").min_face_size) == (480, 60)
    assert sized.face.for_dataset("msu") == plain.face  # datasets without an entry keep the defaults
    for bad in ({"mars": {"max_side": 480}}, {"oulu": {"max_side": 4}}, {"oulu": {"step": 2}}, {"oulu": {}}):
        with pytest.raises(ValueError, match="t.yaml.*face.sizing"):
            config_from_dict({**base, "face": {"sizing": bad}}, "t.yaml")


def test_each_sizing_gets_its_own_detector_loaded_once(tmp_path):
    config = BuildConfig(name="x", datasets={"oulu": "/o", "msu": "/m"}, output_dir=str(tmp_path), face=FaceConfig(
        sizing={"oulu": {"max_side": 480, "min_face_size": 60}}))
    oulu, _ = extract._models(config, "generic", "oulu")
    msu, _ = extract._models(config, "generic", "msu")
    assert (oulu.mtcnn.min_face_size, oulu.config.max_side) == (60, 480)
    assert (msu.mtcnn.min_face_size, msu.config.max_side) == (40, 640)
    assert extract._models(config, "generic", "oulu")[0] is oulu and extract._models(config, "generic", "msu")[0] is msu


def test_face_sizes_command_measures_the_copy_and_its_advice_loses_no_face(corpus, tmp_path, capsys):
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump({"name": "fs", "datasets": {"msu": str(corpus / "msu")},
                                      "output_dir": str(tmp_path / "out")}))
    assert main(["face-sizes", "--config", str(config), "--videos", "6", "--frames", "1", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "msu: 6 videos, 6 frames" in out
    advice = yaml.safe_load(out.split("for the build config (face section):")[1])["sizing"]["msu"]
    measured = measure("msu", str(corpus / "msu"), videos=6, frames=1, quiet=True)
    assert len(measured.sides) == 6 and 0 < measured.fractions.min() <= measured.fractions.max() <= 1
    assert advice == recommend(measured)
    stock, sized = FaceDetector(STOCK), FaceDetector(FaceConfig(**advice))
    found = lost = 0
    for frames in frames_by_size(corpus / "msu"):  # a detector call takes frames of one size
        for a, b in zip(stock.detect(frames), sized.detect(frames)):
            found += a is not None
            lost += a is not None and b is None
    assert found >= 10 and lost == 0


def frames_by_size(root):
    by_size = {}
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".mov", ".mp4")):
        frame = read_frames(path, FrameConfig(policy="even", count=1)).frames[0]
        by_size.setdefault(frame.shape, []).append(frame)
    return list(by_size.values())
