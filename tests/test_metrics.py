"""Metrics against hand-computed cases and scikit-learn; video aggregation; named thresholds."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from fas_train.metrics import apcer_by_attack, auc, eer, error_rates, report, video_level

LIVE = [0.9, 0.8, 0.4]
SPOOF = [0.7, 0.3, 0.2, 0.1]
SCORES = np.array(LIVE + SPOOF)
LABELS = np.array([1] * 3 + [0] * 4)
ATTACKS = np.array(["none"] * 3 + ["print", "print", "replay", "replay"])


def test_hand_computed_case():
    at = error_rates(SCORES, LABELS, 0.5)
    assert (at.far, at.frr) == (0.25, pytest.approx(1 / 3)) and at.hter == pytest.approx((0.25 + 1 / 3) / 2)
    assert auc(SCORES, LABELS) == pytest.approx(11 / 12)  # 11 of 12 live-spoof pairs ordered right
    rate, threshold = eer(SCORES, LABELS)
    assert rate == pytest.approx(0.25) and threshold == 0.7
    assert apcer_by_attack(SCORES, LABELS, ATTACKS, 0.5) == {"print": 0.5, "replay": 0.0}
    assert error_rates(SCORES, LABELS, 0.7).far == 0.25  # score == threshold is accepted as live


def test_against_scikit_learn_and_the_definition_of_eer():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 4000)
    scores = rng.normal(labels * 1.5, 1.0)
    assert auc(scores, labels) == pytest.approx(roc_auc_score(labels, scores))
    rate, threshold = eer(scores, labels)
    at = error_rates(scores, labels, threshold)
    assert abs(at.far - at.frr) < 0.01 and rate == pytest.approx((at.far + at.frr) / 2, abs=0.005)
    # the EER threshold minimises |FAR - FRR| over every candidate threshold
    gaps = [abs(error_rates(scores, labels, t).far - error_rates(scores, labels, t).frr) for t in np.unique(scores)[::37]]
    assert abs(at.far - at.frr) <= min(gaps) + 1e-12


def test_perfect_and_inverted_scores():
    assert eer([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0])[0] == 0 and auc([0.9, 0.8, 0.1, 0.2], [1, 1, 0, 0]) == 1
    assert auc([0.1, 0.2, 0.9, 0.8], [1, 1, 0, 0]) == 0
    with pytest.raises(ValueError, match="both live and spoof"):
        auc([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="NaN"):
        auc([np.nan, 0.2], [1, 0])


def test_video_level_is_the_mean_of_frame_scores():
    frames = pd.DataFrame({"video_id": ["a", "a", "b", "b", "c"], "label": [1, 1, 0, 0, 0],
                           "attack": ["none", "none", "print", "print", "replay"], "score": [0.2, 0.4, 0.9, 0.5, 0.1]})
    videos = video_level(frames).set_index("video_id")
    assert videos.loc["a", "score"] == pytest.approx(0.3) and videos.loc["b", "frames"] == 2
    bad = frames.assign(label=[1, 0, 0, 0, 0])
    with pytest.raises(ValueError, match="different labels"):
        video_level(bad)


def test_report_names_both_thresholds():
    frames = pd.DataFrame({"video_id": [f"v{i // 2}" for i in range(14)], "label": np.repeat(LABELS, 2),
                           "attack": np.repeat(ATTACKS, 2), "score": np.repeat(SCORES, 2)})
    out = report(frames, source_threshold=0.5)
    assert out["frame"]["samples"] == 14 and out["video"]["samples"] == 7
    assert out["video"]["hter_at_target_eer_threshold"] == pytest.approx(error_rates(SCORES, LABELS, 0.7).hter)
    assert out["video"]["hter_at_source_threshold"] == pytest.approx((0.25 + 1 / 3) / 2)
    assert out["video"]["apcer_worst"] == 0.5 and out["video"]["acer"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert "apcer" not in report(frames)["frame"]  # no source threshold, no deployable numbers
