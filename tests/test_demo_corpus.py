"""The demo corpus: read unchanged by the indexers, decodable, deterministic, resumable, with real faces
(real MTCNN) and a measurable shift between domains."""
from __future__ import annotations

import json
import warnings

import cv2
import numpy as np
import pandas as pd
import pytest

from pipeline.demo import DemoConfig, write_demo_corpus
from pipeline.demo.corpus import MARKER, TRUTH
from pipeline.index import index_dataset

from conftest import SMALL


def decode(path):
    capture = cv2.VideoCapture(str(path))
    frames = []
    while True:
        ok, frame = capture.read()
        if not ok:
            return frames
        frames.append(frame)


def test_indexers_read_the_demo_corpus_unchanged(corpus):
    truth = pd.read_csv(corpus / TRUTH, dtype={"subject": str})
    for dataset in ("casia", "replay", "msu", "oulu"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a demo copy is incomplete by design
            table = index_dataset(dataset, corpus / dataset, quiet=True).table
        expected = truth[(truth["dataset"] == dataset) & (truth["split"] != "enroll")]
        merged = table.merge(expected, on="relpath", suffixes=("", "_truth"), validate="one_to_one")
        assert len(merged) == len(expected) == len(table), dataset
        for column in ("split", "label", "attack"):
            assert (merged[column] == merged[f"{column}_truth"]).all(), (dataset, column)
        assert set(table["label"]) == {"live", "spoof"}
    assert (truth["split"] == "enroll").sum() == 1  # Replay's enrolment video exists and is skipped


def test_demo_videos_decode_with_their_size_and_length(corpus):
    truth = pd.read_csv(corpus / TRUTH)
    for row in truth.itertuples():
        frames = decode(corpus / row.dataset / row.relpath)
        assert len(frames) == SMALL.frames, row.relpath
        assert frames[0].shape == (row.height, row.width, 3), row.relpath


def test_mtcnn_finds_the_demo_faces(corpus):
    from facenet_pytorch import MTCNN
    detector = MTCNN(device="cpu", min_face_size=40)
    truth = pd.read_csv(corpus / TRUTH)
    found = []
    for row in truth.itertuples():
        frame = decode(corpus / row.dataset / row.relpath)[SMALL.frames // 2]
        boxes, probs = detector.detect(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))
        found.append(boxes is not None and probs.max() > 0.9)
        if boxes is not None:  # the face fills a large part of the frame, as in the real datasets
            side = boxes[np.argmax(probs)][2] - boxes[np.argmax(probs)][0]
            assert side > 0.2 * min(row.height, row.width), row.relpath
    assert np.mean(found) >= 0.97, [r for r, f in zip(truth["relpath"], found) if not f]


def test_domains_have_their_own_capture_style(corpus):
    truth = pd.read_csv(corpus / TRUTH)
    blue_red = {}
    for dataset in ("casia", "replay"):
        ratios = []
        for row in truth[truth["dataset"] == dataset].itertuples():
            frame = decode(corpus / row.dataset / row.relpath)[0].astype(np.float64)
            ratios.append(frame[..., 0].mean() / frame[..., 2].mean())  # BGR: blue over red
        blue_red[dataset] = np.mean(ratios)
    assert blue_red["replay"] > 1.1 * blue_red["casia"]  # Replay's webcam is cool, CASIA's warm


def test_demo_corpus_is_deterministic_and_resumes(corpus, tmp_path):
    again = tmp_path / "again"
    write_demo_corpus(again, SMALL, workers=1, quiet=True)
    assert (again / MARKER).read_bytes() == (corpus / MARKER).read_bytes()
    # an interrupted run: a video missing and a temporary file left behind
    victim = again / "oulu/Test_files/1_1_36_4.avi"
    victim.unlink()
    (victim.parent / ".1_1_36_4.avi.abc.tmp.avi").write_bytes(b"partial")
    report = write_demo_corpus(again, SMALL, quiet=True)
    assert "(1 written now," in report
    assert (again / MARKER).read_bytes() == (corpus / MARKER).read_bytes()
    assert "(0 written now," in write_demo_corpus(again, SMALL, quiet=True)


def test_demo_corpus_refuses_a_folder_of_another_config(corpus):
    with pytest.raises(ValueError, match="holds a demo corpus made with"):
        write_demo_corpus(corpus, DemoConfig(seed=4, frames=6, subjects_per_split=1), quiet=True)


def test_marker_lists_every_video_with_its_hash(corpus):
    marker = json.loads((corpus / MARKER).read_text())
    truth = pd.read_csv(corpus / TRUTH)
    assert marker["videos"] == len(truth) == len(marker["sha256"])
    assert marker["config"] == {"seed": 3, "frames": 6, "subjects_per_split": 1, "version": 1, "oulu_protocols": False,
                                "shift": None}


def test_a_corpus_written_before_a_config_field_existed_is_still_recognised(tmp_path):
    from dataclasses import asdict
    from pipeline.demo.corpus import CONFIG_FILE, _claim
    old = {k: v for k, v in asdict(DemoConfig(seed=2)).items() if k != "oulu_protocols"}  # as older code wrote it
    (tmp_path / CONFIG_FILE).write_text(json.dumps(old))
    _claim(tmp_path, DemoConfig(seed=2))  # the missing field counts at its default
    with pytest.raises(ValueError, match="holds a demo corpus made with"):
        _claim(tmp_path, DemoConfig(seed=2, oulu_protocols=True))


def test_the_shift_profile_moves_every_domain_from_one_neutral_capture(tmp_path, corpus):
    from pipeline.demo.corpus import plan
    from pipeline.demo.shift import NEUTRAL_LOOK, NEUTRAL_STYLE, domain_look, domain_style
    alike = {(v.style, v.look) for v in plan(DemoConfig(subjects_per_split=1, shift=0.0))}
    assert alike == {(NEUTRAL_STYLE, NEUTRAL_LOOK)}  # at 0 every domain captures and attacks alike
    styles = {d: domain_style(d, 1.0) for d in ("casia", "replay", "msu", "oulu")}
    assert len(set(styles.values())) == 4 and len({domain_look(d, 1.0) for d in styles}) == 4
    half, full = domain_style("casia", 0.5), styles["casia"]
    assert half.wb_gains[0] == pytest.approx((NEUTRAL_STYLE.wb_gains[0] + full.wb_gains[0]) / 2)
    assert domain_style("replay", 2.0).blur_sigma > styles["replay"].blur_sigma > NEUTRAL_STYLE.blur_sigma  # the knob
    # the same config gives the same bytes, and the profile changes them
    shifted = tmp_path / "shifted"
    write_demo_corpus(shifted, DemoConfig(seed=3, frames=6, subjects_per_split=1, shift=1.0), quiet=True)
    again = tmp_path / "again"
    write_demo_corpus(again, DemoConfig(seed=3, frames=6, subjects_per_split=1, shift=1.0), quiet=True)
    marker = json.loads((shifted / MARKER).read_text())
    assert marker["sha256"] == json.loads((again / MARKER).read_text())["sha256"]
    classic = json.loads((corpus / MARKER).read_text())["sha256"]  # the same config without the profile
    assert sum(marker["sha256"][k] != classic[k] for k in classic) == len(classic)
    with pytest.raises(ValueError, match="holds a demo corpus made with"):
        write_demo_corpus(shifted, DemoConfig(seed=3, frames=6, subjects_per_split=1, shift=0.5), quiet=True)
