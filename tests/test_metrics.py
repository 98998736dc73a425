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
    # video a has 5 frames whose mean (0.42), median (0.3), mid-range (0.5), first (0.1) and last (0.6) differ;
    # its rows are interleaved with b's, as a shuffled scores file would have them
    frames = pd.DataFrame({"video_id": ["a", "b", "a", "a", "b", "a", "c", "a", "b"],
                           "label": [1, 0, 1, 1, 0, 1, 0, 1, 0],
                           "attack": ["none", "print", "none", "none", "print", "none", "replay", "none", "print"],
                           "score": [0.1, 0.9, 0.9, 0.2, 0.5, 0.3, 0.1, 0.6, 0.7]})
    videos = video_level(frames).set_index("video_id")
    assert videos.loc["a", "score"] == pytest.approx(0.42) and videos.loc["a", "frames"] == 5
    assert videos.loc["b", "score"] == pytest.approx(0.7) and videos.loc["b", "frames"] == 3
    assert videos.loc["c", "score"] == pytest.approx(0.1) and videos.loc["b", "label"] == 0
    assert list(video_level(frames, "median").set_index("video_id")["score"]) == [0.3, 0.7, 0.1]
    shuffled = video_level(frames.iloc[::-1])  # rows in another order: the same videos, sorted by id
    assert list(shuffled["video_id"]) == ["a", "b", "c"] and shuffled["score"].tolist() == pytest.approx([0.42, 0.7, 0.1])
    mixed = frames.assign(attack=["none", "print", "none", "none", "replay", "none", "replay", "none", "print"])
    with pytest.raises(ValueError, match=r"different labels or attacks: \['b'\]"):
        video_level(mixed)
    bad = frames.assign(label=[1, 0, 1, 0, 0, 1, 0, 1, 0])  # a frame of a labelled spoof
    with pytest.raises(ValueError, match="different labels"):
        video_level(bad)


def test_report_names_both_thresholds():
    frames = pd.DataFrame({"video_id": [f"v{i // 2}" for i in range(14)], "label": np.repeat(LABELS, 2),
                           "attack": np.repeat(ATTACKS, 2), "score": np.repeat(SCORES, 2)})
    out = report(frames, source_threshold=0.35, video_source_threshold=0.35)
    assert out["frame"]["samples"] == 14 and out["video"]["samples"] == 7
    # the oracle threshold is the target's EER one, 0.7: FAR 1/4 (0.7 passes), FRR 1/3 (0.4 fails)
    assert out["video"]["hter_at_target_eer_threshold"] == pytest.approx((0.25 + 1 / 3) / 2)
    # the deployable one is the source's, 0.35: FAR 1/4, FRR 0: a different number from the oracle's
    assert out["video"]["hter_at_source_threshold"] == pytest.approx(0.125)
    assert out["video"]["apcer_worst"] == 0.5 and out["video"]["bpcer"] == 0.0
    assert out["video"]["acer"] == pytest.approx(0.25)
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


# 10 live and 20 attacks: APCER moves in steps of 5%, BPCER in steps of 10%, and no operating point below is
# the EER threshold's
OP_LIVE = [0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.45, 0.3, 0.2]
OP_ATTACK = [0.88, 0.6, 0.55, 0.5, 0.42, 0.4, 0.38, 0.36, 0.34, 0.32,
             0.28, 0.26, 0.24, 0.22, 0.18, 0.16, 0.14, 0.12, 0.1, 0.05]
OP_SCORES = np.array(OP_LIVE + OP_ATTACK)
OP_LABELS = np.array([1] * 10 + [0] * 20)


