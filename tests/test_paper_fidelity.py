"""What the papers write, pinned where a plausible wrong implementation would still pass every other test:
D²AM's domain part F- = (1 - a) F and clustering on its selected statistics, PDL-FAS's standardisation before
PCA (our named choice), Meta Pattern's score with the pixel map, and the deployable video threshold taken from
the video-level validation scores."""
from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA

from fas_train.metrics import eer, video_level
from fas_train.models.d2am_nets import DRLM
from fas_train.pseudo_domains import agreement, cluster_pca
from fas_train.selection import thresholds

from test_equations import tiny_d2am
from test_methods import make


def test_d2am_drlm_gives_the_task_a_f_and_the_domain_one_minus_a_f():
    """d2am.md Eq. 6: F+ = a ⊙ F, F- = (1 - a) ⊙ F, a = sigmoid(W2 ReLU(W1 pool(F)))."""
    drlm = DRLM(channels=8, reduction=4)
    last = drlm.attention[2]
    with torch.no_grad():
        last.weight.zero_()
        last.bias.copy_(torch.logit(torch.linspace(0.1, 0.8, 8)))  # a = 0.1 ... 0.8 per channel, whatever F
    f = torch.randn(3, 8, 5, 5)
    f_plus, f_minus, a = drlm(f)
    expected = torch.linspace(0.1, 0.8, 8)
    assert torch.allclose(a, expected.expand(3, 8), atol=1e-6)
    assert torch.allclose(f_plus, expected[None, :, None, None] * f, atol=1e-6)
    assert torch.allclose(f_minus, (1 - expected)[None, :, None, None] * f, atol=1e-6)
    assert not torch.allclose(f_minus, f_plus)  # a F in place of (1 - a) F differs


