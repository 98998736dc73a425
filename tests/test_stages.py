"""The build's stages on their own: frame sampling and decoding, real MTCNN crops, depth rendering on known
geometry, the face-alignment weight loading path, and the channels."""
from __future__ import annotations

import os
import warnings

import cv2
import numpy as np
import pytest
from PIL import Image
from scipy.spatial import Delaunay

from pipeline.channels import channels, color_lbp, lbp
from pipeline.config import FaceConfig, FrameConfig
from pipeline.depth import (DEPTH_WEIGHTS, FAN_WEIGHTS, FACE_EDGE, generic_depth, landmark_depth, render_depth,
                            resolve_backend, weights_dir)
from pipeline.faces import Detection, FaceDetector, crop_face, crop_matrix, template, transform_points
from pipeline.frames import VideoError, read_frames, select_indices
from pipeline.hashing import sha256_file


def test_frame_sampling_policies():
    assert select_indices(100, FrameConfig(policy="even", count=4)) == [12, 37, 62, 87]
    assert select_indices(3, FrameConfig(policy="even", count=8)) == [0, 1, 2]  # a short video gives what it has
    assert select_indices(25, FrameConfig(policy="every", step=10)) == [0, 10, 20]
    assert select_indices(5, FrameConfig(policy="all")) == [0, 1, 2, 3, 4]
    assert select_indices(50, FrameConfig(policy="all", max_frames=3)) == [0, 1, 2]
    assert select_indices(0, FrameConfig()) == []
    with pytest.raises(ValueError, match="policy\n  Input should be 'even', 'every' or 'all'"):
        FrameConfig(policy="random")


def test_read_frames_decodes_the_selected_frames(corpus):
    path = corpus / "oulu/Train_files/2_2_01_1.avi"
    every = read_frames(path, FrameConfig(policy="all"))
    picked = read_frames(path, FrameConfig(policy="even", count=2))
    assert every.decoded_count == picked.decoded_count == 6 and picked.indices == [1, 4]
    assert np.array_equal(picked.frames[1], every.frames[4]) and picked.frames[0].shape == (270, 480, 3)


def test_decoding_is_one_pass_unless_the_container_lies(corpus, tmp_path, monkeypatch):
    import pipeline.frames
    opened = []
    real_open = pipeline.frames._open
    monkeypatch.setattr(pipeline.frames, "_open", lambda path: opened.append(path) or real_open(path))
    path = corpus / "oulu/Train_files/2_2_01_1.avi"
    decoded = read_frames(path, FrameConfig(policy="even", count=2))
    assert opened == [path] and decoded.indices == [1, 4]  # the header's 6 frames were there: one pass
    cut = tmp_path / "cut.avi"
    cut.write_bytes(path.read_bytes()[:int(path.stat().st_size * 0.7)])
    opened.clear()
    short = read_frames(cut, FrameConfig(policy="even", count=2))
    assert opened == [cut, cut] and (short.header_count, short.decoded_count) == (6, 4)
    assert short.indices == [1, 3]  # selected again on the 4 frames that are really there


