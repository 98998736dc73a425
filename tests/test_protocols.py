"""Protocol configs: every file loads, splits are explicit, the target is never a source, and the source
holdout keeps subjects apart."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from fas_train.protocols import holdout_by_subject, load_protocol

CONFIGS = sorted((Path(__file__).parents[1] / "fas_train" / "configs" / "protocols").glob("*.yaml"))


def samples_table():
    rows = []
    for dataset, splits in {"oulu": ("train", "devel", "test"), "casia": ("train", "test"),
                            "replay": ("train", "devel", "test"), "msu": ("train", "test"), "rose": ("train", "test")}.items():
        for split in splits:
            for subject in range(5):
                for label in ("live", "spoof"):
                    rows.append({"dataset": dataset, "split": split, "subject": f"{split}_{subject}", "label": label})
    return pd.DataFrame(rows)


def test_the_ten_protocols_are_there():
    names = {load_protocol(p).name for p in CONFIGS}
    assert names == {"O&C&I->M", "O&M&I->C", "O&C&M->I", "I&C&M->O", "M&I->C", "M&I->O",
                     "M&C&Y->I", "I&C&Y->M", "I&M&Y->C", "I&C&M->Y"}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_split_variants_select_what_they_say(path):
    table = samples_table()
    every = load_protocol(path, "all")
    no_devel = load_protocol(path, "no-devel")
    assert every.target not in every.sources
    assert set(every.source_samples(table)["dataset"]) == set(every.sources)
    assert set(every.target_samples(table)["dataset"]) == {every.target}
    assert "devel" not in set(no_devel.source_samples(table)["split"]) | set(no_devel.target_samples(table)["split"])
    has_devel = {"oulu", "replay"} & (set(every.sources) | {every.target})
    assert ("devel" in set(every.source_samples(table)["split"]) | set(every.target_samples(table)["split"])) == bool(has_devel)


def test_unknown_variant_and_missing_dataset_are_named(tmp_path):
    with pytest.raises(ValueError, match="no split variant 'ssdg'"):
        load_protocol(CONFIGS[0], "ssdg")
    protocol = load_protocol(CONFIGS[0])
    with pytest.raises(ValueError, match="has no samples of"):
        protocol.source_samples(samples_table().query("dataset != @protocol.sources[0]"))
    with pytest.raises(FileNotFoundError, match="nope.yaml: no such file, nor a shipped protocol config"):
        load_protocol(tmp_path / "nope.yaml")
    with pytest.raises(FileNotFoundError, match="shipped: limited_source_MI_to_C, .*mico_OCI_to_M"):
        load_protocol("mico_XYZ")


def test_shipped_protocols_are_found_by_name():
    assert load_protocol("mico_OCI_to_M").target == "msu"
    assert load_protocol("mico_OCI_to_M.yaml", "no-devel").variant == "no-devel"
    assert load_protocol("oulu_p3_fold2").group == "OULU-NPU P3"
    assert load_protocol("configs/protocols/oulu/oulu_p1.yaml").group  # as run.json files of older runs name them


def test_holdout_keeps_subjects_apart_and_is_deterministic():
    table = samples_table()
    train, val = holdout_by_subject(table, 0.2, seed=0)
    assert len(train) + len(val) == len(table)
    for dataset in table["dataset"].unique():
        a = set(train.loc[train["dataset"] == dataset, "subject"])
        b = set(val.loc[val["dataset"] == dataset, "subject"])
        assert a and b and not a & b
    again, _ = holdout_by_subject(table, 0.2, seed=0)
    other, _ = holdout_by_subject(table, 0.2, seed=1)
    assert again.index.equals(train.index) and not other.index.equals(train.index)
    assert np.isclose(len(val) / len(table), 0.2, atol=0.05)
