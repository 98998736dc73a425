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
    out = report(frames, source_threshold=0.5, video_source_threshold=0.5)
    assert out["frame"]["samples"] == 14 and out["video"]["samples"] == 7
    assert out["video"]["hter_at_target_eer_threshold"] == pytest.approx(error_rates(SCORES, LABELS, 0.7).hter)
    assert out["video"]["hter_at_source_threshold"] == pytest.approx((0.25 + 1 / 3) / 2)
    assert out["video"]["apcer_worst"] == 0.5 and out["video"]["acer"] == pytest.approx((0.5 + 1 / 3) / 2)
    assert "apcer" not in report(frames)["frame"]  # no source threshold, no deployable numbers


def test_apcer_per_species_and_the_worst_species_drives_acer():
    # OULU-like: two printers and two displays; printer 2 and display 1 are the weak instruments
    scores = np.array([0.9, 0.8, 0.7, 0.6,   0.2, 0.1, 0.6, 0.55,   0.3, 0.52, 0.1, 0.2])
    labels = np.array([1, 1, 1, 1] + [0] * 8)
    attack = np.array(["none"] * 4 + ["print"] * 4 + ["replay"] * 4)
    detail = np.array([""] * 4 + ["printer1", "printer1", "printer2", "printer2",
                                  "display1", "display1", "display2", "display2"])
    frames = pd.DataFrame({"video_id": [f"v{i}" for i in range(12)], "label": labels, "attack": attack,
                           "attack_detail": detail, "score": scores})
    out = report(frames, source_threshold=0.5, video_source_threshold=0.5)["frame"]
    assert out["apcer_species"] == {"print/printer1": 0.0, "print/printer2": 1.0, "replay/display1": 0.5,
                                    "replay/display2": 0.0}
    assert out["apcer"] == {"print": 0.5, "replay": 0.25} and out["apcer_family_worst"] == 0.5
    assert out["apcer_worst"] == 1.0 and out["acer"] == pytest.approx((1.0 + 0.0) / 2)
    without = report(frames.drop(columns="attack_detail"), source_threshold=0.5)["frame"]
    assert without["apcer_species"] == {"print": 0.5, "replay": 0.25}  # no species named: the families


def test_video_level_threshold_is_the_one_given_for_videos():
    # frames of each video straddle the frame threshold; the video threshold is set apart
    frames = pd.DataFrame({"video_id": ["a", "a", "b", "b", "c", "c"], "label": [1, 1, 0, 0, 1, 1],
                           "attack": ["none", "none", "print", "print", "none", "none"],
                           "score": [0.9, 0.5, 0.45, 0.41, 0.44, 0.40]})
    out = report(frames, source_threshold=0.5, video_source_threshold=0.42)
    assert out["frame"]["source_threshold"] == 0.5 and out["video"]["source_threshold"] == 0.42
    # videos a 0.7 (live), b 0.43 (spoof), c 0.42 (live): at 0.42 both c and b pass; at 0.5 neither would
    assert out["video"]["bpcer"] == 0.0 and out["video"]["apcer_worst"] == 1.0