def test_bad_videos_raise_errors_naming_the_file(tmp_path, corpus):
    empty = tmp_path / "empty.avi"
    empty.write_bytes(b"")
    garbage = tmp_path / "garbage.avi"
    garbage.write_bytes(os.urandom(5000))
    for path, reason in ((empty, "zero-length"), (garbage, "cannot open|no frame"),
                         (tmp_path / "absent.avi", "missing")):
        with pytest.raises(VideoError, match=f"{path}: .*({reason})"):
            read_frames(path, FrameConfig())
    # a truncated file whose header still claims every frame: the frames that decode are used
    source = (corpus / "oulu/Train_files/2_2_01_1.avi").read_bytes()
    truncated = tmp_path / "truncated.avi"
    truncated.write_bytes(source[: len(source) // 2])
    decoded = read_frames(truncated, FrameConfig(policy="all"))
    assert decoded.header_count == 6 and 0 < decoded.decoded_count < 6


def test_mtcnn_aligned_crop_puts_landmarks_on_the_template(corpus):
    detector = FaceDetector(FaceConfig(), "cpu")
    frames = read_frames(corpus / "msu/scene01/real/real_client002_laptop_SD_scene01.mov", FrameConfig(count=3))
    detections = detector.detect(frames.frames)
    assert all(d is not None and d.score > 0.9 for d in detections)
    config = FaceConfig(size=128, padding=0.37)
    for frame, det in zip(frames.frames, detections):
        matrix = crop_matrix(det, config)
        crop = crop_face(frame, matrix, config.size)
        assert crop.shape == (128, 128, 3)
        # similarity alignment leaves a residual of a few pixels at most
        assert np.abs(transform_points(det.landmarks, matrix) - template(128, 0.37)).max() < 6
        # MTCNN finds the face again in its own crop, centred
        again = detector.detect([cv2.resize(crop, (256, 256))])[0]
        assert again is not None and abs((again.box[0] + again.box[2]) / 2 - 128) < 30
    box = crop_matrix(detections[0], FaceConfig(crop="box", size=64, padding=0.1))
    x1, y1, x2, y2 = detections[0].box
    assert np.allclose(transform_points(np.array([[(x1 + x2) / 2, (y1 + y2) / 2]]), box), 32)


def test_aligned_chip_uses_the_public_mean_face_and_black_outside_the_frame():
    mean_x = np.array([0.224152, 0.75610125, 0.490127, 0.254149, 0.726104])
    mean_y = np.array([0.2119465, 0.2119465, 0.628106, 0.780233, 0.780233])
    expected = np.column_stack([(0.37 + mean_x) / 1.74 * 256, (0.37 + mean_y) / 1.74 * 256])
    assert np.allclose(template(256, 0.37), expected)
    # a face at the frame's left edge: its five landmarks land on those chip positions, the rest is black
    rng = np.random.default_rng(0)
    frame = rng.integers(1, 256, (240, 320, 3), dtype=np.uint8)
    landmarks = expected * 0.5 + np.array([-20.0, 40.0])  # a half-size copy of the chip's points, partly outside
    detection = Detection(np.array([0, 40, 100, 170.0]), landmarks, 0.99)
    matrix = crop_matrix(detection, FaceConfig())
    assert np.allclose(transform_points(landmarks, matrix), expected, atol=1e-6)
    chip = crop_face(frame, matrix, 256)
    assert (chip[:, :30] == 0).all() and (chip[100:150, 120:200] > 0).all()  # x < 0 of the frame is black
    eyes = template(256, 0.37)[1, 0] - template(256, 0.37)[0, 0]
    compact = template(256, 0.37, "compact")
    assert eyes / (compact[1, 0] - compact[0, 0]) == pytest.approx(0.53204 / 0.40, rel=1e-3)  # faces ~25% smaller
    edges = crop_face(frame, crop_matrix(detection, FaceConfig(template="compact")), 256, "compact")
    assert (edges > 0).all()  # compact: edge pixels replicated


def test_depth_of_a_tilted_plane_is_a_linear_ramp():
    g = np.linspace(0, 32, 9)
    x, y = np.meshgrid(g, g)
    points = np.column_stack([x.ravel(), y.ravel(), 2.0 * x.ravel() + 5])  # nearer to the right
    depth = render_depth(points, Delaunay(points[:, :2]).simplices, 32)
    assert np.allclose(depth, depth[0:1], atol=1e-6)  # constant down each column
    steps = np.diff(depth[16])
    assert np.all(steps > 0) and np.allclose(steps, steps.mean(), atol=1e-5)
    # normalisation spans the 64 supersampled pixel centres (63 steps); output pixel 0 averages steps 0 and 1
    assert depth[16, 0] == pytest.approx(FACE_EDGE + (1 - FACE_EDGE) * 0.5 / 63, abs=1e-5)
    assert depth[16, 31] == pytest.approx(1 - (1 - FACE_EDGE) * 0.5 / 63, abs=1e-5)


def test_depth_of_a_sphere_peaks_at_its_centre():
    size, r = 32, 12.0
    u = np.linspace(-1, 1, 41)
    gx, gy = np.meshgrid(u, u)
    inside = gx ** 2 + gy ** 2 <= 1
    xs, ys = 16 + r * gx[inside], 16 + r * gy[inside]
    zs = r * np.sqrt(np.clip(1 - gx[inside] ** 2 - gy[inside] ** 2, 0, 1))
    depth = render_depth(np.column_stack([xs, ys, zs]), Delaunay(np.column_stack([xs, ys])).simplices, size)
    assert depth[0, 0] == 0 and depth[16, 2] == 0  # background outside the disc
    assert np.unravel_index(depth.argmax(), depth.shape) in {(15, 15), (15, 16), (16, 15), (16, 16)}
    yy, xx = np.mgrid[0:size, 0:size] + 0.5
    interior = (xx - 16) ** 2 + (yy - 16) ** 2 < (r - 1.5) ** 2  # the rim is a polygon: compare inside it
    assert np.allclose(depth[interior], depth.T[interior], atol=0.02)
    assert np.allclose(depth[interior], depth[::-1, ::-1][interior], atol=0.02)
    # the profile follows the sphere: depth at radius rho is edge + (1-edge) * sqrt(1 - rho^2)
    rho = 6.0 / r
    assert depth[15:17, 21:23].mean() == pytest.approx(FACE_EDGE + (1 - FACE_EDGE) * np.sqrt(1 - rho ** 2),
                                                       abs=0.06)


def test_zbuffer_keeps_the_nearest_surface():
    far = [[0, 0, 1.0], [32, 0, 1.0], [0, 32, 1.0], [32, 32, 1.0]]
    near = [[8, 8, 3.0], [24, 8, 3.0], [8, 24, 3.0], [24, 24, 3.0]]
    points = np.array(far + near)
    triangles = np.array([[0, 1, 2], [1, 3, 2], [4, 5, 6], [5, 7, 6]])
    for order in (triangles, triangles[::-1]):
        depth = render_depth(points, order, 32)
        assert depth[16, 16] == pytest.approx(1.0) and depth[2, 2] == pytest.approx(FACE_EDGE)


def test_generic_depth_follows_the_landmarks():
    base = template(256, 0.37)
    depth = generic_depth(base, 256, 32)
    shifted = generic_depth(base + [40, 0], 256, 32)
    assert depth.max() == pytest.approx(1.0, abs=0.05) and depth[0, 0] == 0
    centroid = lambda d: (d * np.arange(32)).sum() / d.sum()  # noqa: E731
    assert centroid(shifted) - centroid(depth) == pytest.approx(40 * 32 / 256, abs=0.5)


def test_face_alignment_weights_load_from_a_folder_or_torch_home(tmp_path, monkeypatch):
    import torch
    from face_alignment.models import FAN, ResNetDepth
    from pipeline.depth import FanLandmarks
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    assert weights_dir(None) == tmp_path / "torch" / "hub" / "checkpoints"
    assert resolve_backend("auto", None) == "mediapipe"  # no face-alignment weights: Face Mesh, offline
    from pipeline import face_mesh
    monkeypatch.setattr(face_mesh, "available", lambda: False)
    with pytest.warns(UserWarning, match="GENERIC face surface"):  # neither: the last fallback, loudly
        assert resolve_backend("auto", None) == "generic"
    monkeypatch.undo()
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    with pytest.raises(FileNotFoundError, match=FAN_WEIGHTS):
        resolve_backend("face-alignment", None)
    # weights of the right shapes, written here (the real ones cannot be downloaded)
    torch.manual_seed(0)
    folder = weights_dir(None)
    folder.mkdir(parents=True)
    fan, depth_net = FAN(4), ResNetDepth()
    torch.save(fan.state_dict(), folder / FAN_WEIGHTS)
    torch.save({"state_dict": {f"module.{k}": v for k, v in depth_net.state_dict().items()}}, folder / DEPTH_WEIGHTS)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert resolve_backend("auto", None) == "face-alignment"
    loaded = FanLandmarks(None)
    name, tensor = next(iter(fan.state_dict().items()))
    assert torch.equal(loaded.fan.state_dict()[name], tensor)
    assert torch.equal(next(iter(loaded.depth.state_dict().values())), next(iter(depth_net.state_dict().values())))


def test_landmark_depth_renders_68_points():
    rng = np.random.default_rng(0)
    theta = rng.uniform(0, 2 * np.pi, 68)
    radius = np.sqrt(rng.uniform(0, 1, 68)) * 100
    x, y = 128 + radius * np.cos(theta), 128 + radius * np.sin(theta)
    z = radius / 10  # face-alignment's z grows away from the camera: the centre is nearest
    depth = landmark_depth(np.column_stack([x, y, z]), 256, 32)
    assert depth[16, 16] > depth[16, 5] > 0 and depth[0, 0] == 0


def test_channels():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
    out = channels(rgb)
    assert {k: v.shape for k, v in out.items()} == {"rgb": (3, 16, 16), "hsv": (3, 16, 16), "lbp": (3, 16, 16)}
    assert all(v.dtype == np.uint8 for v in out.values())
    # the default HSV is Pillow's (RFM's code), hue 0-255; OpenCV's (hue 0-179) on request
    assert np.array_equal(out["hsv"].transpose(1, 2, 0), np.asarray(Image.fromarray(rgb).convert("HSV")))
    opencv = channels(rgb, "opencv")["hsv"]
    assert np.array_equal(opencv[:, 3, 4], cv2.cvtColor(rgb[3:4, 4:5], cv2.COLOR_RGB2HSV)[0, 0])
    blue = np.zeros((1, 1, 3), np.uint8)
    blue[..., 2] = 255
    assert channels(blue)["hsv"][0, 0, 0] == 170 and channels(blue, "opencv")["hsv"][0, 0, 0] == 120  # 240 degrees
    flat = np.full((8, 8, 3), 77, np.uint8)
    assert (color_lbp(flat)[:, 1:-1, 1:-1] == 255).all()  # every neighbour >= centre (inside; outside is 0)
    peak = flat.copy()
    peak[4, 4, 1] = 200
    assert color_lbp(peak)[1, 4, 4] == 0 and color_lbp(peak)[0, 4, 4] == 255  # a bright centre: no bit set


def _scikit_lbp(image):
    from skimage.feature import local_binary_pattern
    return local_binary_pattern(image, P=8, R=1, method="default").astype(np.uint8)


def test_lbp_is_bit_identical_to_scikit_image():
    rng = np.random.default_rng(1)
    ramp = np.add.outer(np.arange(120), np.arange(90))  # diagonal ramps: neighbours that tie with the centre
    images = [rng.integers(0, 256, (64, 80), dtype=np.uint8), np.full((9, 9), 77, np.uint8),
              np.tile(np.arange(50, dtype=np.uint8), (30, 1)), (rng.integers(0, 4, (256, 256)) * 60).astype(np.uint8),
              ramp.astype(np.uint8), (ramp[::-1] * 2).clip(0, 255).astype(np.uint8),
              rng.integers(0, 3, (1100, 40), dtype=np.uint8)]  # 1100 rows: more row weight classes
    for image in images:
        assert np.array_equal(color_lbp(np.dstack([image] * 3))[1], _scikit_lbp(image)), image.shape
        assert np.array_equal(lbp(image), _scikit_lbp(image))


def test_lbp_ties_follow_scikit_images_rounding(monkeypatch):
    """Where a diagonal neighbour equals the centre exactly, scikit-image's answer depends on its float
    rounding in some rows and columns: counting every tie as ">=" differs from it, the tables do not."""
    from pipeline import channels as module
    image = np.random.default_rng(2).integers(0, 3, (300, 300), dtype=np.uint8)
    assert np.array_equal(lbp(image), _scikit_lbp(image))
    monkeypatch.setattr(module, "_ties", lambda bit, h, w: (np.zeros(0, np.intp), None, None, None, (0, 0)))
    assert not np.array_equal(lbp(image), _scikit_lbp(image))


def test_lbp_ties_are_only_the_cross_pattern():
    """The exactness argument: with weights 0.70711 and 0.29289 (x 10^5), a diagonal neighbour's interpolation
    equals the centre only when the corners weighted 0.70711^2 and 0.29289^2 equal it (x = w = 0) and the two
    others average to it (s = 0): no other integer solution within uint8 differences."""
    big, cross, small = 70711 * 70711, 70711 * 29289, 29289 * 29289
    assert big + 2 * cross + small == 10 ** 10
    x = np.arange(-255, 256, dtype=np.int64)[:, None]
    w = np.arange(-255, 256, dtype=np.int64)[None, :]
    rest = big * x + small * w  # + cross * s = 0 with s the sum of the cross corners' differences
    solutions = np.argwhere((rest % cross == 0) & (np.abs(rest // cross) <= 510))
    assert solutions.tolist() == [[255, 255]]  # x = 0, w = 0 (so s = 0)
    with pytest.raises(ValueError, match="sides up to 2048"):
        lbp(np.zeros((4096, 3), np.uint8))


def test_extraction_with_the_face_alignment_backend(corpus, tmp_path):
    """The whole per-video path with face-alignment weights that the test writes (random values: the
    landmarks are meaningless, the loading, batching and rendering path is real)."""
    import torch
    from face_alignment.models import FAN, ResNetDepth
    from pipeline.config import BuildConfig, DepthConfig
    from pipeline.extract import VideoJob, extract_video, load_result
    torch.manual_seed(0)
    torch.save(FAN(4).state_dict(), tmp_path / FAN_WEIGHTS)
    torch.save({"state_dict": ResNetDepth().state_dict()}, tmp_path / DEPTH_WEIGHTS)
    config = BuildConfig(name="fa", datasets={"msu": str(corpus / "msu")}, output_dir=str(tmp_path / "out"),
                         frames=FrameConfig(count=2), face=FaceConfig(size=64),
                         depth=DepthConfig(backend="face-alignment", weights_dir=str(tmp_path)))
    assert resolve_backend("face-alignment", str(tmp_path)) == "face-alignment"
    for relpath, label in (("scene01/real/real_client002_laptop_SD_scene01.mov", "live"),
                           ("scene01/attack/attack_client002_laptop_SD_printed_photo_scene01.mov", "spoof")):
        job = VideoJob(f"msu/{relpath}", str(corpus / "msu" / relpath), label, sha256_file(corpus / "msu" / relpath),
                       "msu")
        summary = extract_video(job, config, "face-alignment", str(config.build_dir))
        arrays, rejects, _ = load_result(config.build_dir / "videos" / f"{job.video_id}.{job.sha256[:16]}.json")
        assert summary["samples"] + summary["rejected_frames"] == 2
        assert all(reason.startswith("degenerate 3D landmarks") for _, reason in rejects)
        if label == "spoof":
            assert arrays["depth"].max() == 0 and summary["samples"] == 2
        else:  # with these weights the 68 points triangulate: the rendered map is there
            assert summary["samples"] == 2 and arrays["depth"].shape[1:] == (1, 32, 32) and arrays["depth"].max() > 0
        assert "depth_estimate" not in arrays
    # depth.store_estimate: the attack's faces go through the 3D landmark networks too
    config = config.replace(name="fa-estimate", depth=config.depth.replace(store_estimate=True))
    extract_video(job, config, "face-alignment", str(config.build_dir))
    arrays, _, _ = load_result(config.build_dir / "videos" / f"{job.video_id}.{job.sha256[:16]}.json")
    assert arrays["depth"].max() == 0 and arrays["depth_estimate"].shape == (2, 1, 32, 32)
    assert (arrays["depth_estimate"].reshape(2, -1).max(axis=1) > 0).all()


def test_stored_depth_estimates_cover_attacks_while_the_target_stays_masked(corpus, tmp_path):
    from pipeline.config import BuildConfig, DepthConfig
    from pipeline.extract import VideoJob, extract_video, load_result
    plain = BuildConfig(name="plain", datasets={"msu": str(corpus / "msu")}, output_dir=str(tmp_path),
                        frames=FrameConfig(count=2), face=FaceConfig(size=64), depth=DepthConfig(backend="generic"))
    stored = plain.replace(name="stored", depth=plain.depth.replace(store_estimate=True))
    assert "store_estimate" not in plain.content()["depth"] and stored.content()["depth"]["store_estimate"] is True
    assert plain.config_hash() != stored.config_hash()
    for relpath, label in (("scene01/real/real_client002_laptop_SD_scene01.mov", "live"),
                           ("scene01/attack/attack_client002_laptop_SD_printed_photo_scene01.mov", "spoof")):
        job = VideoJob(f"msu/{relpath}", str(corpus / "msu" / relpath), label, sha256_file(corpus / "msu" / relpath),
                       "msu")
        found = {}
        for config in (plain, stored):
            extract_video(job, config, "generic", str(config.build_dir))
            found[config.name], _, _ = load_result(config.build_dir / "videos" / f"{job.video_id}.{job.sha256[:16]}.json")
        assert "depth_estimate" not in found["plain"] and len(found["stored"]["depth_estimate"]) == 2
        assert np.array_equal(found["plain"]["depth"], found["stored"]["depth"])
        assert np.array_equal(found["plain"]["rgb"], found["stored"]["rgb"])
        estimate = found["stored"]["depth_estimate"]
        assert (estimate.reshape(2, -1).max(axis=1) > 0).all()
        if label == "live":  # the target is the estimate for live faces, zeros for attacks
            assert np.array_equal(estimate, found["stored"]["depth"])
        else:
            assert found["stored"]["depth"].max() == 0
