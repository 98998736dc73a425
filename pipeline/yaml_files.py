"""Reading YAML files (build configs, protocols, sweeps) with errors that name the file and the line."""
from __future__ import annotations

from pathlib import Path

import yaml


def read_yaml(path: str | Path):
    """The parsed content of a YAML file (safe loader); malformed YAML raises ValueError naming
    ``path:line:column`` and what is wrong there."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark is not None else str(path)
        problem = getattr(err, "problem", None) or str(err)
        context = getattr(err, "context", None)
        raise ValueError(f"{where}: malformed YAML: {problem}" + (f" ({context})" if context else "")) from None
