"""What an exported model's graph may hold, checked before torch's deserializer reads a byte of it.

torch's deserializer (``torch._export.serde``) is not a safe parser. It hands every shape expression
(``expr_str``) to ``sympy.sympify``, which evaluates Python; it resolves node targets and metadata entries by
``getattr`` over ``torch``, ``operator`` and ``math``; it reads pytree specs (``in_spec``, ``out_spec``) by type
name; and FX writes node names into the Python source it compiles. So :func:`check_graph` checks every string of
a graph against the grammar of its field (:data:`FIELDS`), every mapping key against the identifier grammar, and
refuses any text field it does not know, guard code and node metadata (an export writes none). Shape expressions
are parsed, not matched: only ``Symbol('s0', positive=True, integer=True)``, ``Integer(n)`` and sympy's
arithmetic on them pass. The graph that reaches the deserializer is the graph checked here.
"""
from __future__ import annotations

import json
import keyword
import re
from pathlib import Path

IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
DOTTED = re.compile(r"(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]+)(?:\.(?:[A-Za-z_][A-Za-z0-9_]*|[0-9]+))*")
ALLOWED_TARGET = re.compile(r"torch\.ops\.aten\.[A-Za-z0-9_]+\.[A-Za-z0-9_]+")
ALLOWED_OTHER = {"torch.ops.higher_order.wrap_with_autocast", "_operator.getitem"}
REFUSED_ATEN = re.compile(r"file|save|load", re.IGNORECASE)  # no ATen operator that reads or writes files
SYMBOL_NAME = re.compile(r"[a-z]+[0-9]+")  # torch's shape symbols: s0, s27, u3
SYMBOL_ASSUMPTIONS = {"positive", "integer", "nonnegative", "real", "finite"}
SYMPY_FUNCTIONS = {"Add", "Mul", "Pow", "Max", "Min", "Mod", "FloorDiv", "CeilToInt", "FloorToInt"}
PYTREE_TYPES = {None, "builtins.tuple", "builtins.list", "builtins.dict"}
TOKEN = re.compile(r"\s*(?:(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<int>-?[0-9]+)|'(?P<symbol>[^']*)'|(?P<punct>[(),=]))")


def _identifier(text: str) -> bool:
    return bool(IDENTIFIER.fullmatch(text)) and not keyword.iskeyword(text)


def _target(text: str) -> bool:
    return bool(ALLOWED_TARGET.fullmatch(text) and not REFUSED_ATEN.search(text)) or text in ALLOWED_OTHER


def _dotted(text: str) -> bool:
    return text == "" or bool(DOTTED.fullmatch(text))


def _pytree(text: str) -> bool:
    """A pytree spec as torch.export writes it: ``[1, spec]`` of tuples, lists, dicts keyed by identifiers, and
    leaves."""
    try:
        protocol, spec = json.loads(text)
    except (ValueError, TypeError):
        return False
    return protocol == 1 and _pytree_node(spec)


def _pytree_node(spec) -> bool:
    if not isinstance(spec, dict) or set(spec) != {"type", "context", "children_spec"}:
        return False
    if spec["type"] not in PYTREE_TYPES or not isinstance(spec["children_spec"], list):
        return False
    if spec["type"] is None:
        context_ok = spec["context"] is None
    else:
        try:
            context = json.loads(spec["context"]) if isinstance(spec["context"], str) else 0
        except ValueError:
            return False
        context_ok = context is None or (isinstance(context, list) and all(
            isinstance(key, str) and _identifier(key) for key in context))
    return context_ok and all(_pytree_node(child) for child in spec["children_spec"])


def _expression(text: str) -> bool:
    """Whether ``text`` is a shape expression of symbols, integers and sympy's arithmetic, nothing else."""
    tokens, position = [], 0
    while position < len(text):
        match = TOKEN.match(text, position)
        if not match or match.end() == position:
            return False
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        position = match.end()
        if text[position:].strip() == "":
            break
    try:
        end = _parse(tokens, 0)
    except (IndexError, ValueError):
        return False
    return end == len(tokens)


def _expect(tokens: list, i: int, kind: str, value: str | None = None) -> int:
    if tokens[i][0] != kind or (value is not None and tokens[i][1] != value):
        raise ValueError(tokens[i])
    return i + 1


