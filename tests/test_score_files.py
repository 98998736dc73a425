"""`fas-train metrics` on score files: ours and bob.pad's, the threshold fixed on development scores by a named
criterion, per attack species, as text and JSON, with the plots."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from fas_train.cli import main
from fas_train.metrics import error_rates

DEV_LIVE, DEV_ATTACK = [0.9, 0.8, 0.7, 0.6], [0.65, 0.3, 0.2, 0.1]
TEST_LIVE, TEST_ATTACK = [0.95, 0.75, 0.62, 0.5], [0.7, 0.64, 0.4, 0.2]


def bob_file(path, live, attacks, kinds):
    rows = [{"bio_ref_subject_id": "s", "probe_key": f"l{i}", "is_bonafide": "True", "attack_type": "", "score": s}
            for i, s in enumerate(live)]
    rows += [{"bio_ref_subject_id": "s", "probe_key": f"a{i}", "is_bonafide": "False", "attack_type": k, "score": s}
             for i, (s, k) in enumerate(zip(attacks, kinds))]
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def test_a_bob_pad_file_with_the_threshold_from_development_scores(tmp_path, capsys):
    dev = bob_file(tmp_path / "dev.csv", DEV_LIVE, DEV_ATTACK, ["print", "print", "replay", "replay"])
    test = bob_file(tmp_path / "eval.csv", TEST_LIVE, TEST_ATTACK, ["print", "replay", "print", "replay"])
    assert main(["metrics", str(test), "--dev", str(dev), "--threshold-from", "apcer=0", "--json",
                 "--plots", str(tmp_path / "plots")]) == 0
    result = json.loads(capsys.readouterr().out)
    level = result["levels"]["presentation"]
    # APCER 0 on dev: above its top attack 0.65, the lowest such dev score is 0.7
    assert level["source_threshold"] == 0.7 and result["threshold_on"] == "development scores"
    scores = np.array(TEST_LIVE + TEST_ATTACK)
    labels = np.array([1] * 4 + [0] * 4)
    at = error_rates(scores, labels, 0.7)
    assert level["hter_at_source_threshold"] == pytest.approx(at.hter) and level["bpcer"] == 0.5
    assert level["apcer_species"] == {"print": 0.5, "replay": 0.0}  # the test's 0.7 print attack passes
    assert level["acer"] == pytest.approx((0.5 + 0.5) / 2)
    assert level["tpr_at_fpr"]["1%"] == {"tpr": 0.5, "threshold": 0.75}  # the test's own curve: 0.95, 0.75 pass
    assert sorted(p.name for p in (tmp_path / "plots").iterdir()) == ["det.png", "histogram.png", "roc.png"]


def test_our_scores_at_frame_and_video_level_and_as_text(tmp_path, capsys):
    frames = pd.DataFrame({"video_id": ["a", "a", "b", "b", "c", "c", "d", "d"],
                           "frame_index": [0, 5] * 4, "label": [1, 1, 1, 1, 0, 0, 0, 0],
                           "attack": ["none"] * 4 + ["print"] * 2 + ["replay"] * 2,
                           "attack_detail": [""] * 4 + ["printer1"] * 2 + ["display1"] * 2,
                           "score": [0.9, 0.3, 0.6, 0.7, 0.5, 0.1, 0.2, 0.2]})
    frames.to_csv(tmp_path / "scores.csv", index=False)
    assert main(["metrics", str(tmp_path / "scores.csv"), "--fusion", "max", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["levels"]) == {"frame", "video"} and result["threshold_on"].endswith("(oracle)")
    assert result["levels"]["video"]["samples"] == 4 and result["levels"]["video"]["auc"] == 1.0  # max fusion
    assert result["levels"]["frame"]["apcer_species"].keys() == {"print/printer1", "replay/display1"}
    assert main(["metrics", str(tmp_path / "scores.csv"), "--threshold-from", "bpcer=0.5"]) == 0
    text = capsys.readouterr().out
    assert "frame level (8 samples)" in text and "video level (4 samples)" in text and "BPCER@APCER5%" in text


def test_unreadable_score_files_are_named(tmp_path, capsys):
    (tmp_path / "bad.csv").write_text("a,b\n1,2\n")
    assert main(["metrics", str(tmp_path / "bad.csv")]) == 2
    assert "bad.csv: a score file needs a score column" in capsys.readouterr().err
    (tmp_path / "odd.csv").write_text("label,score\nmaybe,0.5\n1,0.2\n")
    assert main(["metrics", str(tmp_path / "odd.csv")]) == 2
    assert "odd.csv: label values ['maybe']" in capsys.readouterr().err
    bob_file(tmp_path / "ok.csv", DEV_LIVE, DEV_ATTACK, ["print"] * 4)
    assert main(["metrics", str(tmp_path / "ok.csv"), "--threshold-from", "far=0.1"]) == 2
    assert "use eer, min-hter, apcer=RATE or bpcer=RATE" in capsys.readouterr().err


def test_the_command_line_lists_methods_and_says_its_version(capsys):
    """`fas-train methods` gives every method's options with the types and defaults the trainer applies."""
    from dataclasses import fields

    from fas_train.methods import METHODS
    assert main(["methods", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    assert sorted(listing) == sorted(METHODS)
    for name, (_, config_cls) in METHODS.items():
        assert [o["name"] for o in listing[name]["options"]] == [f.name for f in fields(config_cls)]
        assert all(o["default"] == f.default for o, f in zip(listing[name]["options"], fields(config_cls)))
    rfm = {o["name"]: o for o in listing["rfm"]["options"]}
    assert rfm["meta_gradient"]["type"] == "str" and listing["rfm"]["summary"].startswith("RFM:")
    assert main(["methods"]) == 0
    assert "  --option meta_gradient=...  str, default" in capsys.readouterr().out
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out.startswith("fas-dg ")