def test_operating_points_by_hand():
    from fas_train.metrics import operating_points
    points = operating_points(OP_SCORES, OP_LABELS)
    # APCER <= 1%: no attack accepted, so the threshold sits above 0.88: 0.9 rejects 8 of 10 live
    assert points["bpcer_at_apcer"]["1%"] == {"bpcer": pytest.approx(0.8), "threshold": 0.9}
    # APCER <= 5%: one attack (0.88) may pass; the lowest such threshold is the live 0.65: 3 live rejected
    assert points["bpcer_at_apcer"]["5%"] == {"bpcer": pytest.approx(0.3), "threshold": 0.65}
    # APCER <= 10%: two attacks may pass (0.88, 0.6): threshold 0.6, the same 3 live rejected
    assert points["bpcer_at_apcer"]["10%"] == {"bpcer": pytest.approx(0.3), "threshold": 0.6}
    # BPCER <= 1% and <= 5%: every live accepted, threshold 0.2: 14 of 20 attacks pass
    assert points["apcer_at_bpcer"]["1%"] == {"apcer": pytest.approx(0.7), "threshold": 0.2}
    assert points["apcer_at_bpcer"]["5%"] == points["apcer_at_bpcer"]["1%"]
    # BPCER <= 10%: one live may be rejected: threshold 0.3, 10 attacks pass
    assert points["apcer_at_bpcer"]["10%"] == {"apcer": pytest.approx(0.5), "threshold": 0.3}
    assert points["tpr_at_fpr"]["1%"] == {"tpr": pytest.approx(0.2), "threshold": 0.9}
    assert points["tpr_at_fpr"]["0.1%"] == points["tpr_at_fpr"]["1%"]
    assert eer(OP_SCORES, OP_LABELS)[1] not in (0.9, 0.65, 0.6, 0.2, 0.3)


def test_operating_points_at_the_rates_edges():
    from fas_train.metrics import operating_points
    # every attack below every live: BPCER 0 at any APCER, APCER 0 at any BPCER, TPR 1
    points = operating_points([0.9, 0.8, 0.3, 0.2], [1, 1, 0, 0])
    assert points["bpcer_at_apcer"]["1%"]["bpcer"] == 0 and points["apcer_at_bpcer"]["1%"]["apcer"] == 0
    assert points["tpr_at_fpr"]["0.1%"]["tpr"] == 1 and points["bpcer_at_apcer"]["1%"]["threshold"] == 0.8
    # the top score is an attack: rejecting it rejects everything, the threshold just above it
    points = operating_points([0.5, 0.4, 0.9, 0.1], [1, 1, 0, 0])
    assert points["bpcer_at_apcer"]["1%"]["bpcer"] == 1 and points["bpcer_at_apcer"]["1%"]["threshold"] > 0.9


def test_failures_to_acquire_counted_as_rejected():
    from fas_train.metrics import Acquisition, level_metrics, operating_points
    # 2 live and 5 attack presentations without a face: APCER over 25 attacks, BPCER over 12 live
    points = operating_points(OP_SCORES, OP_LABELS, fta_live=2, fta_attack=5)
    assert points["bpcer_at_apcer"]["5%"] == {"bpcer": pytest.approx(5 / 12), "threshold": 0.65}
    assert points["apcer_at_bpcer"]["10%"]["apcer"] is None  # 2 of 12 live are always rejected: BPCER >= 1/6
    assert points["apcer_at_bpcer"]["1%"] == {"apcer": None, "threshold": None}
    table = pd.DataFrame({"label": OP_LABELS, "attack": ["none"] * 10 + ["print"] * 10 + ["replay"] * 10,
                          "score": OP_SCORES})
    apart = level_metrics(table, 0.5, Acquisition(2, (("print", "print", 5),), as_rejected=False))
    counted = level_metrics(table, 0.5, Acquisition(2, (("print", "print", 5),), as_rejected=True))
    assert apart["bpcer"] == pytest.approx(0.3) and counted["bpcer"] == pytest.approx(5 / 12)
    assert apart["hter_at_source_threshold"] == pytest.approx((4 / 20 + 0.3) / 2)
    assert counted["hter_at_source_threshold"] == pytest.approx((4 / 25 + 5 / 12) / 2)
    # print: 4 of 10 acquired attacks pass at 0.5; counted, 4 of 15; replay has no failures
    assert apart["apcer"] == {"print": 0.4, "replay": 0.0}
    assert counted["apcer"] == {"print": pytest.approx(4 / 15), "replay": 0.0}
    assert counted["failure_to_acquire"] == {"live": 2, "attack": 5, "counted_as_rejected": True}
    assert counted["auc"] == apart["auc"]  # AUC and EER stay over the acquired samples


