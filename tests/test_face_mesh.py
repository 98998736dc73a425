"""The mediapipe depth backend on real faces (scikit-image's astronaut and LFW faces): per-person maps, the
nose nearest, a rolled face gives a rolled map, a crop without a face gets the recorded fallback; the model
loading errors; a build records backend, model hash and each sample's depth source; the contact sheet."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import cv2
import h5py
import numpy as np
import pandas as pd
import pytest
from skimage import data

from pipeline import face_mesh
from pipeline.config import BuildConfig, DepthConfig, FaceConfig
from pipeline.depth import generic_depth, landmark_depth, resolve_backend
from pipeline.extract import depth_estimates
from pipeline.faces import FaceDetector, crop_face, crop_matrix, transform_points
from pipeline.preview import CAPTION, COLUMNS, HEADER, LABELS, TILE, caption_lines, contact_sheet, tiles

from test_build import build, write_config


@pytest.fixture(scope="module")
def faces():
    """Aligned 256 px crops of six real people, with their detections and crop matrices."""
    lfw = data.lfw_subset()
    images = [cv2.resize(data.astronaut()[:300, 100:400], (300, 300))]
    images += [cv2.cvtColor(cv2.resize((lfw[i] * 255).astype(np.uint8), (250, 250), interpolation=cv2.INTER_CUBIC),
                            cv2.COLOR_GRAY2RGB) for i in (0, 10, 20, 30, 40)]
    detector, config = FaceDetector(FaceConfig(), "cpu"), FaceConfig()
    out = []
    for image in images:
        det = detector.detect([image])[0]
        matrix = crop_matrix(det, config)
        out.append((crop_face(image, matrix, 256), det, matrix))
    return out


@pytest.fixture(scope="module")
def mesh():
    return face_mesh.FaceMeshLandmarks()


def test_maps_follow_each_persons_face(faces, mesh):
    maps, generic = [], []
    for crop, det, matrix in faces:
        points = mesh.predict(crop)
        assert points.shape == (468, 3)
        depth = landmark_depth(points, 256, 32)
        maps.append(depth)
        generic.append(generic_depth(transform_points(det.landmarks, matrix), 256, 32))
        at = lambda p: depth[int(p[1] / 8), int(p[0] / 8)]  # noqa: E731
        assert at(points[4]) > max(at(points[50]), at(points[280])) + 0.1  # the nose tip is nearer than the cheeks
        forehead, chin = 0.7 * points[10] + 0.3 * points[168], 0.7 * points[152] + 0.3 * points[17]
        assert at(forehead) > 0 and at(chin) > 0  # near the mesh's top (10) and chin (152): not a small hull
    pairs = lambda ms: np.mean([np.abs(a - b).mean() for i, a in enumerate(ms) for b in ms[i + 1:]])  # noqa: E731
    assert pairs(maps) > 4 * pairs(generic)  # different people, different maps (measured: 0.146 vs 0.017)


def test_a_rolled_face_gives_a_rolled_map(faces, mesh):
    crop = faces[0][0]
    turn = cv2.getRotationMatrix2D((128, 128), 20, 1.0)
    rolled = cv2.warpAffine(crop, turn, (256, 256))
    upright = landmark_depth(mesh.predict(crop), 256, 32)
    turned = landmark_depth(mesh.predict(rolled), 256, 32)
    expected = cv2.warpAffine(upright, cv2.getRotationMatrix2D((16, 16), 20, 1.0), (32, 32))
    assert np.abs(turned - expected).mean() < 0.5 * np.abs(turned - upright).mean()


def test_a_crop_without_a_face_gets_the_fallback_and_says_so(faces, mesh):
    _, det, matrix = faces[0]
    noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
    config = BuildConfig(name="x", datasets={"msu": "."}, output_dir=".", face=FaceConfig(size=256),
                         depth=DepthConfig(backend="mediapipe"))
    found = depth_estimates([(None, 0, det, matrix)] * 2, [faces[0][0], noise], "mediapipe", mesh, config.face,
                            config.depth)
    assert found[0][1] == "mediapipe" and found[1][1] == "generic fallback: Face Mesh found no face in the crop"
    assert np.array_equal(found[1][0], np.clip(np.rint(generic_depth(transform_points(det.landmarks, matrix), 256, 32)
                                                       * 255), 0, 255).astype(np.uint8))
    strict = BuildConfig(name="x", datasets={"msu": "."}, output_dir=".", face=FaceConfig(size=256),
                         depth=DepthConfig(backend="mediapipe", fallback="reject"))
    assert depth_estimates([(None, 0, det, matrix)], [noise], "mediapipe", mesh, strict.face, strict.depth) == \
        [(None, "Face Mesh found no face in the crop")]


def test_the_model_file_missing_or_unreadable_is_named(tmp_path, monkeypatch):
    assert resolve_backend("auto", str(tmp_path)) == "mediapipe"  # no face-alignment weights there
    missing = tmp_path / "face_landmark.tflite"
    monkeypatch.setattr(face_mesh, "model_path", lambda: missing)
    face_mesh.model_sha256.cache_clear()
    try:
        with pytest.raises(FileNotFoundError, match=f"{missing}: Face Mesh model file missing"):
            resolve_backend("mediapipe", None)
        assert not face_mesh.available()
        with pytest.raises(FileNotFoundError, match=f"{missing}: Face Mesh model file missing"):
            face_mesh.FaceMeshLandmarks()  # before any graph is built
        missing.mkdir()  # something unreadable as a model file where the file should be
        face_mesh.model_sha256.cache_clear()
        with pytest.raises(FileNotFoundError, match=str(missing)):
            face_mesh.model_sha256()
    finally:
        face_mesh.model_sha256.cache_clear()


def test_a_build_records_the_backend_its_model_and_each_samples_depth_source(corpus, tmp_path):
    root = tmp_path / "msu"
    shutil.copytree(corpus / "msu", root)
    config = write_config(tmp_path, {"msu": root}, depth={"backend": "auto", "store_estimate": True})
    result = build(config)
    manifest = json.loads((tmp_path / "manifests/t/manifest.json").read_text())
    assert manifest["depth_backend"] == "mediapipe" and "depth backend: mediapipe (" in result.stdout
    assert manifest["depth_model"] == {"mediapipe/modules/face_landmark/face_landmark.tflite": face_mesh.model_sha256()}
    samples = pd.read_csv(tmp_path / "manifests/t/samples.csv", keep_default_na=False)
    assert set(samples["depth_source"]) <= {"mediapipe", "generic fallback: Face Mesh found no face in the crop"}
    assert sum(manifest["depth_sources"].values()) == len(samples)
    with h5py.File(tmp_path / "out/t/shards" / samples["shard"].iloc[0], "r") as f:
        assert json.loads(f.attrs["depth_model"]) == manifest["depth_model"]
        spoof = int(samples.index[samples["label"] == "spoof"][0]) - int(samples.index[samples["shard"] ==
                                                                                       samples["shard"].iloc[0]][0])
        assert f["depth"][spoof].max() == 0 and f["depth_estimate"][spoof].max() > 0  # attacks: an estimate, no target

    image, shown = contact_sheet(tmp_path / "manifests/t", n=5, label="live")
    rows = -(-len(shown) // COLUMNS)
    assert image.shape == (HEADER + rows * (TILE + CAPTION), COLUMNS * 5 * TILE, 3) and (shown["label"] == "live").all()
    header = image[:HEADER]
    assert all((header[:, c * TILE:(c + 1) * TILE] < 128).any() for c in range(COLUMNS * 5))  # every column labelled
    assert LABELS == ("crop", "HSV", "LBP (red)", "depth target", "depth estimate")
    first = shown.iloc[0]
    assert caption_lines(first, 0.98765) == (f"{first['video_id']} #{first['frame_index']}",
                                             f"live  face score 0.988  depth: {first['depth_source']}")
    with h5py.File(tmp_path / "out/t/shards" / shown["shard"].iloc[2], "r") as f:
        sample = {k: f[k][int(shown["row"].iloc[2])] for k in ("rgb", "hsv", "lbp", "depth", "depth_estimate")}
    third = HEADER + TILE + CAPTION  # the third sample: row 2, column 1
    first_row_of_third = image[third:third + TILE + CAPTION, :5 * TILE]
    assert np.array_equal(first_row_of_third[:TILE], np.concatenate(tiles(sample), axis=1))
    done = subprocess.run([sys.executable, "-m", "pipeline", "preview", str(tmp_path / "manifests/t"),
                           "--out", str(tmp_path / "sheet.png"), "--n", "4"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0 and cv2.imread(str(tmp_path / "sheet.png")).shape == (HEADER + 2 * (TILE + CAPTION),
                                                                                     COLUMNS * 5 * TILE, 3)


def test_a_fallback_is_stored_with_its_whole_reason(corpus, tmp_path, monkeypatch):
    from pipeline.config import FrameConfig
    from pipeline.extract import VideoJob, extract_video, load_result, result_path
    from pipeline.hashing import sha256_file
    monkeypatch.setattr(face_mesh.FaceMeshLandmarks, "predict", lambda self, crop: None)  # fits nothing
    path = corpus / "msu/scene01/real/real_client002_laptop_SD_scene01.mov"
    config = BuildConfig(name="f", datasets={"msu": str(corpus / "msu")}, output_dir=str(tmp_path),
                         frames=FrameConfig(count=2), face=FaceConfig(size=64), depth=DepthConfig(backend="mediapipe"))
    job = VideoJob("msu/x", str(path), "live", sha256_file(path), "msu")
    extract_video(job, config, "mediapipe", str(config.build_dir))
    arrays, rejects, _ = load_result(result_path(config.build_dir, job))
    assert list(arrays["depth_source"]) == ["generic fallback: Face Mesh found no face in the crop"] * 2
    assert rejects == [] and arrays["depth"].max() > 0


def test_face_mesh_start_up_lines_are_dropped_and_stderr_comes_back():
    """absl's and TFLite's start-up lines go to fd 2 whatever GLOG_minloglevel says: each worker printed them."""
    script = ("import contextlib, sys, cv2\n"
              "from skimage import data\n"
              "from pipeline import face_mesh\n"
              "if sys.argv[1] == 'off':\n"
              "    face_mesh.native_stderr_dropped = contextlib.nullcontext\n"
              "mesh = face_mesh.FaceMeshLandmarks()\n"
              "face = cv2.resize(data.astronaut()[:300, 100:400], (256, 256))\n"
              "print(mesh.predict(face).shape, mesh.predict(face).shape)\n"
              "print('stderr is back', file=sys.stderr)\n")
    noise = ("absl::InitializeLog", "XNNPACK", "inference_feedback_manager")
    runs = {mode: subprocess.run([sys.executable, "-c", script, mode], capture_output=True, text=True, timeout=120)
            for mode in ("on", "off")}
    assert all(r.returncode == 0 and r.stdout.split() == ["(468,", "3)", "(468,", "3)"] for r in runs.values())
    assert any(line in runs["off"].stderr for line in noise)  # what the workers printed before
    assert not any(line in runs["on"].stderr for line in noise) and "stderr is back" in runs["on"].stderr
