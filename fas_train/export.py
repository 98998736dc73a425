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

``--format onnx`` writes ``<graph>.onnx`` files instead, run by onnxruntime (:mod:`fas_train.onnx_models`), for
deployment runtimes. Why ``torch.export`` by default and not TorchScript: its graph is the ATen program PyTorch
itself runs, so the exported scores equal the run's to the last bits on the same machine, with no runtime to
add; TorchScript is deprecated. Its own
``.pt2`` loader is not used (it can fall back to unrestricted loading, and its graphs may hold guard code), and
its deserializer is not a safe parser (it evaluates shape expressions with sympy, resolves names by ``getattr``):
graphs are written without node metadata, and :func:`load_model` refuses any file whose sha256 is not
model.json's, any graph with a string outside its field's grammar (:mod:`fas_train.model_graph`: ATen operators
only, shape expressions parsed, guard code and metadata refused), any array whose shape is not its graph's, and a
preprocessing.json that is not build settings or names a file, before torch's deserializer sees the graph.
"""
from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pipeline.atomic import write_json
from pipeline.hashing import sha256_file
from pipeline.provenance import code_version

from .data import resize_input
from .model_graph import check_graph, without_metadata

MODEL_FORMAT = 2  # 2: graphs without node metadata, every string checked (fas_train.model_graph)


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


RUNTIMES = {"torch": "torch.export", "onnx": "onnxruntime"}  # --format -> the runtime model.json names
TOLERANCE = {"torch.export": 1e-6, "onnxruntime": 1e-4}  # the round-trip check's largest score difference


def export_run(run: Path, out: Path, build: str | None = None, format: str = "torch") -> dict:
    """Write the model folder ``out`` of a finished run (its best checkpoint, thresholds from report.json, the
    preprocessing of its build) as torch.export graphs (``format="torch"``) or ONNX files (``"onnx"``);
    return model.json's content, with ``round_trip``: the largest score difference of the folder read back
    against the run's networks. ``out`` must not exist yet: the folder is written beside it and renamed into
    place, so a model folder is whole or absent."""
    from torch.export import Dim

    from .onnx_models import require, write_onnx
    from .scorers import run_scorer
    out = Path(out)
    if format not in RUNTIMES:
        raise ValueError(f"--format {format!r}: use one of {sorted(RUNTIMES)}")
    if out.exists():
        raise FileExistsError(f"{out}: already exists; export writes a new folder (remove it, or give another --out)")
    if format == "onnx":
        require("fas-train export --format onnx")  # before any work
    scorer = run_scorer(Path(run), build=build, device="cpu")
    staging = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    try:
        channels, size = 3 * len(scorer.channels), scorer.size
        faces = torch.zeros(2, channels, size, size, dtype=torch.uint8)
        graphs = {"image_scorer": (ImageScorer(scorer.method, scorer.input_size).eval(), (faces,),
                                   ({0: Dim("faces", min=1)},), [None, channels, size, size])}
        if scorer.video is not None:
            features = VideoFeatures(scorer.method, scorer.input_size).eval()
            with torch.no_grad():
                width, state = features(faces).shape[1], scorer.method.video_state_shape()
            graphs["video_features"] = (features, (faces,), ({0: Dim("frames", min=1)},), [None, channels, size, size])
            graphs["video_step"] = (VideoStep(scorer.method).eval(),
                                    (torch.zeros(1, 1, width), torch.zeros(state), torch.zeros(state)), None,
                                    [[1, 1, width], list(state), list(state)])
        write = write_onnx if format == "onnx" else _write_program
        files = {}
        for name, (module, example, dynamic, _) in graphs.items():
            files.update(write(staging, name, module, example, dynamic))
        spec = {"format": MODEL_FORMAT, "runtime": RUNTIMES[format], **scorer.description, "input": {
                    "channels": list(scorer.channels), "stored_size": size, "input_size": scorer.input_size,
                    **{name: shape for name, (_, _, _, shape) in graphs.items()}},
                "exported_by": {"code": code_version(), "torch": torch.__version__}}
        write_json(staging / "preprocessing.json", scorer.preprocessing)
        files["preprocessing.json"] = sha256_file(staging / "preprocessing.json")
        spec["files"] = files
        write_json(staging / "model.json", spec)
        differences = _check_round_trip(staging, graphs["image_scorer"][3], scorer.method, scorer.input_size,
                                        TOLERANCE[RUNTIMES[format]])
        os.replace(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return {**spec, "round_trip": differences}


def _write_program(folder: Path, name: str, module, example: tuple, dynamic) -> dict:
    """``module`` exported by torch.export: the graph as JSON (without node metadata) and its tensors as plain
    arrays; their sha256 by file name."""
    from torch._export.serde.serialize import serialize
    from torch.export import export
    with torch.no_grad():
        program = export(module, example, dynamic_shapes=dynamic, strict=False)
    graph = folder / f"{name}.json"
    content = without_metadata(json.loads(serialize(program).exported_program))
    check_graph(content, graph)  # what the loader will accept, refused here rather than by a user
    graph.write_text(json.dumps(content, sort_keys=True))
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


def _check_round_trip(folder: Path, shape: list, method, input_size: int, tolerance: float) -> dict:
    """The model read back from ``folder`` scores random faces (and a random video) as the run's networks do,
    within ``tolerance``; the largest difference of each."""
    model = load_model(folder)
    generator = torch.Generator().manual_seed(0)
    shape = [3, *shape[1:]]
    checks = [("image_scorer", ImageScorer(method, input_size), model.image_scorer, shape)]
    if model.video_scorer is not None:
        checks.append(("video_scorer", VideoScorer(method, input_size), model.video_scorer, [1, *shape]))
    differences = {}
    for name, module, loaded, shape in checks:
        sample = torch.randint(0, 256, shape, dtype=torch.uint8, generator=generator)
        with torch.no_grad():
            expected, got = module.eval()(sample), loaded(sample)
        differences[name] = float((expected - got).abs().max())
        if differences[name] > tolerance:
            raise RuntimeError(f"{name}: the exported graph scores differently from the run's networks "
                               f"(max difference {differences[name]:.2e}, more than {tolerance:.0e})")
    return differences


@dataclass
class LoadedModel:
    """An exported model: ``image_scorer`` (and ``video_scorer``) callables and model.json, preprocessing.json."""

    image_scorer: object
    video_scorer: SteppedVideo | None
    spec: dict
    preprocessing: dict
    folder: Path


def load_model(folder: str | Path, device: str = "cpu") -> LoadedModel:
    """Read a model folder written by :func:`export_run`, checking every file's sha256, every string of every
    graph (:func:`fas_train.model_graph.check_graph`), every array's shape against its graph and
    preprocessing.json against the build settings it describes; nothing is unpickled and no code from the
    folder runs. Errors (ValueError, FileNotFoundError) name the file."""
    folder = Path(folder)
    spec_path = folder / "model.json"
    if not spec_path.is_file():
        raise FileNotFoundError(f"{folder}: not a model folder (no model.json; `fas-train export` writes one)")
    spec = _read_json(spec_path.read_bytes(), spec_path)
    if not isinstance(spec, dict) or spec.get("format") != MODEL_FORMAT:
        found = spec.get("format") if isinstance(spec, dict) else None
        raise ValueError(f"{spec_path}: model format {found!r}, this fas_train reads {MODEL_FORMAT}"
                         + (" (format 1 graphs carry metadata that is no longer read: export the run again)"
                            if found == 1 else ""))
    files, shapes = spec.get("files"), spec.get("input")
    if not isinstance(files, dict) or not isinstance(shapes, dict) or "preprocessing.json" not in files:
        raise ValueError(f"{spec_path}: 'files' and 'input' are missing or not mappings")
    contents = {}  # each file read once: the bytes checked are the bytes loaded
    for name, digest in files.items():
        path = folder / name
        if Path(name).name != name or not path.is_file():
            raise FileNotFoundError(f"{path}: listed in model.json but missing from the model folder")
        contents[name] = path.read_bytes()
        if hashlib.sha256(contents[name]).hexdigest() != digest:
            raise ValueError(f"{path}: sha256 differs from model.json's (changed or truncated)")
    runtime = spec.get("runtime", "torch.export")
    if runtime not in TOLERANCE:
        raise ValueError(f"{spec_path}: runtime {runtime!r}, this fas_train reads {sorted(TOLERANCE)}")
    programs = {}
    for name in ("image_scorer", "video_features", "video_step"):
        if name in shapes:
            suffixes = (".onnx",) if runtime == "onnxruntime" else (".json", ".npz")
            for suffix in suffixes:
                if f"{name}{suffix}" not in contents:
                    raise ValueError(f"{spec_path}: {name}{suffix} is not among the files it lists")
            if runtime == "onnxruntime":
                from .onnx_models import OnnxProgram
                programs[name] = OnnxProgram(contents[f"{name}.onnx"], folder / f"{name}.onnx", device)
            else:
                programs[name] = _load_program(folder / name, contents, shapes[name], device)
    if "image_scorer" not in programs:
        raise ValueError(f"{spec_path}: no image_scorer among its inputs")
    video = (SteppedVideo(programs["video_features"], programs["video_step"], shapes["video_step"][1])
             if "video_step" in programs else None)
    preprocessing = check_preprocessing(_read_json(contents["preprocessing.json"], folder / "preprocessing.json"),
                                        folder / "preprocessing.json")
    return LoadedModel(programs["image_scorer"], video, spec, preprocessing, folder)


def _read_json(content: bytes, where: Path):
    """JSON whose objects repeat no key (``json`` would keep the last one silently)."""
    def unique(pairs):
        content = dict(pairs)
        if len(content) != len(pairs):
            repeated = sorted(key for key, n in Counter(key for key, _ in pairs).items() if n > 1)
            raise ValueError(f"duplicate key(s) {repeated[:5]}")
        return content

    try:
        return json.loads(content, object_pairs_hook=unique)
    except (ValueError, UnicodeDecodeError) as err:
        raise ValueError(f"{where}: not JSON, or not as written ({err})") from None


def check_preprocessing(preprocessing, where: Path) -> dict:
    """preprocessing.json as the build settings it describes (validated as a build config's sections); it may
    name no file: face-alignment's weights come from the machine's cache, never from a path in the folder."""
    from pydantic import ValidationError

    from pipeline.config import DepthConfig, FaceConfig, FrameConfig
    keys = {"build", "config_hash", "frames", "face", "depth", "depth_backend", "depth_model"}
    if not isinstance(preprocessing, dict) or not {"frames", "face", "depth"} <= set(preprocessing) <= keys:
        raise ValueError(f"{where}: expected the sections frames, face and depth (and only {sorted(keys)})")
    if isinstance(preprocessing["depth"], dict) and preprocessing["depth"].get("weights_dir") is not None:
        raise ValueError(f"{where}: depth.weights_dir names a path; a model folder reads no file it does not list")
    try:
        for section, kind in (("frames", FrameConfig), ("face", FaceConfig), ("depth", DepthConfig)):
            kind(**preprocessing[section])
    except (ValidationError, TypeError) as err:
        raise ValueError(f"{where}: {section}: {err}") from None
    if preprocessing.get("depth_backend") not in (None, "face-alignment", "mediapipe", "generic"):
        raise ValueError(f"{where}: unknown depth_backend {preprocessing['depth_backend']!r}")
    return preprocessing


def _load_program(stem: Path, contents: dict, shape: list, device: str):
    """One exported program from its checked graph and arrays (``contents``: bytes by file name)."""
    from torch._export.serde.serialize import SerializedArtifact, deserialize
    graph_path, weights_path = stem.with_suffix(".json"), stem.with_suffix(".npz")
    graph = contents[graph_path.name]
    content = _read_json(graph, graph_path)
    check_graph(content, graph_path)
    try:
        with np.load(io.BytesIO(contents[weights_path.name]), allow_pickle=False) as data:
            tensors = {key: torch.from_numpy(data[key].copy()) for key in data.files}
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{weights_path}: not a plain .npz of arrays ({err})") from None
    _check_arrays(content, tensors, weights_path)
    state = {k.removeprefix("parameters/"): nn.Parameter(v, requires_grad=False) for k, v in tensors.items()
             if k.startswith("parameters/")}
    state.update({k.removeprefix("buffers/"): v for k, v in tensors.items() if k.startswith("buffers/")})
    constants = {k.removeprefix("constants/"): v for k, v in tensors.items() if k.startswith("constants/")}
    if not isinstance(shape, list) or not shape:
        raise ValueError(f"{stem.parent / 'model.json'}: input.{stem.name} is not a shape")
    if isinstance(shape[0], list):  # several float inputs (the recurrence step)
        example = tuple(torch.zeros(s) for s in shape)
    else:
        example = (torch.zeros([2 if s is None else s for s in shape], dtype=torch.uint8),)
    program = deserialize(SerializedArtifact(graph, state, constants, (example, {})))
    if device != "cpu":
        from torch.export.passes import move_to_device_pass
        program = move_to_device_pass(program, device)
    return program.module(check_guards=False)


def _check_arrays(graph: dict, tensors: dict, where: Path) -> None:
    """Every parameter, buffer and constant the graph reads is in the arrays, with the graph's shape; no other."""
    module = graph["graph_module"]
    values = module["graph"].get("tensor_values", {})
    expected = {}
    for spec in module["signature"].get("input_specs", []):
        for kind, key, prefix in (("parameter", "parameter_name", "parameters/"), ("buffer", "buffer_name", "buffers/"),
                                  ("tensor_constant", "tensor_constant_name", "constants/")):
            if kind in spec:
                meta = values.get(spec[kind]["arg"]["name"], {})
                prefix = "constants/" if spec[kind].get("persistent") is False else prefix  # held as a constant
                expected[prefix + spec[kind][key]] = [s.get("as_int") for s in meta.get("sizes", [])]
    if set(expected) != set(tensors):
        missing, extra = sorted(set(expected) - set(tensors)), sorted(set(tensors) - set(expected))
        raise ValueError(f"{where}: arrays do not match the graph (missing {missing[:3]}, unexpected {extra[:3]})")
    for key, sizes in expected.items():
        if list(tensors[key].shape) != sizes:
            raise ValueError(f"{where}: {key} has shape {list(tensors[key].shape)}, the graph expects {sizes}")
