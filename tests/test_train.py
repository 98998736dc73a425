"""The training loop on a real (small) build: resume equals an uninterrupted run, outputs name the model
selection, and a non-finite loss stops a step before it reaches the weights."""
from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from pathlib import Path
from importlib import metadata
import subprocess
import sys

import pandas as pd
import pytest
import torch

from fas_train.methods import NonFiniteLoss, RFM, RFMConfig
from fas_train.models import rfm_networks
from fas_train.evaluation import evaluate_run
from fas_train.settings import RunConfig
from fas_train.train import run

from conftest import PROTOCOL


def config(train_build, out, steps, **kw):
    return RunConfig(**{"method": "rfm", "build": str(train_build), "protocol": PROTOCOL, "out": str(out),
                        "steps": steps, "eval_every": 3, "per_class": 2, "network": "small", "input_size": 32,
                        "workers": 0, "device": "cpu", **kw})


def train_rows(out):
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if r["kind"] == "train"}


def test_resume_gives_the_same_batches_and_losses(train_build, tmp_path):
    from torch.utils.tensorboard import SummaryWriter
    run(config(train_build, tmp_path / "straight", 7))
    run(config(train_build, tmp_path / "resumed", 3))  # stops after the checkpoint of step 3, as a killed run would
    with SummaryWriter(str(tmp_path / "resumed/tensorboard")) as killed:  # what an attempt killed at step 5 left
        killed.add_scalar("train/total", -1.0, 5)
    run(config(train_build, tmp_path / "resumed", 7))
    straight, resumed = train_rows(tmp_path / "straight"), train_rows(tmp_path / "resumed")
    assert set(straight) == set(resumed) == set(range(1, 8))
    for step in range(1, 8):
        assert resumed[step]["total"] == pytest.approx(straight[step]["total"], rel=1e-6, abs=1e-9), step
    assert json.loads((tmp_path / "straight/report.json").read_text())["best_step"] in (3, 6, 7)
    for name in ("straight", "resumed"):  # TensorBoard's events are the rows: each step once, the killed ones gone
        events = tensorboard_scalars(tmp_path / name / "tensorboard", "train/total")
        rows = train_rows(tmp_path / name)
        assert [step for step, _ in events] == list(range(1, 8))
        assert all(value == pytest.approx(rows[step]["total"], rel=1e-6) for step, value in events)
    validation = tensorboard_scalars(tmp_path / "resumed/tensorboard", "validation/eer")
    assert [step for step, _ in validation] == [3, 6, 7]


