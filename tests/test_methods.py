"""Every method on the same trainer: each learns a separable toy batch, Meta Pattern's inner and outer steps
touch what they should, the networks have the documented shapes, clips are ordered frames of one video, and
the pseudo-domain and video-branch methods run end to end (resuming exactly)."""
from __future__ import annotations

import copy
import json
import shutil
from dataclasses import fields

import numpy as np
import pandas as pd
import pytest
import torch

from fas_train.data import ClipDataset, ClipSampler, ShardDataset, load_build
from fas_train.methods import METHODS
from fas_train.methods.metapattern import MetaPattern, MetaPatternConfig, chunk_rows, select
from fas_train.metrics import compared_metrics
from fas_train.models.metapattern_nets import HFM, HFN
from fas_train.settings import RunConfig
from fas_train.train import run

from conftest import PROTOCOL

WATCH = {"rfm": "cls_train", "erm": "cls", "pdl": "cls_train", "d2am": "cls_train", "ccdd": "cls",
         "ccdd-video": "video_cls", "metapattern": "bce"}


def toy_batch(channels: int, per_class: int = 2, size: int = 32, seed: int = 0) -> dict:
    """Three domains (their own brightness); live faces carry a fine checkerboard, attacks are smooth."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.tensor(([1] * per_class + [0] * per_class) * 3)
    domains = torch.arange(3).repeat_interleave(2 * per_class)
    base = 0.3 + 0.15 * domains[:, None, None, None] + 0.05 * torch.rand(len(labels), 1, 1, 1, generator=g)
    checker = ((torch.arange(size)[:, None] + torch.arange(size)[None]) % 2).float()
    image = base + 0.25 * labels[:, None, None, None] * (checker - 0.5) + 0.02 * torch.randn(len(labels), channels, size,
                                                                                          size, generator=g)
    depth = labels[:, None, None, None].float().expand(-1, 1, size // 8, size // 8).clone()
    return {"image": image.clamp(0, 1), "depth": depth, "label": labels, "domain": domains}


def offline(name: str) -> dict:
    """The explicit requests that replace ImageNet parts (no weights here): random backbones, D²AM's first
    clustering on input style statistics."""
    names = {f.name for f in fields(METHODS[name][1])}
    return {k: v for k, v in (("pretrained", "none"), ("first_epoch", "style")) if k in names}


def make(name: str, **overrides):
    cls, config_cls = METHODS[name]
    torch.manual_seed(0)
    return cls.create(config_cls(**{**offline(name), **overrides}), "small", [0, 1, 2], seed=0)


@pytest.mark.parametrize("name", sorted(METHODS))
def test_each_method_learns_a_separable_toy_batch(name):
    overrides = {"clip_length": 2} if name == "ccdd-video" else {}
    if name == "metapattern":
        overrides = {"inner_steps": 1}
    if name in ("ccdd", "ccdd-video"):
        overrides["lr"] = 1e-2
    method = make(name, **overrides)
    channels = len(type(method).channels(method.config)) * 3
    batch = toy_batch(channels, per_class=2 * method.batch_chunks)
    if name == "ccdd-video":
        batch["clip"] = {**{k: batch[k][::2] for k in ("label", "domain")},
                         "image": torch.stack([batch["image"][::2], batch["image"][1::2]], 1)}
    history = [method.update(batch)[WATCH[name]] for _ in range(12)]
    assert np.mean(history[-3:]) < 0.8 * np.mean(history[:3]), history
    scores = method.predict(batch["image"])
    assert scores.shape == (len(batch["label"]),) and ((scores >= 0) & (scores <= 1)).all()


def flat(module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in module.parameters()])


def test_meta_pattern_inner_steps_change_phi_only_and_theta_uses_the_adapted_phi():
    method = make("metapattern", inner_steps=2)
    batch = toy_batch(3, per_class=2 * method.batch_chunks)
    method.train()
    phi0, theta0 = flat(method.pattern), flat(method.hfn)
    start = copy.deepcopy(method)
    method.phi_steps(batch, held=1)
    assert not torch.equal(flat(method.pattern), phi0) and torch.equal(flat(method.hfn), theta0)
    adapted = flat(method.pattern)
    method.theta_step(batch, others=[0, 2])
    assert torch.equal(flat(method.pattern), adapted) and not torch.equal(flat(method.hfn), theta0)

    def theta_after_step(phi_source):  # Theta's step from the same start, with a chosen Phi
        other = copy.deepcopy(start)
        other.pattern.load_state_dict(phi_source.pattern.state_dict())
        other.train()
        other.theta_step(batch, others=[0, 2])
        return flat(other.hfn)

    assert torch.allclose(theta_after_step(method), flat(method.hfn), atol=1e-6)
    assert not torch.allclose(theta_after_step(start), flat(method.hfn), atol=1e-6)


def test_meta_pattern_chunks_split_every_block():
    batch = toy_batch(3, per_class=6)
    parts = [chunk_rows(batch, k, 3) for k in range(3)]
    assert sorted(torch.cat(parts).tolist()) == list(range(len(batch["label"])))
    for part in parts:
        chosen = select(batch, part)
        assert [(int((chosen["domain"] == d).sum()), int((chosen["label"][chosen["domain"] == d] == 1).sum()))
                for d in range(3)] == [(4, 2)] * 3
    with pytest.raises(ValueError, match="unknown second_stream 'target'"):
        MetaPattern(MetaPatternConfig(second_stream="target"), "small")


def test_hfm_is_eq9_sum_and_the_released_codes_mean_on_request():
    """metapattern.txt Eq. 9: m_i = C(m_t) + C(m_b) + U[C(m_{i-1})]; the released code averages the streams."""
    torch.manual_seed(0)
    top, bottom, previous = torch.rand(2, 4, 4, 4), torch.rand(2, 3, 4, 4), torch.rand(2, 5, 2, 2)
    sums = HFM(4, 3, 5, 6)
    means = HFM(4, 3, 5, 6, streams="mean")
    means.load_state_dict(sums.state_dict())
    up = torch.nn.functional.interpolate(sums.previous(previous), size=(4, 4), mode="nearest")
    with torch.no_grad():
        assert torch.allclose(sums(top, bottom, previous), sums.top(top) + sums.bottom(bottom) + up, atol=1e-6)
        assert torch.allclose(means(top, bottom, previous), (sums.top(top) + sums.bottom(bottom)) / 2 + up, atol=1e-6)
    assert MetaPatternConfig().stream_fusion == "sum"
    method = MetaPattern(MetaPatternConfig(stream_fusion="mean", pretrained="none"), "small")
    assert all(f.scale == 0.5 for f in method.hfn.fusions)
    with pytest.raises(ValueError, match="stream fusion"):
        HFM(4, 3, None, 6, streams="max")


def test_hfm_and_hfn_output_shapes():
    fusion = HFM(top=64, bottom=32, previous=16, out=8)
    out = fusion(torch.rand(2, 64, 8, 8), torch.rand(2, 32, 8, 8), torch.rand(2, 16, 4, 4))
    assert out.shape == (2, 8, 8, 8)
    assert HFM(64, 32, None, 8)(torch.rand(2, 64, 4, 4), torch.rand(2, 32, 4, 4)).shape == (2, 8, 4, 4)
    logits, pixel_map = HFN("resnet18", "none").eval()(torch.rand(2, 3, 256, 256), torch.rand(2, 3, 256, 256))
    assert logits.shape == (2, 2) and pixel_map.shape == (2, 1, 32, 32)
    assert ((pixel_map >= 0) & (pixel_map <= 1)).all()


def test_clips_are_ordered_frames_of_one_video(train_build):
    manifest, samples = load_build(train_build)
    frames = ShardDataset(manifest["shard_dir"], samples, ("rgb",))
    clips = ClipDataset(frames, 2)
    sampler = ClipSampler(clips, per_class=1, seed=3)
    batches = list(sampler)
    assert batches == list(ClipSampler(clips, per_class=1, seed=3))  # reproducible
    batch = clips.__getitems__(batches[0])
    assert batch["image"].shape[:2] == (len(batches[0]), 2)
    for clip_rows, label in zip(batch["frames"].numpy(), batch["label"].numpy()):
        rows = samples.iloc[clip_rows]
        assert rows["video_id"].nunique() == 1 and rows["frame_index"].is_monotonic_increasing
        assert int(rows["label"].iloc[0] == "live") == label
    direct = frames.__getitems__(batch["frames"][0].numpy())["image"]
    assert torch.equal(batch["image"][0], direct)
    with pytest.raises(ValueError, match="frames.count >= 9"):
        ClipDataset(frames, 9)


def run_config(train_build, out, method, steps, options=(), **kw):
    options = tuple(f"{k}={v}" for k, v in offline(method).items()) + tuple(options)
    return RunConfig(method=method, build=str(train_build), protocol=PROTOCOL, out=str(out), steps=steps,
                     eval_every=3, per_class=2, network="small", input_size=32, workers=0, device="cpu",
                     options=options, **kw)


def test_pseudo_domains_are_reassigned_each_epoch_and_resume_exactly(train_build, tmp_path):
    run(run_config(train_build, tmp_path / "straight", "d2am", 8))
    resumed = tmp_path / "resumed"
    run(run_config(train_build, resumed, "d2am", 6))  # an epoch is 6 steps here: the next one re-clusters first
    shutil.copy(resumed / "checkpoint.pt", tmp_path / "step6.pt")
    shutil.copy(resumed / "checkpoint.pt.sha256", tmp_path / "step6.pt.sha256")
    run(run_config(train_build, resumed, "d2am", 7))
    # killed after logging the clustering at step 6, step 7 and half a line, before step 7's checkpoint
    shutil.copy(tmp_path / "step6.pt", resumed / "checkpoint.pt")
    shutil.copy(tmp_path / "step6.pt.sha256", resumed / "checkpoint.pt.sha256")
    with open(resumed / "metrics.jsonl", "a") as handle:
        handle.write('{"step": 6, "kin')
    run(run_config(train_build, resumed, "d2am", 8))
    rows = {name: [json.loads(line) for line in (tmp_path / name / "metrics.jsonl").read_text().splitlines()]
            for name in ("straight", "resumed")}
    clusterings = [r for r in rows["straight"] if r["kind"] == "domains"]
    assert [(r["epoch"], r["step"]) for r in clusterings] == [(0, 0), (1, 6)]
    assert clusterings[0]["source"] == "input style statistics (first_epoch=style, asked for)"
    assert "nmi_previous" in clusterings[1] and 0 <= clusterings[1]["nmi_datasets"] <= 1
    # the resumed run's rows are the uninterrupted run's: none repeated, same losses
    assert [(r["step"], r["kind"]) for r in rows["resumed"]] == [(r["step"], r["kind"]) for r in rows["straight"]]
    for got, want in zip(rows["resumed"], rows["straight"]):
        numbers = [k for k, v in want.items() if isinstance(v, float)]
        assert got.keys() == want.keys() and all(got[k] == want[k] for k in want.keys() - set(numbers))
        assert [got[k] for k in numbers] == pytest.approx([want[k] for k in numbers], rel=1e-6), (got, want)
    tables = [pd.read_csv(tmp_path / name / "metrics.csv") for name in ("straight", "resumed")]
    assert tables[0][["step", "kind", "name"]].equals(tables[1][["step", "kind", "name"]])
    hparams = json.loads((tmp_path / "straight" / "run.json").read_text())["hparams"]
    assert hparams["first_epoch_features"].startswith("input style statistics")


def test_video_branch_trains_and_is_reported_per_video(train_build, tmp_path):
    result = run(run_config(train_build, tmp_path / "video", "ccdd-video", 2, options=("clip_length=2",)))
    branch = result["metrics"]["video_branch"]
    videos = pd.read_csv(tmp_path / "video" / "video_scores.csv")
    target = pd.read_csv(tmp_path / "video" / "scores.csv")
    assert branch["samples"] == result["metrics"]["video"]["samples"] == len(videos) == target["video_id"].nunique()
    assert sorted(videos["video_id"]) == sorted(target["video_id"].unique())  # one score per target video
    assert (videos["frames"] == 2).all() and videos["score"].between(0, 1).all()
    run_info = json.loads((tmp_path / "video" / "run.json").read_text())
    assert run_info["channels"] == ["rgb"] and run_info["hparams"]["pretrained_weights"].startswith("random")
    assert result["provenance"]["pretrained_weights"] == "random initialisation (pretrained=none, asked for)"
    # the full model's number is the video branch's (ccdd.txt: one label per sequence): compared and selected on
    assert result["compared"] == "video_branch" and compared_metrics(result, "frame") == (branch, "video branch")
    assert {"video_branch_eer", "video_branch_auc"} <= set(result["selection_scores"])
    validation = [json.loads(line) for line in (tmp_path / "video" / "metrics.jsonl").read_text().splitlines()]
    assert all("video_branch_eer" in r for r in validation if r["kind"] == "validation")
    image = run(run_config(train_build, tmp_path / "image", "ccdd-video", 1, options=("clip_length=2", "score=image")))
    assert image["compared"] == "frame_scores" and compared_metrics(image, "frame")[1] == "frame"
    assert "video_branch" in image["metrics"]  # still reported beside it


def test_hfn_with_depth_reads_the_unmasked_estimate_never_the_target(train_build, tmp_path):
    result = run(run_config(train_build, tmp_path / "hfn_depth", "metapattern", 2, options=("second_stream=depth",)))
    run_info = json.loads((tmp_path / "hfn_depth" / "run.json").read_text())
    assert run_info["channels"] == ["rgb", "depth_estimate"]
    assert result["metrics"]["frame"]["samples"] == len(pd.read_csv(tmp_path / "hfn_depth" / "scores.csv"))
    manifest, samples = load_build(train_build)
    data = ShardDataset(manifest["shard_dir"], samples, MetaPattern.channels(MetaPatternConfig(second_stream="depth")))
    spoof = np.flatnonzero(samples["label"].to_numpy() == "spoof")[:4]
    batch = data.__getitems__(spoof)
    assert batch["depth"].max() == 0 and batch["image"][:, 3:].amax((1, 2, 3)).min() > 0  # attacks get a map


def test_ccdd_unbalanced_draw_reaches_both_samplers(train_build, tmp_path):
    """ccdd.txt: 16 images and 2 clips per domain, class balance unstated; ``balanced=false`` draws them so."""
    from fas_train import train as loop
    from fas_train.inputs import run_data
    from fas_train.settings import build_method
    for balanced in (True, False):
        cfg = run_config(train_build, tmp_path, "ccdd-video", 1, options=("clip_length=2", f"balanced={balanced}"))
        _, _, _, ((_, train_set), _, _) = run_data(cfg)
        method = build_method(cfg, sorted(set(train_set.domains.tolist())))
        frames, _, clips = loop.samplers(cfg, method, train_set, 0, 1)
        assert frames.class_balanced is clips.videos.class_balanced is balanced
        domains = len(set(train_set.domains.tolist()))
        assert frames.batch_size == 2 * cfg.per_class * domains and clips.videos.batch_size == 2 * domains
        keys = sorted(frames.groups)
        assert len(keys) == (2 * domains if balanced else domains)
