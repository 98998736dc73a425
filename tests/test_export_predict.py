"""Using a trained model: export to a self-contained folder (no unpickling, graph checked node by node), and
predict on new footage with the build's preprocessing, giving the run's own scores on the same frames."""
from __future__ import annotations

import hashlib
import json
import shutil

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
from skimage import data as photos

from fas_train.cli import main
from fas_train.export import load_model
from fas_train.methods import METHODS

from test_model_folder import assert_every_string_refuses_a_payload

SMALL = ["--steps", "2", "--eval-every", "2", "--per-class", "2", "--network", "small", "--input-size", "32",
         "--device", "cpu", "--quiet"]


def target_videos(build) -> dict:
    """The protocol's target (MSU) videos of a build: source path -> video_id."""
    manifest = json.loads((build / "manifest.json").read_text())
    sources = pd.read_csv(build / "sources.csv", dtype=str, keep_default_na=False)
    msu = sources[sources["dataset"] == "msu"]
    return {f"{manifest['config']['datasets']['msu']}/{r}": v for r, v in zip(msu["relpath"], msu["video_id"])}


def predicted_frames(out, videos: dict) -> pd.DataFrame:
    tables = [pd.read_csv(p) for p in out.glob("*.csv") if p.name != "predictions.csv"]
    frames = pd.concat(tables)
    return frames[frames["input"].isin(videos)].assign(video_id=lambda t: t["input"].map(videos))