def tensorboard_scalars(folder, tag) -> list[tuple[int, float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    events = EventAccumulator(str(folder))
    events.Reload()
    return [(e.step, e.value) for e in events.Scalars(tag)]


def test_without_tensorboard_the_rows_are_written_and_no_events(tmp_path, monkeypatch):
    import sys
    from fas_train.metrics_log import log, tensorboard_events
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # the optional package is absent
    with tensorboard_events(tmp_path, 0):
        log(tmp_path, {"step": 1, "kind": "train", "total": 0.5})
    assert json.loads((tmp_path / "metrics.jsonl").read_text()) == {"step": 1, "kind": "train", "total": 0.5}
    assert not (tmp_path / "tensorboard").exists()
    monkeypatch.undo()
    with tensorboard_events(tmp_path, 0, enabled=False):  # another process than the first under torchrun
        log(tmp_path, {"step": 2, "kind": "train", "total": 0.25})
    assert not (tmp_path / "tensorboard").exists()
    with tensorboard_events(tmp_path, 0):
        log(tmp_path, {"step": 3, "kind": "train", "total": 0.125, "note": "text"})
    assert tensorboard_scalars(tmp_path / "tensorboard", "train/total") == [(3, 0.125)]


def test_a_run_resumes_only_with_its_own_settings_and_build(train_build, tmp_path):
    out = tmp_path / "run"
    run(config(train_build, out, 2))
    (out / "checkpoint.pt").unlink()  # as if killed before its first checkpoint: the next run starts afresh
    run(config(train_build, out, 2))
    assert [r["step"] for r in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())] == [1, 2, 2]
    with pytest.raises(ValueError, match=r"cannot resume this run with other settings \(seed 0 -> 1\)"):
        run(config(train_build, out, 4, seed=1))
    from pipeline.hashing import content_sha256
    reformatted = tmp_path / "reformatted"  # the same content written otherwise: the same build
    shutil.copytree(train_build, reformatted)
    (reformatted / "manifest.json").write_text((train_build / "manifest.json").read_text() + "\n")
    run(config(reformatted, out, 3))
    rebuilt = tmp_path / "rebuilt"  # the same shards, but a manifest that is not the one the run started on
    shutil.copytree(train_build, rebuilt)
    manifest = json.loads((train_build / "manifest.json").read_text())
    manifest["build"] = "rebuilt"
    manifest["content_sha256"] = content_sha256(manifest)
    (rebuilt / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="is not the manifest this run started on"):
        run(config(rebuilt, out, 4))
    run(config(train_build, out, 4, eval_every=2))  # more steps, another evaluation schedule: fine
    assert sorted(train_rows(out)) == [1, 2, 3, 4]
    assert json.loads((out / "run.json").read_text())["build_manifest_sha256"] == \
        hashlib.sha256((train_build / "manifest.json").read_bytes()).hexdigest()
    info = json.loads((out / "run.json").read_text())  # evaluation later, on a build that changed since
    info["config"]["build"] = str(rebuilt)
    (out / "run.json").write_text(json.dumps(info))
    with pytest.raises(ValueError, match="not the manifest this run started on.*read against other data"):
        evaluate_run(out)


def test_outputs_name_the_selection_and_oracle_mode(train_build, tmp_path):
    honest = run(config(train_build, tmp_path / "honest", 3))
    oracle = run(config(train_build, tmp_path / "oracle", 3, select_on_target=True))
    assert honest["selection"].startswith("source validation") and oracle["selection"].startswith("ORACLE")
    assert json.loads((tmp_path / "oracle/run.json").read_text())["selection"].startswith("ORACLE")
    provenance = json.loads((tmp_path / "honest/run.json").read_text())
    assert provenance["packages"]["torch"] == metadata.version("torch")
    assert len(provenance["code"]["git_commit"] or "") == 40 and provenance["device"] == "cpu"
    for key in ("auc", "eer", "hter_at_target_eer_threshold", "hter_at_source_threshold", "apcer", "bpcer", "acer"):
        assert key in honest["metrics"]["video"] and key in honest["metrics"]["frame"]
    assert (tmp_path / "honest/roc.png").stat().st_size > 0 and (tmp_path / "honest/scores.csv").exists()
    result = subprocess.run([sys.executable, "-m", "fas_train", "eval", "--run", str(tmp_path / "honest")],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0 and "HTER@source-threshold" in result.stdout
    result = subprocess.run([sys.executable, "-m", "fas_train", "eval", "--run", str(tmp_path / "honest"),
                             "--json"], capture_output=True, text=True, timeout=300)
    printed = json.loads(result.stdout)
    assert printed["run"] == str(tmp_path / "honest")
    assert json.dumps(printed["metrics"], sort_keys=True) == json.dumps(honest["metrics"], sort_keys=True)  # NaN too
    assert printed["deployable_threshold"] == honest["deployable_threshold"]
    oracle_scores = oracle["selection_scores"]  # selected on the target: its scores are the target's
    for level in ("frame", "video"):
        assert oracle_scores["auc" if level == "frame" else "video_auc"] == pytest.approx(oracle["metrics"][level]["auc"])


def test_summary_puts_what_selection_saw_beside_what_the_target_gives(train_build, tmp_path, capsys):
    from fas_train.cli import main
    honest = run(config(train_build, tmp_path / "honest", 3))
    oracle = run(config(train_build, tmp_path / "oracle", 3, method="erm", select_on_target=True))
    (tmp_path / "unfinished").mkdir()
    folders = [str(tmp_path / name) for name in ("honest", "unfinished", "oracle")]
    for level, source_key in (("frame", "auc"), ("video", "video_auc")):
        assert main(["summary", *folders, "--level", level, "--json"]) == 0
        rows = json.loads(capsys.readouterr().out)
        assert [(r["method"], r["selection"], r["level"]) for r in rows] == [("rfm", "honest", level),
                                                                            ("erm", "ORACLE", level)]
        for row, report in zip(rows, (honest, oracle)):
            target = report["metrics"][level]
            assert row["source_auc"] == report["selection_scores"][source_key]
            assert (row["target_auc"], row["target_hter"]) == (target["auc"], target["hter_at_source_threshold"])
            assert row["gap"] == pytest.approx(row["source_auc"] - row["target_auc"])
            assert row["best_step"] == report["best_step"] and row["protocol"] == "O&C&I->M"
    assert main(["summary", *folders]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split() == ["method", "protocol", "level", "source-val", "AUC", "target", "AUC", "target", "HTER",
                               "gap"]
    assert text[2].split()[:2] == ["erm", "O&C&I->M"] and text[2].endswith("ORACLE (selected on the target)")
    assert f"{honest['metrics']['frame']['auc']:.4f}" == text[1].split()[4]
    assert text[-2] == (f"rfm: {tmp_path / 'honest'}/report.json, plots {tmp_path / 'honest'}/roc.png, det.png, "
                        f"histogram.png")
    assert main(["summary", str(tmp_path / "unfinished")]) == 2
    assert "no finished run" in capsys.readouterr().err


def test_a_non_finite_loss_never_reaches_the_weights():
    torch.manual_seed(0)
    method = RFM(*rfm_networks("small"), RFMConfig())
    before = {k: v.clone() for k, v in method.state_dict().items()}
    batch = {"image": torch.rand(8, 6, 32, 32), "depth": torch.rand(8, 1, 32, 32),
             "label": torch.tensor([1, 1, 0, 0] * 2), "domain": torch.tensor([0] * 4 + [1] * 4)}
    batch["image"][0, 0, 0, 0] = float("nan")
    with pytest.raises(NonFiniteLoss):
        method.update(batch)
    after = method.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before if not k.endswith("num_batches_tracked")
               and "running" not in k)


def test_collect_reports_mean_and_std_over_seeds(tmp_path):
    from fas_train.collect import collect
    for seed, auc in ((0, 0.9), (1, 0.7)):
        folder = tmp_path / f"s{seed}"
        folder.mkdir()
        metrics = {"auc": auc, "hter_at_target_eer_threshold": 0.1, "hter_at_source_threshold": 0.2 + seed / 10,
                   "acer": 0.3}
        (folder / "report.json").write_text(json.dumps({"method": "rfm", "protocol": "O&C&I->M", "variant": "all",
                                                        "selection": "source validation", "metrics": {"video": metrics}}))
        (folder / "run.json").write_text(json.dumps({"config": {"seed": seed}}))
    (tmp_path / "unfinished").mkdir()
    table = collect(sorted(tmp_path.iterdir()))
    row = table.iloc[0]
    assert len(table) == 1 and row["runs"] == 2 and row["folds"] == 1
    assert row["auc_mean"] == pytest.approx(0.8) and row["auc_std"] == pytest.approx(0.1)
    assert row["hter_at_source_threshold_mean"] == pytest.approx(0.25) and row["selection"] == "honest"


def test_a_checkpoint_of_the_first_format_resumes_the_same(train_build, tmp_path):
    run(config(train_build, tmp_path / "straight", 5))
    run(config(train_build, tmp_path / "old", 3))
    path = tmp_path / "old" / "checkpoint.pt"
    data = torch.load(path, weights_only=True)  # rewritten as session-1 code wrote it
    state = json.loads(data["state_json"])
    old = {"method": data["method"], "optimizer": data["optimizers"]["main"], "generator": data["generator"],
           "state": {"step": state["step"], "best": state["best"]}, "torch_rng": data["torch_rng"][0]}
    torch.save(old, path)
    (tmp_path / "old" / "checkpoint.pt.sha256").unlink()  # that code wrote no hash beside it
    run(config(train_build, tmp_path / "old", 5))
    straight, resumed = train_rows(tmp_path / "straight"), train_rows(tmp_path / "old")
    assert all(resumed[s]["total"] == pytest.approx(straight[s]["total"], rel=1e-6) for s in range(1, 6))


def test_refused_commands_leave_no_run_folder(train_build, tmp_path, monkeypatch, capsys):
    from fas_train.cli import main
    base = ["train", "--method", "ccdd", "--build", str(train_build), "--protocol", PROTOCOL, "--steps", "1",
            "--network", "small", "--device", "cpu"]
    cases = {"zero": (["--per-class", "0"], "--per-class 0: must be at least 1"),
             "option": (["--option", "no_such=1"], "option 'no_such=1'"),
             "weights": ([], "ImageNet weights for resnet18 not found"),
             "typed": (["--option", "lr=fast"], "option 'lr=fast': lr is float: Input should be a valid number"),
             "batch": (["--option", "pretrained=none", "--per-class", "100000"],
                       "--per-class 100000: more samples per (domain, class) than the smallest group"),
             "size": (["--input-size", "1"], "--input-size 1: the networks need at least 32 pixels")}
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "hub"))
    monkeypatch.setenv("FAS_WEIGHTS_DIR", "")
    for name, (extra, message) in cases.items():
        status = main(base + ["--out", str(tmp_path / name)] + extra)
        err = capsys.readouterr().err
        assert status == 2 and message in err, (name, err[-500:])
        assert not (tmp_path / name).exists(), name
    done = subprocess.run([sys.executable, "-m", "fas_train", *base, "--out", str(tmp_path / "cli"), "--per-class",
                           "0"], capture_output=True, text=True, timeout=300)  # the same from the command line
    assert done.returncode == 2 and "--per-class 0: must be at least 1" in done.stderr
    assert not (tmp_path / "cli").exists()


