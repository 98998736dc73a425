"""A model folder is data, never code: a hostile author who recomputes model.json's hashes still cannot make
``load_model`` (and so ``fas-train predict --model``) run anything, whichever string of a graph or of
preprocessing.json carries the payload; damaged folders are refused naming the file."""
from __future__ import annotations

import copy
import hashlib
import io
import json
import re
import shutil

import numpy as np
import pytest
import torch

from fas_train.cli import main
from fas_train.export import load_model
from fas_train.model_graph import check_graph

SYMBOL = "Symbol('s27', positive=True, integer=True)"


@pytest.fixture(scope="module")
def model(erm_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("model") / "erm"
    assert main(["export", "--run", str(erm_run), "--out", str(out)]) == 0
    return out


def payload(marker) -> str:
    return f"__import__('os').system('touch {marker}')"


def rehash(folder) -> None:
    """model.json's sha256 of every file made true again, as a hostile author would."""
    spec = json.loads((folder / "model.json").read_text())
    spec["files"] = {name: hashlib.sha256((folder / name).read_bytes()).hexdigest() for name in spec["files"]}
    (folder / "model.json").write_text(json.dumps(spec))


def tampered(model, tmp_path, change, name="image_scorer.json"):
    copy_ = tmp_path / "tampered"
    shutil.copytree(model, copy_)
    content = json.loads((copy_ / name).read_text())
    change(content)
    (copy_ / name).write_text(json.dumps(content))
    rehash(copy_)
    return copy_


def graph_tensor(graph, symbolic=True) -> dict:
    """A tensor description of the graph whose first size is (or is not) a shape expression."""
    values = graph["graph_module"]["graph"]["tensor_values"].values()
    return next(v for v in values if v["sizes"] and ("as_expr" in v["sizes"][0]) == symbolic)


def arguments(graph):
    for node in graph["graph_module"]["graph"]["nodes"]:
        yield from node["inputs"]


def test_the_shape_payload_runs_through_torchs_own_deserializer(model, tmp_path):
    """The control: torch's deserializer evaluates a shape expression, so the payload below is a real threat."""
    from torch._export.serde.serialize import SerializedArtifact, deserialize
    graph = json.loads((model / "image_scorer.json").read_text())
    marker = tmp_path / "ran"
    for size in graph_tensor(graph)["sizes"][:1]:
        size["as_expr"]["expr_str"] = f"{payload(marker)} or {SYMBOL}"
    with np.load(model / "image_scorer.npz") as data:
        state = {k.split("/", 1)[1]: torch.from_numpy(data[k]) for k in data.files}
    example = ((torch.zeros(2, 6, 64, 64, dtype=torch.uint8),), {})
    with pytest.raises(Exception):  # whatever fails after it, the payload has run
        deserialize(SerializedArtifact(json.dumps(graph).encode(), state, {}, example))
    assert marker.exists()


def _expression(marker):
    return lambda g: graph_tensor(g)["sizes"][0]["as_expr"].update(expr_str=f"{payload(marker)} or {SYMBOL}")


def _symbol_name(marker):
    return lambda g: graph_tensor(g)["sizes"][0]["as_expr"].update(
        expr_str=f"Symbol('s27' if {payload(marker)} else 's1', positive=True)")


def _assumption(marker):
    return lambda g: graph_tensor(g)["sizes"][0]["as_expr"].update(
        expr_str=f"Symbol('s27', positive={payload(marker)}, integer=True)")


def _sympy_attribute(marker):
    return lambda g: graph_tensor(g)["sizes"][0]["as_expr"].update(expr_str="Integer(1).__class__")


def _range_key(marker):
    def change(graph):
        ranges = graph["range_constraints"]
        ranges[payload(marker)] = ranges.pop(next(iter(ranges)))
    return change


def _range_bound(marker):
    return lambda g: next(iter(g["range_constraints"].values())).update(max_val=payload(marker))


def _tensor_name(marker):
    def change(graph):
        values = graph["graph_module"]["graph"]["tensor_values"]
        values[payload(marker)] = values.pop(next(iter(values)))
    return change


def _node_name(marker):
    return lambda g: g["graph_module"]["graph"]["nodes"][0].update(name=payload(marker))


def _target(marker):
    return lambda g: g["graph_module"]["graph"]["nodes"][0].update(target=f"os.system.{payload(marker)}")


def _operator_argument(marker):
    return lambda g: next(arguments(g))["arg"].update(as_operator="os.system")


def _string_argument(marker):
    return lambda g: next(a for a in arguments(g) if "as_string" in a["arg"])["arg"].update(as_string=payload(marker))


def _device(marker):
    return lambda g: graph_tensor(g, False)["device"].update(type=payload(marker))


def _pytree_type(marker):
    def change(graph):
        signature = graph["graph_module"]["module_call_graph"][0]["signature"]
        signature["in_spec"] = signature["in_spec"].replace('"builtins.tuple"', '"os.system"', 1)
    return change


def _pytree_context(marker):
    def change(graph):
        signature = graph["graph_module"]["module_call_graph"][0]["signature"]
        spec = json.loads(signature["in_spec"])
        spec[1]["children_spec"][1]["context"] = json.dumps([payload(marker)])
        signature["in_spec"] = json.dumps(spec)
    return change


def _module_path(marker):
    return lambda g: g["graph_module"]["module_call_graph"][1].update(fqn=payload(marker))


def _metadata(key):
    def make(marker):
        return lambda g: g["graph_module"]["graph"]["nodes"][0]["metadata"].update({key: f"torch.{payload(marker)}"})
    return make


def _custom_object(marker):
    return lambda g: g["graph_module"]["graph"].update(
        custom_obj_values={"obj": {"name": "obj", "class_fqn": payload(marker)}})


def _parameter_name(marker):
    def change(graph):
        spec = next(s for s in graph["graph_module"]["signature"]["input_specs"] if "parameter" in s)
        spec["parameter"]["parameter_name"] = payload(marker)
    return change


@pytest.mark.parametrize("change", [_expression, _symbol_name, _assumption, _sympy_attribute, _range_key,
                                    _range_bound, _tensor_name, _node_name, _target, _operator_argument,
                                    _string_argument, _device, _pytree_type, _pytree_context, _module_path,
                                    _metadata("nn_module_stack"), _metadata("source_fn_stack"),
                                    _metadata("stack_trace"), _metadata("torch_fn"), _custom_object, _parameter_name],
                         ids=lambda f: f.__name__.strip("_") if hasattr(f, "__name__") else None)
def test_a_payload_in_any_field_the_deserializer_reads_is_refused_naming_the_file(model, tmp_path, change):
    marker = tmp_path / "ran"
    folder = tampered(model, tmp_path, change(marker))
    with pytest.raises(ValueError, match=re.escape(str(folder / "image_scorer.json"))):
        load_model(folder)
    assert main(["predict", "--model", str(folder), "--out", str(tmp_path / "p"), str(tmp_path)]) == 2
    assert not marker.exists()


def string_slots(value, path=""):
    """(container, key, field path) of every string and every mapping key of a JSON value, one per field path
    (list positions and tensor names folded)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield value, ("key", key), f"{path}/{{key}}"
            field = f"{path}/{'*' if path.endswith(('_values', 'range_constraints')) else key}"
            if isinstance(item, str):
                yield value, key, field
            else:
                yield from string_slots(item, field)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            if isinstance(item, str):
                yield value, index, f"{path}[]"
            else:
                yield from string_slots(item, f"{path}[]")


def assert_every_string_refuses_a_payload(graph_path, marker) -> int:
    """Each string field (and mapping key) of a real graph replaced in turn by a payload: each is refused
    naming the file. Returns how many fields were tried."""
    graph = json.loads(graph_path.read_text())
    check_graph(graph, graph_path)  # as exported: accepted
    slots = {}
    for container, key, field in string_slots(graph):
        slots.setdefault(field, (container, key))
    bad = payload(marker)
    for container, key in slots.values():
        if isinstance(key, tuple):  # a mapping key, renamed
            old = key[1]
            container[bad] = container.pop(old)
        else:
            old, container[key] = container[key], bad
        try:
            with pytest.raises(ValueError, match=re.escape(str(graph_path))):
                check_graph(graph, graph_path)
        finally:
            if isinstance(key, tuple):
                container[old] = container.pop(bad)
            else:
                container[key] = old
    check_graph(graph, graph_path)  # every field put back: accepted again
    assert not marker.exists()
    return len(slots)


def test_every_string_of_an_exported_graph_replaced_by_a_payload_is_refused(model, tmp_path):
    tried = assert_every_string_refuses_a_payload(model / "image_scorer.json", tmp_path / "ran")
    assert tried > 40  # names, targets, shape expressions, devices, specs, versions, keys


def test_shape_expressions_are_parsed_not_matched():
    from fas_train.model_graph import _expression
    for good in (SYMBOL, "Integer(3)", f"Mul(Integer(2), {SYMBOL})", f"Max(Integer(1), {SYMBOL})", "7"):
        assert _expression(good), good
    for bad in ("Symbol('s27')()", "Symbol('s2_7')", "Integer(1).__class__", "Symbol(s27)", f"Add({SYMBOL}",
                f"{SYMBOL})", "Function('f')(Integer(1))", "Symbol('s27', evaluate=True)", "lambda: 1", "",
                "Integer('1')", f"Mul({SYMBOL}, [1])"):
        assert not _expression(bad), bad


def test_preprocessing_names_no_file_and_is_checked_as_build_settings(model, tmp_path):
    def weights(pre):
        pre["depth"]["weights_dir"] = str(tmp_path / "elsewhere")

    folder = tampered(model, tmp_path, weights, "preprocessing.json")
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'preprocessing.json'}: depth.weights_dir")):
        load_model(folder)
    shutil.rmtree(folder)
    folder = tampered(model, tmp_path, lambda pre: pre["face"].update(size="64"), "preprocessing.json")
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'preprocessing.json'}: face")):
        load_model(folder)
    shutil.rmtree(folder)
    folder = tampered(model, tmp_path, lambda pre: pre.update(depth_backend="os.system"), "preprocessing.json")
    with pytest.raises(ValueError, match="unknown depth_backend"):
        load_model(folder)


def test_damaged_model_folders_are_refused_naming_the_file(model, tmp_path, capsys):
    def copied(name):
        folder = tmp_path / name
        shutil.copytree(model, folder)
        return folder

    folder = copied("shape")  # an array of the wrong shape, hashes recomputed
    with np.load(folder / "image_scorer.npz") as data:
        arrays = {k: data[k] for k in data.files}
    key = next(k for k in arrays if k.startswith("parameters/") and arrays[k].ndim == 1)
    arrays[key] = arrays[key][:-1]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    (folder / "image_scorer.npz").write_bytes(buffer.getvalue())
    rehash(folder)
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'image_scorer.npz'}: {key} has shape")):
        load_model(folder)
    folder = copied("missing")
    (folder / "preprocessing.json").unlink()
    with pytest.raises(FileNotFoundError, match=re.escape(f"{folder / 'preprocessing.json'}: listed in model.json")):
        load_model(folder)
    folder = copied("not_json")
    (folder / "model.json").write_text("{'format': 2,")
    capsys.readouterr()
    assert main(["predict", "--model", str(folder), "--out", str(tmp_path / "p"), str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"{folder / 'model.json'}: not JSON" in err and "Traceback" not in err
    folder = copied("old")
    spec = json.loads((folder / "model.json").read_text())
    (folder / "model.json").write_text(json.dumps({**spec, "format": 1}))
    with pytest.raises(ValueError, match="format 1 graphs carry metadata"):
        load_model(folder)


@pytest.fixture(scope="module")
def onnx_model(erm_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "erm"
    assert main(["export", "--run", str(erm_run), "--out", str(out), "--format", "onnx"]) == 0
    return out


def test_an_onnx_folder_scores_as_the_run_and_unpickles_nothing(onnx_model, erm_run, train_build, tmp_path,
                                                                monkeypatch):
    import pickle

    import pandas as pd

    from test_export_predict import predicted_frames, target_videos
    spec = json.loads((onnx_model / "model.json").read_text())
    assert spec["runtime"] == "onnxruntime" and sorted(spec["files"]) == ["image_scorer.onnx", "preprocessing.json"]
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("the model folder was unpickled"))
    monkeypatch.setattr(pickle, "loads", lambda *a, **k: pytest.fail("the model folder was unpickled"))
    assert load_model(onnx_model).image_scorer(torch.zeros(2, 6, 64, 64, dtype=torch.uint8)).shape == (2,)
    monkeypatch.undo()  # (MTCNN's own weights, shipped with facenet-pytorch, are read with torch.load)
    videos = target_videos(train_build)
    assert main(["predict", "--model", str(onnx_model), "--out", str(tmp_path / "p"), "--quiet", *videos]) == 0
    expected = pd.read_csv(erm_run / "scores.csv", dtype={"video_id": str})
    got = expected.merge(predicted_frames(tmp_path / "p", videos), on=["video_id", "frame_index"])
    assert len(got) == len(expected) and np.abs(got["score_x"] - got["score_y"]).max() < 1e-4


def test_an_onnx_file_that_reaches_outside_or_runs_foreign_operators_is_refused(onnx_model, tmp_path):
    import onnx
    from onnx import helper

    def hostile(name, change):
        folder = tmp_path / name
        shutil.copytree(onnx_model, folder)
        model = onnx.load_model(str(folder / "image_scorer.onnx"))
        change(model)
        onnx.save_model(model, str(folder / "image_scorer.onnx"))
        rehash(folder)
        return folder

    secret = tmp_path / "secret.bin"
    secret.write_bytes(b"\0" * 64)

    def external(model):  # a weight read from a file the folder does not hold
        tensor = model.graph.initializer[0]
        tensor.ClearField("raw_data")
        tensor.data_location = onnx.TensorProto.EXTERNAL
        tensor.external_data.add(key="location", value=str(secret))

    def foreign(model):  # an operator from a domain onnxruntime would look up in a registered library
        model.graph.node.insert(0, helper.make_node("Payload", [], ["unused"], domain="com.example"))

    for name, change, message in (("external", external, "is kept in an external file"),
                                  ("foreign", foreign, "refused operator com.example.Payload")):
        folder = hostile(name, change)
        with pytest.raises(ValueError, match=re.escape(f"{folder / 'image_scorer.onnx'}: ") + ".*" + message):
            load_model(folder)
    folder = tmp_path / "garbage"
    shutil.copytree(onnx_model, folder)
    (folder / "image_scorer.onnx").write_bytes(b"not a protobuf at all \xff\xfe")
    rehash(folder)
    with pytest.raises(ValueError, match=re.escape(f"{folder / 'image_scorer.onnx'}: not an ONNX model")):
        load_model(folder)