def test_thresholds_fixed_by_a_named_criterion():
    from fas_train.metrics import threshold_from
    assert threshold_from("apcer=0.05", OP_SCORES, OP_LABELS) == 0.65
    assert threshold_from("bpcer=0.1", OP_SCORES, OP_LABELS) == 0.3
    assert threshold_from("eer", OP_SCORES, OP_LABELS) == eer(OP_SCORES, OP_LABELS)[1]
    # the least (APCER + BPCER) / 2 over every threshold, and the lowest threshold that has it
    best = min((error_rates(OP_SCORES, OP_LABELS, t).hter, -t) for t in np.unique(OP_SCORES))
    assert threshold_from("min-hter", OP_SCORES, OP_LABELS) == -best[1]
    assert error_rates(OP_SCORES, OP_LABELS, threshold_from("min-hter", OP_SCORES, OP_LABELS)).hter == best[0]
    for bad in ("apcer=2", "far=0.1", "eer=1", "apcer=x"):
        with pytest.raises(ValueError, match="use eer, min-hter"):
            threshold_from(bad, OP_SCORES, OP_LABELS)


def test_video_fusion_choices():
    frames = pd.DataFrame({"video_id": ["a"] * 3 + ["b"] * 2, "label": [1, 1, 1, 0, 0], "attack": "x",
                           "score": [0.1, 0.2, 0.9, 0.4, 0.6]})
    fused = {f: video_level(frames, f).set_index("video_id")["score"].to_dict()
             for f in ("mean", "median", "max", "min")}
    assert fused["mean"] == {"a": pytest.approx(0.4), "b": pytest.approx(0.5)}
    assert fused["median"] == {"a": 0.2, "b": 0.5} and fused["max"] == {"a": 0.9, "b": 0.6}
    assert fused["min"] == {"a": 0.1, "b": 0.4}
    with pytest.raises(ValueError, match="fusion 'sum'"):
        video_level(frames, "sum")
    assert report(frames.assign(score=[0.1, 0.2, 0.9, 0.4, 0.45]), fusion="max")["video"]["auc"] == 1.0
    assert report(frames.assign(score=[0.1, 0.2, 0.9, 0.4, 0.45]))["video"]["auc"] == 0.0


def test_eer_at_an_exact_crossing_by_interpolation_and_at_a_tie():
    # exact crossing: at 0.6 FAR = FRR = 1/2
    assert eer([0.9, 0.4, 0.6, 0.1], [1, 1, 0, 0]) == (0.5, 0.6)
    # a live and a spoof tie at 0.6, so FAR and FRR both move there: from (0, 1/2) to (1/3, 0); the segment
    # crosses FAR = FRR at w = 0.5 / (1/3 + 1/2) = 0.6, where both are 0.2
    rate, threshold = eer([0.9, 0.6, 0.6, 0.2, 0.1], [1, 1, 0, 0, 0])
    assert rate == pytest.approx(0.2) and threshold == 0.6
    # the highest score shared by the live and a spoof: the first finite point already has FAR > FRR
    rate, threshold = eer([0.9, 0.9, 0.1], [1, 0, 0])
    assert rate == pytest.approx(1 / 3) and threshold == 0.9
    # a live and a spoof of one score: no finite threshold is nearer to equality than the infinite one, whose
    # place the highest score takes
    assert eer([0.5, 0.5], [1, 0]) == (0.5, 0.5)


def test_report_counts_each_levels_failures_per_family_and_species():
    from fas_train.metrics import Acquisition, operating_points
    frames = pd.DataFrame({"video_id": list("abcdefg"), "label": [1, 1, 1, 0, 0, 0, 0],
                           "attack": ["none"] * 3 + ["print", "print", "replay", "replay"],
                           "attack_detail": ["", "", "", "printer1", "printer1", "display1", "display1"],
                           "score": [0.9, 0.5, 0.3, 0.6, 0.2, 0.1, 0.55]})
    frame_failures = Acquisition(1, (("print/printer1", "print", 2), ("replay/display2", "replay", 1)), True)
    video_failures = Acquisition(0, (("replay/display2", "replay", 3),), True)
    out = report(frames, 0.5, 0.5, failures={"frame": frame_failures, "video": video_failures})
    frame, video = out["frame"], out["video"]
    assert frame["apcer"] == {"print": pytest.approx(0.25), "replay": pytest.approx(1 / 3)}  # 1 of 4, 1 of 3
    assert frame["apcer_species"] == {"print/printer1": pytest.approx(0.25), "replay/display1": 0.5,
                                      "replay/display2": 0.0}
    # a live score equal to the threshold is accepted: 0.3 and the failure are the rejected ones, of 4
    assert frame["bpcer"] == pytest.approx(0.5) and frame["acer"] == pytest.approx(0.5)
    assert frame["hter_at_source_threshold"] == pytest.approx((2 / 7 + 0.5) / 2)  # 2 accepted of 7 attacks
    assert frame["failure_to_acquire"] == {"live": 1, "attack": 3, "counted_as_rejected": True}
    assert frame["bpcer_at_apcer"] == operating_points(frames["score"], frames["label"], 1, 3)["bpcer_at_apcer"]
    assert video["apcer"]["replay"] == pytest.approx(0.2) and video["bpcer"] == pytest.approx(1 / 3)
    assert video["failure_to_acquire"] == {"live": 0, "attack": 3, "counted_as_rejected": True}
    assert video["bpcer_at_apcer"] == operating_points(frames["score"], frames["label"], 0, 3)["bpcer_at_apcer"]
    assert out["fusion"] == "mean"