def test_bf16_and_channels_last_run_on_the_cpu_with_float32_scores(train_build, tmp_path):
    out = tmp_path / "bf16"
    result = run(config(train_build, out, 2, precision="bf16", channels_last="on"))
    assert result["precision"] == "bf16"
    scores = pd.read_csv(out / "scores.csv")["score"]
    assert scores.nunique() > len(scores) // 2  # float32 scores: bf16 ones would collapse onto a few values
    assert (scores.to_numpy() != torch.tensor(scores.to_numpy()).bfloat16().double().numpy()).any()
    assert result["deployable_video_threshold"] is not None
    assert set(result["metrics"]["video"]) >= {"apcer_species", "apcer_worst", "apcer_family_worst"}


def tampered_copy(train_build, tmp_path):
    """A copy of the build (manifest folder and shards) whose manifest points at the copied shards."""
    from pipeline.hashing import content_sha256
    manifest = json.loads((train_build / "manifest.json").read_text())
    shards = tmp_path / "shards"
    shutil.copytree(manifest["shard_dir"], shards)
    folder = tmp_path / "manifest"
    shutil.copytree(train_build, folder)
    manifest["shard_dir"] = str(shards)
    manifest["content_sha256"] = content_sha256(manifest)
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n")
    return folder, shards


def test_the_trainer_refuses_a_build_that_fails_its_audit(train_build, tmp_path, monkeypatch):
    import pipeline.audit
    folder, shards = tampered_copy(train_build, tmp_path)
    hashed = []
    real = pipeline.audit.sha256_file
    monkeypatch.setattr(pipeline.audit, "sha256_file", lambda p, *a: hashed.append(Path(p).name) or real(p, *a))
    first = run(config(folder, tmp_path / "first", 1))
    assert sum(name.endswith(".h5") for name in hashed) == len(list(shards.glob("*.h5")))
    hashed.clear()
    run(config(folder, tmp_path / "second", 1))  # the cache beside the manifest: no shard hashed again
    assert not any(name.endswith(".h5") for name in hashed)
    assert "known from verified.json" in json.loads((tmp_path / "second/run.json").read_text())["build_verification"]
    assert first["metrics"]["frame"]["samples"] > 0

    victim = sorted(shards.glob("*.h5"))[0]  # a flipped byte: same size, new mtime
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=f"{victim.name}: sha256"):
        run(config(folder, tmp_path / "flipped", 1))
    assert not (tmp_path / "flipped").exists()
    skipped = run(config(folder, tmp_path / "unchecked", 1, verify=False))  # asked for: trains, and says so
    assert json.loads((tmp_path / "unchecked/run.json").read_text())["build_verification"] == "skipped (--no-verify)"
    assert skipped["metrics"]["frame"]["samples"] > 0

    folder, shards = tampered_copy(train_build, tmp_path / "again")
    samples = (folder / "samples.csv").read_text()
    (folder / "samples.csv").write_text(samples.replace(",spoof,", ",live,", 1))  # one label flipped
    done = subprocess.run([sys.executable, "-m", "fas_train", "train", "--method", "rfm", "--build", str(folder),
                           "--protocol", PROTOCOL, "--out", str(tmp_path / "edited"), "--steps", "1",
                           "--network", "small", "--device", "cpu"], capture_output=True, text=True, timeout=300)
    assert done.returncode == 2 and "samples.csv: sha256" in done.stderr, done.stderr[-800:]
    manifest = json.loads((folder / "manifest.json").read_text())
    (folder / "samples.csv").write_text(samples)
    manifest["depth_backend"] = "face-alignment"  # an edited manifest field
    (folder / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="manifest.json: content edited"):
        run(config(folder, tmp_path / "edited2", 1))