def test_export_then_predict_gives_the_runs_scores(erm_run, train_build, tmp_path, capsys):
    model = tmp_path / "model"
    assert main(["export", "--run", str(erm_run), "--out", str(model)]) == 0
    spec, report = json.loads((model / "model.json").read_text()), json.loads((erm_run / "report.json").read_text())
    assert spec["thresholds"] == {"frame": report["deployable_threshold"],
                                  "video": report["deployable_video_threshold"]}
    assert spec["provenance"]["run_json_sha256"] == hashlib.sha256((erm_run / "run.json").read_bytes()).hexdigest()
    run_info = json.loads((erm_run / "run.json").read_text())
    assert spec["provenance"]["build_manifest_content_sha256"] == run_info["build_manifest_content_sha256"]
    assert json.loads((model / "preprocessing.json").read_text())["face"]["size"] == 64
    videos = target_videos(train_build)
    astronaut, blank = tmp_path / "astronaut.png", tmp_path / "wall.png"
    cv2.imwrite(str(astronaut), cv2.cvtColor(photos.astronaut(), cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(blank), np.full((240, 320, 3), 128, np.uint8))
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    inputs = [*videos, str(astronaut), str(blank), str(tmp_path / "broken.mp4")]
    capsys.readouterr()
    assert main(["predict", "--model", str(model), "--out", str(tmp_path / "p"), "--quiet", *inputs]) == 1
    captured = capsys.readouterr()
    assert "broken.mp4" in captured.err and "1 unreadable" in captured.out  # the others went on
    expected = pd.read_csv(erm_run / "scores.csv", dtype={"video_id": str})
    got = expected.merge(predicted_frames(tmp_path / "p", videos), on=["video_id", "frame_index"],
                         suffixes=("", "_predicted"))
    assert len(got) == len(expected) == 32
    assert np.abs(got["score"] - got["score_predicted"]).max() < 1e-5
    rows = pd.read_csv(tmp_path / "p" / "astronaut.csv")
    assert len(rows) == 1 and rows["face"].item() and 0 <= rows["score"].item() <= 1
    wall = json.loads((tmp_path / "p" / "wall.json").read_text())
    wall_rows = pd.read_csv(tmp_path / "p" / "wall.csv")
    assert wall["decision"] == "failure to acquire" and wall["score"] is None
    assert wall_rows["failure"].tolist() == ["no face detected"] and not wall_rows["face"].item()
    summary = pd.read_csv(tmp_path / "p" / "predictions.csv")
    assert len(summary) == len(inputs) and (summary["kind"] == "unreadable").sum() == 1
    video = json.loads(next((tmp_path / "p").glob("*ipad_video*.json")).read_text())
    assert video["frames_sampled"] == 2 and video["threshold"] == report["deployable_video_threshold"]
    assert video["decision"] == ("live" if video["score"] >= video["threshold"] else "spoof")
    # the run itself scores the same (its own networks, no export)
    assert main(["predict", "--run", str(erm_run), "--out", str(tmp_path / "r"), "--quiet", *videos]) == 0
    again = predicted_frames(tmp_path / "r", videos).merge(got, on=["video_id", "frame_index"])
    assert np.abs(again["score_x"] - again["score_predicted"]).max() < 1e-5


def test_a_model_folder_loads_no_code(erm_run, tmp_path, monkeypatch):
    model = tmp_path / "model"
    assert main(["export", "--run", str(erm_run), "--out", str(model)]) == 0
    assert main(["export", "--run", str(erm_run), "--out", str(model)]) == 2  # refuses to overwrite
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the model folder was unpickled"))
    faces = torch.randint(0, 256, (3, 6, 64, 64), dtype=torch.uint8)
    assert load_model(model).image_scorer(faces).shape == (3,)

    def tampered(name, change):
        copy = tmp_path / name
        shutil.copytree(model, copy)
        graph = json.loads((copy / "image_scorer.json").read_text())
        change(graph)
        (copy / "image_scorer.json").write_text(json.dumps(graph))
        spec = json.loads((copy / "model.json").read_text())
        spec["files"]["image_scorer.json"] = hashlib.sha256((copy / "image_scorer.json").read_bytes()).hexdigest()
        (copy / "model.json").write_text(json.dumps(spec))
        return copy

    def save_node(graph):
        node = graph["graph_module"]["graph"]["nodes"][0]
        node["target"] = "torch.save"

    with pytest.raises(ValueError, match="refused graph node 'torch.save'"):
        load_model(tampered("saves", save_node))

    def reads_files(graph):
        graph["graph_module"]["graph"]["nodes"][-1]["target"] = "torch.ops.aten.from_file.default"

    with pytest.raises(ValueError, match="refused graph node 'torch.ops.aten.from_file.default'"):
        load_model(tampered("reads", reads_files))  # an ATen operator, but one on files
    with pytest.raises(ValueError, match="guard code"):
        load_model(tampered("guards", lambda g: g.update(guards_code=["__import__('os').system('true')"])))
    copy = tmp_path / "flipped"
    shutil.copytree(model, copy)
    weights = bytearray((copy / "image_scorer.npz").read_bytes())
    weights[len(weights) // 2] ^= 1
    (copy / "image_scorer.npz").write_bytes(bytes(weights))
    with pytest.raises(ValueError, match="image_scorer.npz: sha256 differs"):
        load_model(copy)


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"erm"}))
def test_every_method_exports_and_scores_as_its_run(method, train_build, tmp_path):
    """The export checks its graphs against the run's networks on random faces; here the predicted target
    frames (and CCDD's video branch, over every sampled frame of a video) equal the run's score files."""
    run = tmp_path / "run"
    options = ["--option", "pretrained=none"] if method in ("ccdd", "ccdd-video", "metapattern", "d2am") else []
    options += ["--option", "clip_length=2"] if method == "ccdd-video" else []
    assert main(["train", "--method", method, "--build", str(train_build), "--protocol", "mico_OCI_to_M",
                 "--out", str(run), *SMALL, *options]) == 0
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "model")]) == 0
    graphs = sorted(p.stem for p in (tmp_path / "model").glob("*.json"))
    assert graphs == sorted(["model", "preprocessing", "image_scorer"]
                            + (["video_features", "video_step"] if method == "ccdd-video" else []))
    for graph in graphs:  # the video branch's graphs too: no string of theirs can carry code
        if graph not in ("model", "preprocessing"):
            assert_every_string_refuses_a_payload(tmp_path / "model" / f"{graph}.json", tmp_path / "ran")
    assert main(["export", "--run", str(run), "--out", str(tmp_path / "onnx"), "--format", "onnx"]) == 0
    videos = target_videos(train_build)
    expected = pd.read_csv(run / "scores.csv", dtype={"video_id": str})
    branch = pd.read_csv(run / "video_scores.csv", dtype={"video_id": str}).set_index("video_id")["score"] \
        if method == "ccdd-video" else None
    differences = {}
    for model, tolerance in (("model", 1e-5), ("onnx", 1e-4)):  # ONNX: another runtime's kernels
        out = tmp_path / f"p-{model}"
        assert main(["predict", "--model", str(tmp_path / model), "--out", str(out), "--quiet", *videos]) == 0
        got = expected.merge(predicted_frames(out, videos), on=["video_id", "frame_index"])
        differences[model] = np.abs(got["score_x"] - got["score_y"]).max()
        assert len(got) == len(expected) and differences[model] < tolerance, differences
        if branch is not None:
            results = [json.loads(p.read_text()) for p in out.glob("*.json") if p.name != "predictions.json"]
            predicted = pd.Series({videos[r["input"]]: r["video_branch"]["score"] for r in results})
            differences[f"{model} video branch"] = np.abs(predicted - branch[predicted.index]).max()
            assert len(predicted) == len(branch) and differences[f"{model} video branch"] < tolerance, differences
    print(f"{method}: largest score difference from scores.csv: {differences}")


