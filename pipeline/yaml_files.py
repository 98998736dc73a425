"""Reading YAML files (build configs, protocols, sweeps) with errors that name the file and the line.

PyYAML keeps the last of two equal keys in a mapping without a word (``name: dup`` then ``name: dup2`` gives
``dup2``); every YAML this project reads goes through :class:`UniqueKeyLoader`, which refuses the second one.
"""
from __future__ import annotations

from pathlib import Path

import yaml


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, refusing a mapping that repeats a key (naming both lines)."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            self.flatten_mapping(node)  # merge keys (<<) first, as the safe loader does
            seen = {}
            for key_node, _ in node.value:
                key = self.construct_object(key_node, deep=deep)
                if isinstance(key, (str, int, float, bool, type(None))):
                    if key in seen:
                        raise yaml.constructor.ConstructorError(
                            None, None, f"duplicate key {key!r} (also on line {seen[key]}): one of them would be "
                            f"ignored", key_node.start_mark)
                    seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def parse_yaml(text: str):
    """The content of a YAML document (safe, duplicate keys refused); raises yaml.YAMLError."""
    loader = UniqueKeyLoader(text)
    try:
        return loader.get_single_data()
    finally:
        loader.dispose()


def read_yaml(path: str | Path):
    """The parsed content of a YAML file (safe loader, duplicate keys refused); malformed YAML raises
    ValueError naming ``path:line:column`` and what is wrong there."""
    path = Path(path)
    try:
        return parse_yaml(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err)
        context = getattr(err, "context", None)
        raise ValueError(f"{where}: malformed YAML: {problem}" + (f" ({context})" if context else "")) from None
