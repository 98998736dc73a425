"""Self-contained models: ``fas-train export`` writes a run's scoring networks as ATen graphs that load without
this project's classes and without unpickling, beside the preprocessing and thresholds they need.

A model folder holds:

- ``image_scorer.json`` and ``image_scorer.npz``: the frame scorer, uint8 faces (N x 3K x S x S: the build's
  K channel sets stacked as its shards hold them) -> live probability (N,). It divides by 255, resizes to the
  method's input size (bilinear, antialiased, as training does) and runs the method's ``predict``. The graph is
  ``torch.export``'s JSON schema; weights and constants are plain arrays (``.npz`` read with
  ``allow_pickle=False``).
- for methods with a video branch (CCDD's LSTM), ``video_features.*`` (uint8 frames -> the encoder's per-frame
  features) and ``video_step.*`` (one LSTM step: a frame's features and the state -> the next state and the
  live probability of the sequence so far): ``torch.export`` fixes an LSTM's sequence length, so the recurrence
  over a video's L frames runs as L calls of the step (the same arithmetic, equal to the last bit).
- ``preprocessing.json``: the build's frame, face and depth settings and its depth backend (what
  ``fas-train predict`` applies to new footage).
- ``model.json``: format, method and its options, inputs, thresholds (frame, video and video branch, all fixed
  on source validation), fusion, provenance (run.json's sha256, the build manifest's content hash and config
  hash, the code and torch versions that trained and exported) and the sha256 of every file.

Why ``torch.export`` and not TorchScript or ONNX: its graph is the ATen program PyTorch itself runs, so the
exported scores equal the run's to the last bits on the same machine, with no exporter of its own and no
runtime to add (ONNX would add one, and its antialiased resize differs); TorchScript is deprecated. Its own
``.pt2`` loader is not used (it can fall back to unrestricted loading, and its graphs may hold guard code):
:func:`load_model` reads the JSON graph itself, refuses any node that is not an ATen operator (or the autocast
wrapper and tuple indexing that export writes), any guard code and any file whose sha256 is not model.json's,
and hands the arrays to torch's deserializer as tensors.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.atomic import write_json
from pipeline.hashing import sha256_file
from pipeline.provenance import code_version

from .data import resize_input

MODEL_FORMAT = 1
ALLOWED_TARGET = re.compile(r"^torch\.ops\.aten\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+$")
ALLOWED_OTHER = {"torch.ops.higher_order.wrap_with_autocast", "_operator.getitem"}
REFUSED_ATEN = re.compile(r"file|save|load", re.IGNORECASE)  # no ATen operator that reads or writes files
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class ImageScorer(nn.Module):
    """uint8 faces (N x 3K x S x S) -> live probability (N,), as the training loop scores them."""

    def __init__(self, method: nn.Module, input_size: int):
        super().__init__()
        self.method, self.input_size = method, input_size

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.method.predict(_inputs(faces, self.input_size))


class VideoScorer(nn.Module):
    """uint8 frames of one video in order (1 x L x 3K x S x S) -> the video branch's live probability (1,)."""

    def __init__(self, method: nn.Module, input_size: int):
        super().__init__()
        self.method, self.input_size = method, input_size

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        images = _inputs(frames.flatten(0, 1), self.input_size)
        return self.method.predict_video(images.view(*frames.shape[:2], *images.shape[1:]))


class VideoFeatures(nn.Module):
    """uint8 frames (L x 3K x S x S) -> the video branch's per-frame features (L x F)."""

    def __init__(self, method: nn.Module, input_size: int):
        super().__init__()
        self.method, self.input_size = method, input_size

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return self.method.frame_features(_inputs(frames, self.input_size))


