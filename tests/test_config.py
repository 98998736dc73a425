"""Build configs: the shipped ones load and fit the protocols and methods; bad ones are named precisely."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from fas_train.methods import METHODS
from fas_train.protocols import load_protocol
from pipeline.config import load_config

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("path", sorted([*(ROOT / "configs/build").glob("*.yaml"),
                                         *(ROOT / "pipeline/configs/build").glob("*.yaml")]), ids=lambda p: p.name)
def test_shipped_build_configs_load(path):
    config = load_config(path)
    assert config.name == path.stem and len(config.config_hash()) == 64


def test_the_full_template_serves_every_protocol_and_the_video_method():
    full = load_config(ROOT / "pipeline/configs/build/full.yaml")
    for path in sorted((ROOT / "fas_train/configs/protocols").glob("*.yaml")):
        protocol = load_protocol(path)
        assert set(protocol.sources) | {protocol.target} <= set(full.datasets), path.name
    clip_length = METHODS["ccdd-video"][1]().clip_length
    assert full.frames.count >= clip_length and full.depth.store_estimate  # ccdd-video clips, HFN + Depth


BAD_VALUES = [  # (section or None, key, value, what the message must say beside the field)
    ("shards", "samples_per_shard", 0, "greater than or equal to 1"),  # WriteShards never ended
    ("face", "size", 0, "greater than or equal to 16"),  # exit 0 with zero samples
    ("face", "size", "64", "valid integer"),  # every video failed minutes later
    ("frames", "count", 2.7, "valid integer"),
    ("depth", "store_estimate", "no", "valid boolean"),  # read as true
    ("compute", "device", "tpu", "'auto', 'cpu' or 'cuda'"),
    ("face", "min_score", 1.5, "less than or equal to 1"),
    ("compute", "workers", 0, "at least 1, or 'auto'"),
    ("compute", "workers", "4", "at least 1, or 'auto'"),
    (None, "name", "../../escaped", "one folder name"),  # the build landed outside output_dir
    (None, "name", "..", "one folder name"),
    ("face", "thresholds", [0.6, 0.7], "item 2 is missing"),
    ("face", "factor", 1.5, "less than 1"),
    ("face", "max_side", 5, "greater than or equal to 12"),
    ("frames", "truncation_tolerance", 1, "less than 1"),
    ("frames", "policy", "random", "'even', 'every' or 'all'"),
    ("depth", "size", 0, "greater than or equal to 8"),
    ("shards", "compression", "zip", "'none', 'lzf' or 'gzip'"),
    ("compute", "worker_timeout", 0, "greater than 0"),
    ("compute", "threads_per_worker", True, "valid integer"),
    ("frames", "step", "10", "valid integer"),
]


@pytest.mark.parametrize("section, key, value, says", BAD_VALUES,
                         ids=[f"{s or 'top'}.{k}={v!r}" for s, k, v, _ in BAD_VALUES])
def test_a_bad_value_is_refused_at_load_naming_the_file_and_the_field(tmp_path, section, key, value, says):
    raw = yaml.safe_load((ROOT / "configs/build/demo.yaml").read_text())
    if section is None:
        raw[key] = value
    else:
        raw[section] = {**raw.get(section, {}), key: value}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(ValueError) as caught:
        load_config(path)
    message = str(caught.value)
    field = key if section is None else f"{section}.{key}"
    assert message.startswith(f"{path}: ") and f"{field}: " in message and says in message, message


def test_bad_build_configs_name_the_file_and_the_field(tmp_path):
    good = yaml.safe_load((ROOT / "configs/build/demo.yaml").read_text())
    cases = [({**good, "frame": {"count": 2}}, r"frame: unknown key in BuildConfig; known: \['compute', 'datasets'"),
             ({**good, "depth": {"backend": "prnet"}},
              "depth.backend: Input should be 'auto', 'face-alignment', 'mediapipe' or 'generic'"),
             ({**good, "depth": {"store_estimates": True}}, r"depth.store_estimates: unknown key in DepthConfig"),
             ({**good, "datasets": {"casia": "/x", "siw": "/y"}}, r"datasets: .*unknown \['siw'\]"),
             ({**good, "face": {"sizing": {"oulu": {"max_side": "480"}}}}, "face.sizing.oulu.max_side: "),
             ({**good, "face": {"sizing": {"siw": {"max_side": 480}}}}, "face.sizing: .*siw"),
             ({k: v for k, v in good.items() if k != "output_dir"}, "output_dir: required")]
    for number, (raw, message) in enumerate(cases):
        path = tmp_path / f"bad{number}.yaml"
        path.write_text(yaml.safe_dump(raw))
        with pytest.raises(ValueError, match=message) as caught:
            load_config(path)
        assert str(path) in str(caught.value)
    every = {**good, "face": {"size": 0, "min_score": 2}}  # every wrong field at once, not only the first
    path = tmp_path / "every.yaml"
    path.write_text(yaml.safe_dump(every))
    with pytest.raises(ValueError, match="face.min_score: .*; face.size: "):
        load_config(path)


@pytest.mark.parametrize("text, line", [("name: demo\ndatasets: {casia: /x\noutput_dir: o\n", 3),
                                         ("name: demo\n  datasets: x\n", 2),
                                         ("name: [demo\n", 2)])
def test_malformed_yaml_names_the_file_and_the_line(tmp_path, text, line):
    from fas_train.protocols import load_protocol
    from fas_train.sweep import load_sweep
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    for load in (load_config, load_protocol, load_sweep):
        with pytest.raises(ValueError, match=rf"^{path}:{line}:\d+: malformed YAML: ") as caught:
            load(path)
        assert "<unicode string>" not in str(caught.value)


def test_every_config_the_makefile_names_is_in_the_repository():
    named = set(re.findall(r"configs/[\w/.-]+\.yaml", (ROOT / "Makefile").read_text()))
    assert named and all((ROOT / path).is_file() for path in named), named
    tracked = subprocess.run(["git", "ls-files", *sorted(named)], cwd=ROOT, capture_output=True, text=True).stdout.split()
    assert set(tracked) == named  # committed, not only present here (a clean checkout must have them)


def test_the_paper_frames_template_takes_meta_patterns_two_frames():
    paper = load_config(ROOT / "pipeline/configs/build/paper-frames.yaml")
    full = load_config(ROOT / "pipeline/configs/build/full.yaml")
    assert (paper.frames.policy, paper.frames.count) == ("even", 2)  # Meta Pattern's code: 2 evenly spaced
    assert paper.face == full.face and paper.depth == full.depth and paper.datasets == full.datasets


def test_the_configuration_reference_is_generated_from_the_config_classes():
    """docs/configuration.md lists every key of every section with its type, bounds, default and meaning."""
    from pipeline.config import SECTIONS, BuildConfig
    from pipeline.config_reference import reference, type_text
    text = reference()
    assert (ROOT / "docs/configuration.md").read_text() == text, \
        "docs/configuration.md is stale: run fas-pipeline config-reference > docs/configuration.md"
    for prefix, section in (("", BuildConfig), *((f"{k}.", v) for k, v in SECTIONS.items())):
        for name, field in section.model_fields.items():
            if name in SECTIONS:
                continue
            assert field.description, f"{prefix}{name} has no description"
            assert f"| `{prefix}{name}` | {type_text(field)} |" in text
    face, frames = SECTIONS["face"].model_fields, SECTIONS["frames"].model_fields
    assert type_text(face["size"]) == "int ≥ 16, ≤ 2048" and type_text(face["crop"]) == '"aligned" \\| "box"'
    assert type_text(frames["truncation_tolerance"]) == "float ≥ 0, < 1"
    assert "| `shards.samples_per_shard` | int ≥ 1 | `512` |" in text and "| `name` | str | required |" in text
    assert "| `depth.weights_dir` | str or null | `null` |" in text


def test_init_config_fills_a_shipped_template_with_your_roots(tmp_path, capsys):
    from pipeline.cli import main
    from pipeline.templates import TEMPLATES, template_names
    assert template_names() == ["full", "paper-frames"]
    for name in ("oulu", "casia"):
        (tmp_path / name).mkdir()
    out = tmp_path / "mine.yaml"
    args = ["init-config", "full", "--root", f"oulu={tmp_path / 'oulu'}", "--root", f"casia={tmp_path / 'casia'}",
            "--out", str(out), "--output-dir", str(tmp_path / "shards")]
    assert main(args) == 0 and f"wrote {out}" in capsys.readouterr().out
    mine, template = load_config(out), load_config(TEMPLATES / "full.yaml")
    assert mine.datasets == {"oulu": str(tmp_path / "oulu"), "casia": str(tmp_path / "casia")}  # rose dropped
    assert mine.output_dir == str(tmp_path / "shards") and mine.manifest_dir == template.manifest_dir
    assert mine.content() == {**template.content(), "datasets": ["casia", "oulu"]}  # every other setting kept
    assert mine.compute == template.compute and mine.name == template.name
    comments = [line for line in (TEMPLATES / "full.yaml").read_text().splitlines() if line.startswith("#")]
    assert [line for line in out.read_text().splitlines() if line.startswith("#")] == comments
    before = out.read_bytes()
    assert main(args) == 2 and "exists; choose another --out or give --force" in capsys.readouterr().err
    assert main([*args, "--name", "other", "--force"]) == 0 and load_config(out).name == "other"
    for bad, says in ((f"oulu={tmp_path / 'nope'}", "not a folder: oulu="), ("olu=/x", "expected DATASET=PATH")):
        assert main(["init-config", "full", "--root", bad, "--out", str(tmp_path / "x.yaml")]) == 2
        assert says in capsys.readouterr().err and not (tmp_path / "x.yaml").exists()
    assert main([*args[:-4], "--out", str(tmp_path / "y.yaml"), "--name", "a/b"]) == 2
    assert "a build name must be one folder name" in capsys.readouterr().err and not (tmp_path / "y.yaml").exists()
    assert before != out.read_bytes()  # --force wrote the new name


def test_workers_auto_is_one_per_core_and_the_default():
    import os
    from pydantic import ValidationError
    from pipeline.config import ComputeConfig
    from pipeline.templates import TEMPLATES
    cores = len(os.sched_getaffinity(0))
    assert ComputeConfig().workers == "auto" and ComputeConfig().worker_count() == cores
    assert ComputeConfig(workers=3).worker_count() == 3
    for bad in (0, "many", 2.5):
        with pytest.raises(ValidationError):
            ComputeConfig(workers=bad)
    for name in ("full", "paper-frames"):
        assert load_config(TEMPLATES / f"{name}.yaml").compute.workers == "auto"