def test_d2am_clusters_the_selected_domain_statistics_not_every_column_of_df():
    """d2am.md (Sec. "Domain representation", Algorithm 1): the pseudo-domains of later epochs cluster df(x), the
    instance statistics of F- over the channels of lowest attention, not the attention itself nor the other
    channels. Planted: grouping A in the selected channels' statistics (small), grouping B, independent of A,
    in the attention and the unselected channels' statistics (large)."""
    method = tiny_d2am(domains=2)  # three DRLMs of C = 8 channels: [mean | std | attention] blocks of 8 each
    rng = np.random.default_rng(0)
    n = 48
    labels = np.tile([1, 0], n // 2)
    a_groups = np.tile(np.repeat([0, 1], 2), n // 4)  # balanced within each class
    b_groups = np.tile(np.repeat([0, 1], 4), n // 8) ^ (np.arange(n) // 24)
    assert agreement(a_groups, b_groups) < 0.05
    blocks = []
    for _ in range(3):
        mean = rng.normal(0, 0.01, (n, 8))
        std = rng.normal(1, 0.01, (n, 8))
        attention = np.full((n, 8), 0.1) + rng.normal(0, 0.001, (n, 8))
        mean[:, :4] += 0.3 * a_groups[:, None]  # the selected channels: lowest attention on average
        std[:, :4] += 0.3 * a_groups[:, None]
        mean[:, 4:] += 5.0 * b_groups[:, None]
        std[:, 4:] += 5.0 * b_groups[:, None]
        attention[:, 4:] = 0.5 + 0.4 * b_groups[:, None]
        blocks.append(np.concatenate([mean, std, attention], 1))
    features = np.concatenate(blocks, 1)
    assigned = method.assign_domains(features, labels, previous=a_groups, epoch=1)
    assert agreement(assigned, a_groups) == pytest.approx(1.0)
    everything = KMeans(2, n_init=10, random_state=0).fit_predict(features[labels == 1])
    assert agreement(everything, b_groups[labels == 1]) > 0.9  # every column of df(x) would follow B


def test_pdl_standardises_the_features_before_pca():
    """pdl-fas.txt (Sec. 3.2) stacks the layers' statistics and applies PCA to 256 dimensions; it is silent on
    scaling. Our choice (named in fas_train.methods.pdl): each column standardised first, so that one wide
    statistic does not decide the pseudo-domains. Without it, the wide column below would."""
    rng = np.random.default_rng(1)
    groups = np.repeat([0, 1], 30)
    features = rng.normal(0, 0.05, (60, 6)) + 0.5 * groups[:, None]
    features[:, 0] = rng.uniform(0, 1000, 60)  # a wide statistic with no structure
    pdl = make("pdl", pca_dims=4, domains=2)
    assert agreement(pdl.assign_domains(features, np.tile([1, 0], 30), None, epoch=0), groups) == pytest.approx(1)
    assert agreement(cluster_pca(features, 2, seed=0, dims=4), groups) == pytest.approx(1)
    unscaled = KMeans(2, n_init=10, random_state=0).fit_predict(PCA(4, random_state=0).fit_transform(features))
    assert agreement(unscaled, groups) < 0.2  # the plausible wrong implementation


def test_meta_pattern_scores_with_the_pixel_map():
    """metapattern.txt Eq. 11: S = (s_1 + mean(m)) / 2, s_1 the softmax's live probability, m the HFN's map."""
    method = make("metapattern")
    logits = torch.tensor([[0.0, 2.0], [1.0, -1.0]])
    pixel_map = torch.stack([torch.full((1, 4, 4), 0.25), torch.full((1, 4, 4), 0.9)])

    class Fixed(torch.nn.Module):  # the HFN's two outputs, known
        def forward(self, rgb, pattern):
            return logits, pixel_map

    method.hfn = Fixed()
    method.second = lambda x, *frozen: x
    x = torch.zeros(2, 6, 8, 8)
    s1 = torch.softmax(logits, 1)[:, 1]
    assert torch.allclose(method.predict(x), (s1 + torch.tensor([0.25, 0.9])) / 2)
    assert not torch.allclose(method.predict(x), s1)  # the score without the map differs


def test_the_video_threshold_comes_from_video_level_validation_scores():
    """The deployable video threshold is the EER threshold of the validation videos' fused scores, not the frame
    threshold: here the two differ."""
    frames = pd.DataFrame({"video_id": list("aabbccddee"), "label": [1] * 4 + [0] * 6,
                           "attack": [""] * 4 + ["print"] * 6,
                           "score": [0.9, 0.2, 0.8, 0.5, 0.6, 0.3, 0.45, 0.4, 0.1, 0.7]})
    found = thresholds(frames, "mean")
    videos = video_level(frames, "mean")
    assert found["video_threshold"] == eer(videos["score"].to_numpy(), videos["label"].to_numpy())[1]
    assert found["threshold"] == eer(frames["score"].to_numpy(), frames["label"].to_numpy())[1]
    assert (found["threshold"], found["video_threshold"]) == (0.5, 0.55)  # videos: 0.55, 0.65 live; 0.45, 0.425, 0.4


def test_a_runs_deployable_video_threshold_is_its_validation_videos_and_export_keeps_it(erm_run, tmp_path):
    """Through a real run: the report's (and so the exported model's) video threshold is recomputed here from the
    kept checkpoint's source-validation scores fused per video."""
    from fas_train.checkpoint import resolve_build, saved_run
    from fas_train.cli import main
    from fas_train.inputs import run_data
    from fas_train.scorers import run_scorer
    from fas_train.scoring import frame_table, score
    report = json.loads((erm_run / "report.json").read_text())
    started, cfg = saved_run(erm_run)
    cfg = replace(cfg, build=resolve_build(erm_run, cfg.build), device="cpu")
    val_rows, val_set = run_data(cfg)[3][1]
    scorer = run_scorer(erm_run)
    frames = frame_table(val_rows, score(scorer.method, val_set, cfg, torch.device("cpu")))
    videos = video_level(frames, report["fusion"])
    video_threshold = eer(videos["score"].to_numpy(), videos["label"].to_numpy())[1]
    frame_threshold = eer(frames["score"].to_numpy(), frames["label"].to_numpy())[1]
    assert report["deployable_video_threshold"] == pytest.approx(video_threshold, abs=1e-6)
    assert report["deployable_threshold"] == pytest.approx(frame_threshold, abs=1e-6)
    assert abs(video_threshold - frame_threshold) > 1e-6  # the frame threshold would be a different number
    video = report["metrics"]["video"]  # and the target's video-level HTER is taken there
    assert video["source_threshold"] == pytest.approx(video_threshold, abs=1e-6)
    target = video_level(pd.read_csv(erm_run / "scores.csv", keep_default_na=False), report["fusion"])
    live = target["label"] == 1
    bpcer, apcer = (target.loc[live, "score"] < video_threshold).mean(), (target.loc[~live, "score"] >= video_threshold).mean()
    assert video["hter_at_source_threshold"] == pytest.approx((apcer + bpcer) / 2)
    assert main(["export", "--run", str(erm_run), "--out", str(tmp_path / "model")]) == 0
    spec = json.loads((tmp_path / "model" / "model.json").read_text())
    assert spec["thresholds"]["video"] == report["deployable_video_threshold"]