def test_a_flipped_byte_with_its_mtime_restored_is_still_hashed(train_build, tmp_path):
    folder, shards = tampered_copy(train_build, tmp_path)
    run(config(folder, tmp_path / "first", 1))  # verified and cached
    victim = sorted(shards.glob("*.h5"))[0]
    before = victim.stat()
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 1
    victim.write_bytes(bytes(data))
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))  # `touch -d`: size and mtime as cached
    assert (victim.stat().st_size, victim.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    with pytest.raises(ValueError, match=f"{victim.name}: sha256"):
        run(config(folder, tmp_path / "second", 1))


def test_options_take_their_fields_types(train_build, tmp_path):
    from fas_train.settings import method_config
    _, parsed = method_config(config(train_build, tmp_path, 1, options=("lr=1e-4", "meta=false", "per_class=3")))
    assert parsed.lr == 1e-4 and isinstance(parsed.lr, float) and parsed.meta is False and parsed.per_class == 3
    result = run(config(train_build, tmp_path / "run", 1, options=("lr=1e-4",)))  # torch.optim got a str before
    assert result["metrics"]["frame"]["samples"] > 0
    for option, says in (("per_class=2.5", "per_class is int"), ("meta=maybe", "meta is bool"),
                         ("nope=1", "rfm's options: inner_lr (float, default 0.001)")):
        with pytest.raises(ValueError, match=rf"option '{re.escape(option)}': .*{re.escape(says)}"):
            method_config(config(train_build, tmp_path, 1, options=(option,)))


@pytest.mark.parametrize("method", ["rfm", "ccdd-video"])
def test_model_selection_scores_source_validation_never_the_target(train_build, tmp_path, monkeypatch, method):
    """The honest default scores only the held-out source videos (the ORACLE mode only the target), and a
    checkpoint is kept by the method's own number: frame scores, or CCDD's video branch."""
    from fas_train import selection
    from fas_train.inputs import run_data
    from fas_train.settings import build_method, resolved
    options = ("pretrained=none", "clip_length=2") if method == "ccdd-video" else ()
    seen = []
    for name in ("score", "video_scores"):
        real = getattr(selection, name)
        monkeypatch.setattr(selection, name, lambda m, dataset, *a, real=real, name=name: seen.append((name, dataset))
                            or real(m, dataset, *a))
    for oracle in (False, True):
        cfg = config(train_build, tmp_path / str(oracle), 1, method=method, options=options, select_on_target=oracle)
        _, _, _, ((_, train_set), (val_rows, val_set), (target_rows, target_set)) = run_data(cfg)
        model = build_method(cfg, sorted(set(train_set.domains.tolist())))
        cfg = resolved(cfg, model)
        (tmp_path / str(oracle)).mkdir()
        seen.clear()
        keys = selection.selection_keys(model)
        state = {"step": 1, "best": {"step": 0, keys[0]: 1.0, keys[1]: 0.0}}  # a worst-possible kept entry
        selection.evaluate_and_select(model, cfg, torch.device("cpu"), state, val_set, val_rows, target_set,
                                      target_rows, tmp_path / str(oracle))
        expected = target_set if oracle else val_set
        assert seen and all(dataset is expected for _, dataset in seen), seen
        assert {name for name, _ in seen} == ({"score", "video_scores"} if method == "ccdd-video" else {"score"})
        assert state["best"]["step"] == 1  # beat the worst entry
        entry = state["best"]
        unbeatable = {**entry, "step": 0, keys[0]: 0.0, keys[1]: 1.0}  # only its own keys are perfect
        other = ("eer", "auc") if method == "ccdd-video" else None
        if other:
            unbeatable.update({other[0]: 1.0, other[1]: 0.0})  # the image branch's as bad as can be
        state = {"step": 2, "best": unbeatable}
        selection.evaluate_and_select(model, cfg, torch.device("cpu"), state, val_set, val_rows, target_set,
                                      target_rows, tmp_path / str(oracle))
        assert state["best"]["step"] == 0  # ranked by the method's own keys
    assert keys == (("video_branch_eer", "video_branch_auc") if method == "ccdd-video" else ("eer", "auc"))