def test_the_operating_summary_line():
    from fas_train.metrics import operating_summary
    entry = {"bpcer_at_apcer": {"1%": {"bpcer": 0.5}, "5%": {"bpcer": None}},
             "apcer_at_bpcer": {"10%": {"apcer": 0.125}}, "tpr_at_fpr": {"0.1%": {"tpr": 1.0}},
             "failure_to_acquire": {"live": 2, "attack": 0, "counted_as_rejected": True}}
    assert operating_summary(entry) == ("BPCER@APCER1% 50.0  BPCER@APCER5% n/a  APCER@BPCER10% 12.5  TPR@FPR0.1% 100.0"
                                        "  failures to acquire: 2 live, 0 attack (counted as rejected) (%)")
    entry["failure_to_acquire"] = {"live": 0, "attack": 3, "counted_as_rejected": False}
    assert operating_summary(entry).endswith("failures to acquire: 0 live, 3 attack (%)")
    entry["failure_to_acquire"] = {"live": 0, "attack": 0, "counted_as_rejected": True}
    assert operating_summary(entry).endswith("TPR@FPR0.1% 100.0 (%)")


def test_min_hter_takes_the_lowest_threshold_of_least_half_total_error():
    from fas_train.metrics import threshold_from
    # live 0.9, 0.6; attacks 0.7, 0.2. HTER at 0.9: 1/4 (a live rejected); at 0.7: 1/2 (that live rejected,
    # an attack accepted); at 0.6: 1/4 (the attack accepted); at 0.2: 1/2. Least at 0.9 and 0.6: the lowest
    assert threshold_from("min-hter", [0.9, 0.6, 0.7, 0.2], [1, 1, 0, 0]) == 0.6
    for bad in ("min-hter=1", "apcer=1.5", "apcer=x", "roc"):
        with pytest.raises(ValueError, match="use eer, min-hter, apcer=RATE or bpcer=RATE"):
            threshold_from(bad, [0.9, 0.6, 0.7, 0.2], [1, 1, 0, 0])
    assert threshold_from("apcer=1", [0.9, 0.6, 0.7, 0.2], [1, 1, 0, 0]) <= 0.2  # every attack may pass


def test_eer_when_far_jumps_to_one_and_unequal_inputs_are_refused():
    # live 0.9, 0.5 and an attack at 0.5: from (FAR 0, FRR 1/2) straight to (1, 0); they cross at 1/3
    rate, threshold = eer([0.9, 0.5, 0.5], [1, 1, 0])
    assert rate == pytest.approx(1 / 3) and threshold == 0.9
    with pytest.raises(ValueError, match=r"scores \(2,\) and labels \(1,\) must be equal-length vectors"):
        eer([0.1, 0.2], [1])
    assert error_rates([0.9, 0.1], [1, 0], 0.5).threshold == 0.5


def test_failures_of_two_species_of_one_family_add_up():
    from fas_train.metrics import Acquisition, level_metrics
    table = pd.DataFrame({"label": [1, 1, 0, 0], "attack": ["none", "none", "print", "print"],
                          "attack_detail": ["", "", "printer1", "printer1"], "score": [0.9, 0.8, 0.7, 0.1]})
    failures = Acquisition(0, (("print/printer1", "print", 1), ("print/printer2", "print", 2)), as_rejected=True)
    out = level_metrics(table, 0.5, failures)
    assert out["apcer"] == {"print": pytest.approx(1 / 5)}  # 1 accepted of 2 scored + 3 failed
    assert out["apcer_species"] == {"print/printer1": pytest.approx(1 / 3), "print/printer2": 0.0}
