"""Indexers on trees with the official naming: labels, splits, subject keys, counts, warnings, errors."""
from __future__ import annotations

import warnings

import pandas as pd
import pytest

from layouts import casia_tree, msu_tree, oulu_tree, replay_tree, touch
from pipeline.datasets import IndexWarning, LayoutError
from pipeline.index import index_dataset


def index_quietly(dataset, root):
    """Index and return (table, summary, warning messages)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = index_dataset(dataset, root, quiet=True)
    messages = [str(w.message) for w in caught if issubclass(w.category, IndexWarning)]
    return result.table, result.summary, messages


def counts(table, *keys):
    return table.groupby(list(keys)).size().to_dict()


def test_casia_full_copy(tmp_path):
    casia_tree(tmp_path)
    table, summary, messages = index_quietly("casia", tmp_path)
    assert messages == []
    assert len(table) == 600 and summary["expected"]["complete"]
    assert counts(table, "split") == {"train": 240, "test": 360}
    assert counts(table, "label") == {"live": 150, "spoof": 450}
    assert counts(table, "attack") == {"none": 150, "print": 300, "replay": 150}
    by_path = table.set_index("relpath")
    assert by_path.loc["train_release/3/HR_1.avi", ["label", "camera"]].tolist() == ["live", "high_quality"]
    assert by_path.loc["train_release/3/5.avi", ["attack", "attack_detail"]].tolist() == ["print", "cut_photo"]
    # capture quality as Idiap's bob.db.casia_fasd gives it: 1 3 5 7 normal, 2 4 6 8 low
    assert by_path.loc["test_release/7/8.avi", ["attack", "camera"]].tolist() == ["replay", "low_quality"]
    assert by_path.loc["test_release/7/7.avi", "camera"] == "normal_quality"
    assert by_path.loc["train_release/2/1.avi", "camera"] == "normal_quality"
    # train subject 1 and test subject 1 are different people
    assert by_path.loc["train_release/1/1.avi", "subject"] != by_path.loc["test_release/1/1.avi", "subject"]
    assert table["subject"].nunique() == 50
    assert table["video_id"].is_unique and table["domain"].eq("C").all()


def test_casia_naming_variants_and_unplaced_files(tmp_path):
    casia_tree(tmp_path, train=[1], test=[])
    (tmp_path / "train_release/1/HR_1.avi").rename(tmp_path / "train_release/1/hr_1.AVI")
    touch(tmp_path, "train_release/1/9.avi")
    touch(tmp_path, "train_release/1/extra/1.avi")
    touch(tmp_path, "train_release/1/readme.txt")  # not a video: ignored
    touch(tmp_path, "train_release/1/.1.avi.tmp.avi")  # hidden leftover: ignored
    table, summary, messages = index_quietly("casia", tmp_path)
    assert "train_release/1/hr_1.AVI" in set(table["relpath"])
    assert table.set_index("relpath").loc["train_release/1/hr_1.AVI", "label"] == "live"
    unplaced = {u["relpath"] for u in summary["unplaced"]}
    assert unplaced == {"train_release/1/9.avi", "train_release/1/extra/1.avi"}
    assert not set(table["relpath"]) & unplaced
    assert any("could not be placed" in m and "train_release/1/9.avi" in m for m in messages)


def test_casia_incomplete_copy_names_the_missing_videos(tmp_path):
    casia_tree(tmp_path)
    (tmp_path / "test_release/12/HR_3.avi").unlink()
    (tmp_path / "train_release/4/7.avi").unlink()
    table, summary, messages = index_quietly("casia", tmp_path)
    assert len(table) == 598 and not summary["expected"]["complete"]
    assert summary["expected"]["missing"] == ["test_release/12/HR_3.avi", "train_release/4/7.avi"]
    (message,) = [m for m in messages if "incomplete" in m]
    assert "598 of 600" in message and "test_release/12/HR_3.avi" in message and "train_release/4/7.avi" in message


def test_wrong_root_shows_the_expected_layout(tmp_path):
    oulu_tree(tmp_path / "oulu", users={"Train_files": [1]}, phones=[1], sessions=[1])
    with pytest.raises(LayoutError, match="not a CASIA-FASD root") as err:
        index_dataset("casia", tmp_path / "oulu", quiet=True)
    assert "train_release" in str(err.value) and "Expected layout" in str(err.value)
    # one level too high: the error points at the folder that holds the layout
    casia_tree(tmp_path / "copy" / "CASIA_faceAntisp", train=[1], test=[])
    with pytest.raises(LayoutError, match="did you mean --root .*CASIA_faceAntisp"):
        index_dataset("casia", tmp_path / "copy", quiet=True)
    with pytest.raises(LayoutError, match="not a directory"):
        index_dataset("replay", tmp_path / "absent", quiet=True)


def test_replay_full_copy_skips_enroll(tmp_path):
    replay_tree(tmp_path)
    table, summary, messages = index_quietly("replay", tmp_path)
    assert messages == []
    assert counts(table, "split") == {"train": 360, "devel": 360, "test": 480}
    assert counts(table, "split", "label") == {("devel", "live"): 60, ("devel", "spoof"): 300,
                                               ("test", "live"): 80, ("test", "spoof"): 400,
                                               ("train", "live"): 60, ("train", "spoof"): 300}
    assert summary["skipped_count"] == 1 and not table["relpath"].str.startswith("enroll").any()
    by_path = table.set_index("relpath")
    row = by_path.loc["train/attack/hand/attack_print_client001_session01_highdef_photo_adverse.mov"]
    assert (row["attack"], row["support"], row["light"], row["attack_detail"]) == ("print", "hand", "adverse",
                                                                                 "print_photo")
    row = by_path.loc["test/attack/fixed/attack_highdef_client031_session01_highdef_photo_controlled.mov"]
    assert (row["attack"], row["attack_detail"]) == ("replay", "highdef_photo")
    assert by_path.loc["devel/real/client016_session01_webcam_authenticate_adverse_2.mov", "label"] == "live"
    assert table["subject"].nunique() == 50


def test_replay_inconsistent_attack_name_is_not_guessed(tmp_path):
    replay_tree(tmp_path, clients={"train": [1]})
    bad = "train/attack/fixed/attack_mobile_client001_session01_highdef_video_adverse.mov"
    touch(tmp_path, bad)
    table, summary, _ = index_quietly("replay", tmp_path)
    assert bad not in set(table["relpath"])
    assert {u["relpath"]: u["reason"] for u in summary["unplaced"]}[bad].startswith("attack medium 'mobile'")


def test_msu_split_lists_with_or_without_leading_zeros(tmp_path):
    for fmt, sub in (("{}", "a"), ("{:03d}", "b")):
        msu_tree(tmp_path / sub, list_format=fmt)
        table, summary, messages = index_quietly("msu", tmp_path / sub)
        assert messages == []
        assert counts(table, "split") == {"train": 120, "test": 160}
        assert counts(table, "split", "attack") == {("test", "none"): 40, ("test", "print"): 40,
                                                    ("test", "replay"): 80, ("train", "none"): 30,
                                                    ("train", "print"): 30, ("train", "replay"): 60}
        by_path = table.set_index("relpath")
        assert by_path.loc["scene01/real/real_client002_laptop_SD_scene01.mov", "split"] == "train"
        assert by_path.loc["scene01/attack/attack_client001_android_SD_printed_photo_scene01.mp4",
                           ["split", "attack", "camera"]].tolist() == ["test", "print", "android"]


def test_msu_missing_protocol_file_and_unlisted_subject(tmp_path):
    msu_tree(tmp_path, train=(2,), test=(1,))
    touch(tmp_path, "scene01/real/real_client099_laptop_SD_scene01.mov")
    table, summary, _ = index_quietly("msu", tmp_path)
    assert "scene01/real/real_client099_laptop_SD_scene01.mov" in {u["relpath"] for u in summary["unplaced"]}
    (tmp_path / "test_sub_list.txt").unlink()
    with pytest.raises(LayoutError, match=r"test_sub_list.txt: missing protocol file"):
        index_dataset("msu", tmp_path, quiet=True)


def test_msu_incomplete_copy_names_listed_subjects_without_videos(tmp_path):
    msu_tree(tmp_path, train=(2,), test=(1,))
    (tmp_path / "test_sub_list.txt").write_text("1\n5\n")
    _, summary, _ = index_quietly("msu", tmp_path)
    assert "scene01/real/real_client005_android_SD_scene01.mp4" in summary["expected"]["missing"]
    assert summary["expected"]["missing_count"] == 8


def test_oulu_full_copy(tmp_path):
    oulu_tree(tmp_path)
    table, summary, messages = index_quietly("oulu", tmp_path)
    assert messages == [] and len(table) == 4950
    assert counts(table, "split") == {"train": 1800, "devel": 1350, "test": 1800}
    assert counts(table, "attack") == {"none": 990, "print": 1980, "replay": 1980}
    row = table.set_index("relpath").loc["Test_files/4_2_40_5.avi"]
    assert (row["label"], row["attack"], row["camera"], row["session"], row["subject"]) == \
        ("spoof", "replay", "phone4", "2", "user40")


def test_oulu_user_in_the_wrong_split_folder(tmp_path):
    oulu_tree(tmp_path, users={"Train_files": [1]}, phones=[1], sessions=[1])
    touch(tmp_path, "Train_files/1_1_40_1.avi")
    table, summary, _ = index_quietly("oulu", tmp_path)
    assert len(table) == 5
    assert summary["unplaced"] == [{"relpath": "Train_files/1_1_40_1.avi",
                                    "reason": "user 40 does not belong to Train_files (users 1-20)"}]


def test_rose_tolerant_names(tmp_path):
    touch(tmp_path, "train/2/G_NT_5s_g_E_2_1.mp4")
    touch(tmp_path, "train/2/Mc_T_HW_wg_E_2_3.mp4")
    touch(tmp_path, "test/13/Vl_NT_ZTE_g_E_13_1.mp4")
    touch(tmp_path, "test/13/Xx_NT_ZTE_g_E_13_1.mp4")
    touch(tmp_path, "loose/G_NT_5s_g_E_4_1.mp4")
    table, summary, messages = index_quietly("rose", tmp_path)
    by_path = table.set_index("relpath")
    assert by_path.loc["train/2/G_NT_5s_g_E_2_1.mp4", ["label", "split", "camera"]].tolist() == \
        ["live", "train", "iphone5s"]
    assert by_path.loc["train/2/Mc_T_HW_wg_E_2_3.mp4", "attack"] == "mask"
    assert by_path.loc["test/13/Vl_NT_ZTE_g_E_13_1.mp4", ["attack", "subject"]].tolist() == ["replay", "subject13"]
    assert {u["relpath"] for u in summary["unplaced"]} == {"test/13/Xx_NT_ZTE_g_E_13_1.mp4",
                                                          "loose/G_NT_5s_g_E_4_1.mp4"}
    assert any("about 3350" in m for m in messages)


def test_video_ids_are_unique_across_datasets(tmp_path):
    casia_tree(tmp_path / "c", train=[1], test=[1])
    replay_tree(tmp_path / "i", clients={"train": [1], "test": [2]})
    msu_tree(tmp_path / "m", train=(2,), test=(1,))
    oulu_tree(tmp_path / "o", users={"Train_files": [1]}, phones=[1], sessions=[1])
    tables = [index_quietly(d, tmp_path / s)[0] for d, s in (("casia", "c"), ("replay", "i"), ("msu", "m"),
                                                             ("oulu", "o"))]
    ids = pd.concat(tables)["video_id"]
    assert ids.is_unique and ids.str.split("/").str[0].nunique() == 4
