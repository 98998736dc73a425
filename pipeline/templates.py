"""The build config templates shipped in the package (``pipeline/configs/build/``) and ``fas-pipeline
init-config``, which writes one with your dataset roots, its comments kept, checked before it is written."""
from __future__ import annotations

from pathlib import Path

import yaml

from .atomic import write_text
from .config import config_from_dict
from .yaml_files import parse_yaml

TEMPLATES = Path(__file__).parent / "configs" / "build"


def template_names() -> list[str]:
    """The shipped templates' names (``full``, ``paper-frames``)."""
    return sorted(p.stem for p in TEMPLATES.glob("*.yaml"))


def fill_template(template: str, roots: dict[str, str], top: dict | None = None) -> str:
    """The text of ``template`` with its ``datasets`` replaced by ``roots`` (dataset -> folder; each must be a
    folder) and the top-level keys in ``top`` (``name``, ``output_dir``, ``manifest_dir``; None: the
    template's) set; the result is validated as a build config. Comments and every other setting stay as the
    template has them."""
    top = {k: v for k, v in (top or {}).items() if v is not None}
    path = TEMPLATES / f"{template}.yaml"
    if not path.is_file():
        raise ValueError(f"{template!r}: no such template; shipped: {template_names()}")
    if not roots:
        raise ValueError("give at least one --root DATASET=PATH")
    missing = [f"{d}={r}" for d, r in roots.items() if not Path(r).is_dir()]
    if missing:
        raise FileNotFoundError(f"not a folder: {', '.join(missing)} (each --root names a dataset's copy)")
    lines, out, skipping = path.read_text().splitlines(), [], False
    for line in lines:
        key = line.split(":", 1)[0] if line and not line[0].isspace() and not line.startswith("#") else None
        if skipping and key is None and line.startswith(" "):
            continue  # a line of the template's datasets mapping
        skipping = False
        if key == "datasets":
            out += ["datasets:", *(f"  {d}: {yaml.safe_dump(str(Path(r).resolve())).splitlines()[0]}"
                                   for d, r in roots.items())]
            skipping = True
        elif key in top:
            out.append(f"{key}: {yaml.safe_dump(top[key]).splitlines()[0]}")
        else:
            out.append(line)
    text = "\n".join(out) + "\n"
    config_from_dict(parse_yaml(text), f"the {template} template with your settings")  # before it is written
    return text


def write_template(template: str, roots: dict[str, str], out: Path, top: dict | None = None,
                   force: bool = False) -> Path:
    """Write :func:`fill_template`'s text to ``out`` (atomically; an existing file only with ``force``)."""
    if out.exists() and not force:
        raise FileExistsError(f"{out}: exists; choose another --out or give --force")
    write_text(out, fill_template(template, roots, top))
    return out