def _parse(tokens: list, i: int) -> int:
    """The index after one expression starting at ``i`` (raises ValueError where the grammar is broken)."""
    kind, value = tokens[i]
    if kind == "int":
        return i + 1
    if kind != "name":
        raise ValueError(value)
    i = _expect(tokens, i + 1, "punct", "(")
    if value == "Symbol":
        if not SYMBOL_NAME.fullmatch(tokens[i][1] if tokens[i][0] == "symbol" else ""):
            raise ValueError(tokens[i])
        i += 1
        while tokens[i] == ("punct", ","):
            if tokens[i + 1][0] != "name" or tokens[i + 1][1] not in SYMBOL_ASSUMPTIONS:
                raise ValueError(tokens[i + 1])
            i = _expect(tokens, i + 2, "punct", "=")
            if tokens[i] not in (("name", "True"), ("name", "False")):
                raise ValueError(tokens[i])
            i += 1
    elif value == "Integer":
        i = _expect(tokens, i, "int")
    elif value in SYMPY_FUNCTIONS:
        i = _parse(tokens, i)
        while tokens[i] == ("punct", ","):
            i = _parse(tokens, i + 1)
    else:
        raise ValueError(value)
    return _expect(tokens, i, "punct", ")")


# Each text field of torch.export's graph schema that an exported model holds, and its grammar. A string under
# any other field is refused.
FIELDS = {
    "name": lambda s: s == "" or _identifier(s),  # tensors, nodes, arguments ("" for an unnamed one)
    "as_name": _identifier,
    "forward_arg_names": _identifier,
    "target": _target,
    "expr_str": _expression,
    "type": lambda s: s in ("cpu", "cuda"),  # a device's type
    "as_string": lambda s: bool(re.fullmatch(r"[A-Za-z0-9_]*", s)),  # an operator's mode: "floor", "cpu"
    "as_strings": lambda s: bool(re.fullmatch(r"[A-Za-z0-9_]*", s)),
    "fqn": _dotted,
    "buffer_name": _dotted,
    "parameter_name": _dotted,
    "tensor_constant_name": _dotted,
    "in_spec": _pytree,
    "out_spec": _pytree,
    "torch_version": lambda s: bool(re.fullmatch(r"[0-9][0-9A-Za-z.+]*", s)),
    "verifiers": lambda s: bool(re.fullmatch(r"[A-Z_]+", s)),
}


def check_graph(graph, where: Path) -> None:
    """Refuse (ValueError naming ``where``) a serialized graph with a string outside its field's grammar, a
    mapping key that is not an identifier, guard code or node metadata."""
    if not isinstance(graph, dict) or "graph_module" not in graph:
        raise ValueError(f"{where}: not a torch.export graph (no graph_module)")
    _check(graph, None, where, "")


def _check(value, field: str | None, where: Path, path: str) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if not _identifier(key):
                raise ValueError(f"{where}: refused key {key[:80]!r} at {path or '/'}: keys are identifiers")
            if key == "guards_code" and item:
                raise ValueError(f"{where}: the graph carries guard code; an exported model is operators only")
            if key == "metadata" and item:
                raise ValueError(f"{where}: refused node metadata at {path}/metadata: an exported model's graph "
                                 f"carries none (a model exported before format 2: export the run again)")
            _check(item, key, where, f"{path}/{key}")
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _check(item, field, where, f"{path}[{index}]")
    elif isinstance(value, str):
        allowed = FIELDS.get(field)
        if allowed is None:
            raise ValueError(f"{where}: refused text field {path}: not a field an exported model holds")
        if not allowed(value):
            what = "graph node" if field == "target" else f"{field} at {path}:"
            raise ValueError(f"{where}: refused {what} {value[:120]!r}")


def without_metadata(graph):
    """``graph`` with every node's metadata (source lines, module paths, stack traces) emptied: nothing a
    model needs to run, and text the loader would have to trust."""
    if isinstance(graph, dict):
        return {k: ({} if k == "metadata" and isinstance(v, dict) else without_metadata(v)) for k, v in graph.items()}
    if isinstance(graph, list):
        return [without_metadata(v) for v in graph]
    return graph