def test_eval_with_another_fusion_and_failures_counted_as_rejected(erm_run, train_build, tmp_path, capsys):
    from fas_train.metrics import auc, video_level
    from fas_train.protocols import load_protocol
    from fas_train.evaluation import acquisition_failures
    run = tmp_path / "run"
    shutil.copytree(erm_run, run)
    assert main(["eval", "--run", str(run), "--fusion", "max"]) == 0
    report = json.loads((run / "report.json").read_text())
    frames = pd.read_csv(run / "scores.csv")
    videos = video_level(frames, "max")
    assert report["fusion"] == report["metrics"]["fusion"] == "max"
    assert report["metrics"]["video"]["auc"] == auc(videos["score"], videos["label"])
    assert "video level (max of frames)" in capsys.readouterr().out
    # the build's rejects: two frames of a live target video, and a spoof target video with no sample left
    build = tmp_path / "build"
    shutil.copytree(train_build, build)
    sources = pd.read_csv(build / "sources.csv", dtype=str, keep_default_na=False)
    msu = sources[sources["dataset"] == "msu"]
    live, spoof = msu[msu["label"] == "live"].iloc[0], msu[msu["label"] != "live"].iloc[0]
    pd.DataFrame({"video_id": [live["video_id"]] * 2 + [spoof["video_id"]] * 3 + ["casia/not/tested"],
                  "frame_index": [3, 9, 0, 5, -1, 2], "reason": "no face detected",
                  "action": "rejected"}).to_csv(build / "rejects.csv", index=False)
    samples = pd.read_csv(build / "samples.csv", dtype=str, keep_default_na=False)
    target = samples[(samples["dataset"] == "msu") & (samples["video_id"] != spoof["video_id"])]
    found = acquisition_failures(str(build), load_protocol("mico_OCI_to_M"), target, as_rejected=True)
    kind = spoof["attack"] + (f"/{spoof['attack_detail']}" if spoof["attack_detail"] else "")
    assert found["frame"].live == 2 and found["frame"].attacks == ((kind, spoof["attack"], 2),)
    assert found["video"].live == 0 and found["video"].attacks == ((kind, spoof["attack"], 1),)
    assert found["video"].as_rejected and found["video"].counted() == (0, 1)