class VideoStep(nn.Module):
    """(features 1 x 1 x F, hidden, cell) -> (live probability (1,), hidden, cell): one recurrence step."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, features: torch.Tensor, hidden: torch.Tensor, cell: torch.Tensor):
        return self.method.video_step(features, hidden, cell)


class SteppedVideo:
    """The video scorer of a model folder: its features program, then the step program over the frames."""

    def __init__(self, features, step, state_shape: list):
        self.features, self.step, self.state_shape = features, step, state_shape

    def __call__(self, frames: torch.Tensor) -> torch.Tensor:
        features = self.features(frames[0])
        hidden = torch.zeros(self.state_shape, device=features.device)
        cell = torch.zeros(self.state_shape, device=features.device)
        probability = None
        for t in range(len(features)):
            probability, hidden, cell = self.step(features[t][None, None], hidden, cell)
        return probability


def _inputs(faces: torch.Tensor, input_size: int) -> torch.Tensor:
    """What :func:`fas_train.runtime.prepare` makes of a batch: floats in [0, 1] at the input size."""
    return resize_input(faces.float() / 255, input_size)


def export_run(run: Path, out: Path, build: str | None = None) -> dict:
    """Write the model folder ``out`` of a finished run (its best checkpoint, thresholds from report.json, the
    preprocessing of its build); return model.json's content. ``out`` must not exist yet: the folder is
    written beside it and renamed into place, so a model folder is whole or absent."""
    from torch.export import Dim, export

    from .scorers import run_scorer
    out = Path(out)
    if out.exists():
        raise FileExistsError(f"{out}: already exists; export writes a new folder (remove it, or give another --out)")
    scorer = run_scorer(Path(run), build=build, device="cpu")
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        channels, size = 3 * len(scorer.channels), scorer.size
        files = {}
        image = ImageScorer(scorer.method, scorer.input_size).eval()
        faces = torch.zeros(2, channels, size, size, dtype=torch.uint8)
        with torch.no_grad():
            programs = {"image_scorer": (export(image, (faces,), dynamic_shapes=({0: Dim("faces", min=1)},),
                                                strict=False), image, [None, channels, size, size])}
            if scorer.video is not None:
                features = VideoFeatures(scorer.method, scorer.input_size).eval()
                programs["video_features"] = (export(features, (faces,), dynamic_shapes=({0: Dim("frames", min=1)},),
                                                     strict=False), features, [None, channels, size, size])
                width, state = features(faces).shape[1], scorer.method.video_state_shape()
                step = VideoStep(scorer.method).eval()
                example = (torch.zeros(1, 1, width), torch.zeros(state), torch.zeros(state))
                programs["video_step"] = (export(step, example, strict=False), step,
                                          [[1, 1, width], list(state), list(state)])
        for name, (program, module, shape) in programs.items():
            files.update(_write_program(staging, name, program, shape))
        spec = {"format": MODEL_FORMAT, **scorer.description, "input": {
                    "channels": list(scorer.channels), "stored_size": size, "input_size": scorer.input_size,
                    **{name: shape for name, (_, _, shape) in programs.items()}},
                "exported_by": {"code": code_version(), "torch": torch.__version__}}
        write_json(staging / "preprocessing.json", scorer.preprocessing)
        files["preprocessing.json"] = sha256_file(staging / "preprocessing.json")
        spec["files"] = files
        write_json(staging / "model.json", spec)
        _check_round_trip(staging, programs, scorer.method, scorer.input_size)
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return spec


def _write_program(folder: Path, name: str, program, shape: list) -> dict:
    """The graph as JSON and its tensors as plain arrays; their sha256 by file name."""
    from torch._export.serde.serialize import serialize
    artifact = serialize(program)
    graph = folder / f"{name}.json"
    graph.write_bytes(artifact.exported_program)
    parameters = set(program.graph_signature.parameters)
    arrays = {f"{'parameters' if k in parameters else 'buffers'}/{k}": v.detach().cpu().numpy()
              for k, v in program.state_dict.items()}
    arrays.update({f"constants/{k}": v.detach().cpu().numpy() for k, v in program.constants.items()
                   if torch.is_tensor(v)})
    if len(arrays) != len(program.state_dict) + len(program.constants):
        raise ValueError(f"{name}: the exported program holds constants that are not tensors")
    weights = folder / f"{name}.npz"
    np.savez(weights, **arrays)
    return {graph.name: sha256_file(graph), weights.name: sha256_file(weights)}


def _check_round_trip(folder: Path, programs: dict, method, input_size: int) -> None:
    """The model read back from ``folder`` scores random faces (and a random video) as the run's networks do
    (within 1e-6)."""
    model = load_model(folder)
    generator = torch.Generator().manual_seed(0)
    shape = [3, *programs["image_scorer"][2][1:]]
    checks = [("image_scorer", ImageScorer(method, input_size), model.image_scorer, shape)]
    if model.video_scorer is not None:
        checks.append(("video scorer", VideoScorer(method, input_size), model.video_scorer, [1, *shape]))
    for name, module, loaded, shape in checks:
        sample = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        with torch.no_grad():
            expected, got = module.eval()(sample), loaded(sample)
        if not torch.allclose(expected, got, rtol=0, atol=1e-6):
            raise RuntimeError(f"{name}: the exported graph scores differently from the run's networks "
                               f"(max difference {float((expected - got).abs().max()):.2e})")


@dataclass
class LoadedModel:
    """An exported model: ``image_scorer`` (and ``video_scorer``) callables and model.json, preprocessing.json."""

    image_scorer: object
    video_scorer: SteppedVideo | None
    spec: dict
    preprocessing: dict
    folder: Path


def load_model(folder: str | Path, device: str = "cpu") -> LoadedModel:
    """Read a model folder written by :func:`export_run`, checking every file's sha256 and every graph node;
    nothing is unpickled and no code from the folder runs."""
    folder = Path(folder)
    spec_path = folder / "model.json"
    if not spec_path.is_file():
        raise FileNotFoundError(f"{folder}: not a model folder (no model.json; `fas-train export` writes one)")
    spec = json.loads(spec_path.read_text())
    if spec.get("format") != MODEL_FORMAT:
        raise ValueError(f"{spec_path}: model format {spec.get('format')!r}, this fas_train reads {MODEL_FORMAT}")
    contents = {}  # each file read once: the bytes checked are the bytes loaded
    for name, digest in spec["files"].items():
        path = folder / name
        if Path(name).name != name or not path.is_file():
            raise FileNotFoundError(f"{path}: missing from the model folder")
        contents[name] = path.read_bytes()
        if hashlib.sha256(contents[name]).hexdigest() != digest:
            raise ValueError(f"{path}: sha256 differs from model.json's (changed or truncated)")
    shapes = spec["input"]
    programs = {name: _load_program(folder / name, contents, shapes[name], device)
                for name in ("image_scorer", "video_features", "video_step") if name in shapes}
    video = (SteppedVideo(programs["video_features"], programs["video_step"], shapes["video_step"][1])
             if "video_step" in programs else None)
    preprocessing = json.loads(contents["preprocessing.json"])
    return LoadedModel(programs["image_scorer"], video, spec, preprocessing, folder)


def _load_program(stem: Path, contents: dict, shape: list, device: str):
    """One exported program from its checked graph and arrays (``contents``: bytes by file name)."""
    from torch._export.serde.serialize import SerializedArtifact, deserialize
    graph = contents[f"{stem.name}.json"]
    check_graph(json.loads(graph), stem.with_suffix(".json"))
    with np.load(io.BytesIO(contents[f"{stem.name}.npz"]), allow_pickle=False) as data:
        tensors = {key: torch.from_numpy(data[key].copy()) for key in data.files}
    state = {k.removeprefix("parameters/"): nn.Parameter(v, requires_grad=False) for k, v in tensors.items()
             if k.startswith("parameters/")}
    state.update({k.removeprefix("buffers/"): v for k, v in tensors.items() if k.startswith("buffers/")})
    constants = {k.removeprefix("constants/"): v for k, v in tensors.items() if k.startswith("constants/")}
    if isinstance(shape[0], list):  # several float inputs (the recurrence step)
        example = tuple(torch.zeros(s) for s in shape)
    else:
        example = (torch.zeros([2 if s is None else s for s in shape], dtype=torch.uint8),)
    program = deserialize(SerializedArtifact(graph, state, constants, (example, {})))
    if device != "cpu":
        from torch.export.passes import move_to_device_pass
        program = move_to_device_pass(program, device)
    return program.module(check_guards=False)


def check_graph(graph: dict, where: Path) -> None:
    """Refuse a serialized graph that holds guard code, a node that is not an ATen operator (nor the autocast
    wrapper or tuple indexing), an ATen operator on files, or a node name that is not an identifier."""
    if graph.get("guards_code"):
        raise ValueError(f"{where}: the graph carries guard code; an exported model is operators only")
    for node in _nodes(graph):
        target, node_name = node.get("target", ""), node.get("name")
        allowed = (ALLOWED_TARGET.match(target) and not REFUSED_ATEN.search(target)) or target in ALLOWED_OTHER
        if not allowed:
            raise ValueError(f"{where}: refused graph node {target!r}: a model's graph may hold only ATen operators")
        if node_name is not None and not IDENTIFIER.match(str(node_name)):
            raise ValueError(f"{where}: refused graph node name {node_name!r}")


def _nodes(value):
    """Every node of a serialized graph, those of nested graphs (higher-order operators' bodies) included."""
    if isinstance(value, dict):
        if "target" in value and "inputs" in value:
            yield value
        for item in value.values():
            yield from _nodes(item)
    elif isinstance(value, list):
        for item in value:
            yield from _nodes(item)
