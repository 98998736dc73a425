"""OULU-NPU's own protocols in the trainer: the configs follow the rules, a run selects on the development
part and tests on the test part (the right videos in each), and collect reports folds as mean ± std."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from fas_train.collect import collect, format_table
from fas_train.data import load_build
from fas_train.protocols import load_protocol
from fas_train.settings import RunConfig
from fas_train.train import run
from pipeline.datasets.oulu_protocols import EXPECTED, members

CONFIGS = sorted((Path(__file__).parents[1] / "fas_train" / "configs" / "protocols" / "oulu").glob("*.yaml"))


def full_table() -> pd.DataFrame:
    """A sample table with one frame of every OULU-NPU video."""
    rows = []
    for split, folder, users in (("train", "Train_files", range(1, 21)), ("devel", "Dev_files", range(21, 36)),
                                 ("test", "Test_files", range(36, 56))):
        for u in users:
            for p in range(1, 7):
                for s in range(1, 4):
                    for f in range(1, 6):
                        rows.append({"dataset": "oulu", "split": split, "video_id": f"oulu/{folder}/{p}_{s}_{u:02d}_{f}",
                                     "camera": f"phone{p}", "session": str(s), "label": "live" if f == 1 else "spoof"})
    return pd.DataFrame(rows)


def test_the_fourteen_configs_follow_the_rules():
    protocols = [load_protocol(p) for p in CONFIGS]
    assert sorted((p.number, p.fold) for p in protocols) == [("1", None), ("2", None)] + \
        [(n, k) for n in "34" for k in range(1, 7)]
    table = full_table()
    for protocol in protocols:
        train, devel, test = protocol.parts(table)
        assert (len(train), len(devel), len(test)) == tuple(EXPECTED[protocol.number][p] for p in ("train", "devel", "test"))
        assert protocol.domains == "camera" and protocol.group == f"OULU-NPU P{protocol.number}"
    p3 = load_protocol(Path(CONFIGS[0]).parent / "oulu_p3_fold4.yaml")
    train, _, test = p3.parts(table)
    assert set(test["camera"]) == {"phone4"} and "phone4" not in set(train["camera"])
    with pytest.raises(ValueError, match="no split variant 'no-devel'"):
        load_protocol(CONFIGS[0], "no-devel")


def config(train_build, out, method, protocol, **kw):
    return RunConfig(method=method, build=str(train_build), protocol=str(protocol), out=str(out), steps=2,
                     eval_every=1, per_class=2, network="small", input_size=32, workers=0, device="cpu", **kw)


def test_a_run_selects_on_the_development_part_and_tests_on_the_test_part(train_build, tmp_path):
    p2 = Path(CONFIGS[0]).parent / "oulu_p2.yaml"
    result = run(config(train_build, tmp_path / "p2", "erm", p2))
    assert result["selection"] == "development set (the protocol's own)" and result["protocol_group"] == "OULU-NPU P2"
    _, samples = load_build(train_build)
    names = samples["video_id"].str.rsplit("/", n=1).str[-1]
    expected = {part: samples[(samples["dataset"] == "oulu") & (samples["split"] == part)
                              & names.isin(members("2", None, part))] for part in ("train", "devel", "test")}
    info = json.loads((tmp_path / "p2/run.json").read_text())
    assert (info["train_samples"], info["validation_samples"], info["target_samples"]) == \
        tuple(len(expected[p]) for p in ("train", "devel", "test"))
    scores = pd.read_csv(tmp_path / "p2/scores.csv")
    assert set(scores["video_id"]) == set(expected["test"]["video_id"])  # files 1, 3, 5 of the test users only
    assert {v[-1] for v in scores["video_id"]} <= {"1", "3", "5"}
    video = result["metrics"]["video"]
    assert set(video["apcer_species"]) <= {"print/printer2", "replay/display2"} and "acer" in video
    with pytest.raises(ValueError, match="RFM needs at least two"):  # one phone in this small train part
        run(config(train_build, tmp_path / "rfm", "rfm", Path(CONFIGS[0]).parent / "oulu_p3_fold1.yaml"))
    with pytest.raises(ValueError, match="RFM needs at least two"):  # one session too
        run(config(train_build, tmp_path / "rfm2", "rfm", Path(CONFIGS[0]).parent / "oulu_p3_fold1.yaml",
                   domains="session"))


def test_collect_reports_the_folds_of_a_protocol_as_mean_and_std(tmp_path):
    for fold, acer in ((1, 0.1), (2, 0.2), (3, 0.3)):
        folder = tmp_path / f"f{fold}"
        folder.mkdir()
        metrics = {"auc": 0.9, "hter_at_target_eer_threshold": 0.1, "hter_at_source_threshold": 0.1,
                   "apcer_worst": acer, "bpcer": acer, "acer": acer}
        (folder / "report.json").write_text(json.dumps({
            "method": "d2am", "protocol": f"OULU-NPU P3 fold {fold}", "protocol_group": "OULU-NPU P3",
            "variant": "official", "selection": "development set (the protocol's own)", "metrics": {"video": metrics}}))
        (folder / "run.json").write_text(json.dumps({"config": {"seed": 0}}))
    table = collect(sorted(tmp_path.iterdir()))
    row = table.iloc[0]
    assert len(table) == 1 and row["protocol"] == "OULU-NPU P3" and (row["runs"], row["folds"]) == (3, 3)
    assert row["acer_mean"] == pytest.approx(0.2) and row["acer_std"] == pytest.approx((2 / 300) ** 0.5)
    assert "ACER" in format_table(table).upper() and "3 folds" in format_table(table)


def test_every_part_of_every_protocol_is_exercised_on_the_demo_corpus(tmp_path):
    import subprocess
    import sys

    import yaml
    from pipeline.demo import DemoConfig, write_demo_corpus
    corpus = tmp_path / "corpus"
    write_demo_corpus(corpus, DemoConfig(seed=5, frames=4, subjects_per_split=1, oulu_protocols=True), quiet=True)
    config = {"name": "o", "datasets": {"oulu": str(corpus / "oulu")}, "output_dir": str(tmp_path / "out"),
              "manifest_dir": str(tmp_path / "manifests"), "frames": {"policy": "even", "count": 1},
              "face": {"size": 64}, "depth": {"backend": "generic"}, "compute": {"workers": 2, "device": "cpu"}}
    (tmp_path / "o.yaml").write_text(yaml.safe_dump(config))
    subprocess.run([sys.executable, "-m", "pipeline", "build", "--config", str(tmp_path / "o.yaml"), "--quiet"],
                   check=True, capture_output=True, timeout=600)
    build = tmp_path / "manifests/o"
    _, samples = load_build(build)
    for path in CONFIGS:  # every part of every protocol and fold has videos, chosen by the rules
        train, devel, test = load_protocol(path).parts(samples)
        protocol = load_protocol(path)
        for rows, part in ((train, "train"), (devel, "devel"), (test, "test")):
            names = set(rows["video_id"].str.rsplit("/", n=1).str[-1])
            assert names and names <= set(members(protocol.number, protocol.fold, part)), (path.stem, part)
    offline = {"metapattern": ("pretrained=none", "inner_steps=1"), "ccdd": ("pretrained=none",),
               "d2am": ("first_epoch=style", "domains=2"), "pdl": ("domains=2",)}
    for method, name, domains in (("rfm", "oulu_p3_fold1.yaml", None), ("metapattern", "oulu_p1.yaml", None),
                                  ("rfm", "oulu_p2.yaml", "session"), ("ccdd", "oulu_p4_fold2.yaml", None),
                                  ("d2am", "oulu_p3_fold6.yaml", None), ("pdl", "oulu_p2.yaml", None)):
        options = offline.get(method, ())
        result = run(config_for(build, tmp_path / f"{method}{domains}", method, Path(CONFIGS[0]).parent / name,
                                options, domains))
        run_info = json.loads((tmp_path / f"{method}{domains}" / "run.json").read_text())
        assert run_info["config"]["domains"] == domains
        assert result["metrics"]["video"]["samples"] == \
            load_protocol(Path(CONFIGS[0]).parent / name).parts(samples)[2]["video_id"].nunique()


def config_for(build, out, method, protocol, options, domains=None):
    return RunConfig(method=method, build=str(build), protocol=str(protocol), out=str(out), steps=2, eval_every=1,
                     per_class=2, network="small", input_size=32, workers=0, device="cpu", options=options,
                     domains=domains)
