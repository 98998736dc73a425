"""ONNX model folders (``fas-train export --format onnx``): the scoring graphs as ONNX files, for deployment
runtimes (onnxruntime, TensorRT, OpenVINO), read back by ``fas-train predict`` through onnxruntime.

A graph is written by torch's ONNX exporter (``torch.onnx.export(..., dynamo=True)``, opset 18 or later, whose
``Resize`` has the antialiased bilinear filter that training's resize uses) with every weight inside the file.
Before onnxruntime sees a file, :func:`check_onnx` parses it (protobuf: data, not code) and refuses tensors kept
in external files (a path in the model could reach any file on the machine) and operators outside the ONNX
standard and the model's own functions. Nothing is unpickled. Needs the ``onnx`` extra (``pip install
'fas-dg[onnx]'``: onnx, onnxscript and onnxruntime).
"""
from __future__ import annotations

import contextlib
import io
from pathlib import Path

import torch

STANDARD_DOMAINS = {"", "ai.onnx"}


def require(what: str):
    """Import the ONNX packages, or say how to install them."""
    try:
        import onnx
        import onnxruntime
    except ImportError as err:
        raise FileNotFoundError(f"{what} needs the onnx extra ({err.name} is missing): pip install "
                                f"'fas-dg[onnx]'") from None
    return onnx, onnxruntime


def write_onnx(folder: Path, name: str, module, example: tuple, dynamic) -> dict:
    """``module`` exported to ``folder/<name>.onnx`` (weights inside); its sha256 by file name."""
    from pipeline.hashing import sha256_file
    require("fas-train export --format onnx")
    path = folder / f"{name}.onnx"
    with contextlib.redirect_stdout(io.StringIO()), torch.no_grad():  # the exporter reports its steps on stdout
        program = torch.onnx.export(module, example, dynamo=True, dynamic_shapes=dynamic, verbose=False)
        program.save(str(path), external_data=False)
    check_onnx(path.read_bytes(), path)
    return {path.name: sha256_file(path)}


def check_onnx(content: bytes, where: Path):
    """The parsed model, refused (ValueError naming ``where``) if it keeps tensors in external files or uses
    operators from a domain that is neither the ONNX standard nor one of its own functions."""
    onnx, _ = require(f"reading {where}")
    try:
        model = onnx.load_model_from_string(content)
    except Exception as err:  # protobuf's DecodeError and kin
        raise ValueError(f"{where}: not an ONNX model ({err})") from None
    own = {function.domain for function in model.functions}
    for tensor in _tensors(model):
        if tensor.data_location == onnx.TensorProto.EXTERNAL or tensor.external_data:
            raise ValueError(f"{where}: tensor {tensor.name!r} is kept in an external file; a model folder's "
                             f"ONNX files hold their weights")
    for node in _nodes(model):
        if node.domain not in STANDARD_DOMAINS | own:
            raise ValueError(f"{where}: refused operator {node.domain}.{node.op_type}: only ONNX's own operators "
                             f"and the model's own functions")
    return model


def _graphs(model):
    """The main graph, the model's functions and every subgraph of theirs (If, Loop, Scan bodies)."""
    for graph in [model.graph, *model.functions]:
        yield graph
        yield from _subgraphs(graph)


def _subgraphs(graph):
    for node in graph.node:
        for attribute in node.attribute:
            for sub in ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs):
                yield sub
                yield from _subgraphs(sub)


def _nodes(model):
    for graph in _graphs(model):
        yield from graph.node


def _tensors(model):
    for graph in _graphs(model):
        if hasattr(graph, "initializer"):
            yield from graph.initializer
            for sparse in graph.sparse_initializer:
                yield sparse.values
                yield sparse.indices
        for node in graph.node:
            for attribute in node.attribute:
                if attribute.HasField("t"):
                    yield attribute.t
                yield from attribute.tensors


class OnnxProgram:
    """An ONNX graph run by onnxruntime, called as the torch programs are: tensors in, a tensor (or a tuple of
    them) out, on the CPU."""

    def __init__(self, content: bytes, where: Path, device: str = "cpu"):
        _, onnxruntime = require(f"reading {where}")
        check_onnx(content, where)
        options = onnxruntime.SessionOptions()
        options.log_severity_level = 3  # errors only
        cuda = device.startswith("cuda") and "CUDAExecutionProvider" in onnxruntime.get_available_providers()
        providers = ["CUDAExecutionProvider", "CPUExecutionProvider"] if cuda else ["CPUExecutionProvider"]
        try:
            self.session = onnxruntime.InferenceSession(content, options, providers=providers)
        except Exception as err:  # onnxruntime's own error types
            raise ValueError(f"{where}: onnxruntime cannot load it ({str(err).splitlines()[0]})") from None
        self.inputs = [entry.name for entry in self.session.get_inputs()]

    def __call__(self, *tensors):
        feeds = {name: tensor.detach().cpu().numpy() for name, tensor in zip(self.inputs, tensors)}
        outputs = [torch.from_numpy(output) for output in self.session.run(None, feeds)]
        return outputs[0] if len(outputs) == 1 else tuple(outputs)
