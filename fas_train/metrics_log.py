"""A run's metrics rows: ``metrics.jsonl`` and ``metrics.csv`` (one row per step, evaluation and clustering), and
the trim a resume makes first, dropping the rows logged after its checkpoint (which it logs again), so that a
resumed run's rows are an uninterrupted run's. Where the optional ``tensorboard`` package is installed
(``pip install fas-dg[tensorboard]``), the same numbers also go to TensorBoard event files in ``tensorboard/``
beside them, a resumed run's replacing the interrupted attempt's from its checkpoint on."""
from __future__ import annotations

import contextlib
import csv
import json
import math
from pathlib import Path

from pipeline.atomic import atomic_path


_EVENTS: dict = {}  # run folder -> its TensorBoard SummaryWriter, while the run trains


@contextlib.contextmanager
def tensorboard_events(out: Path, purge_from: int, enabled: bool = True):
    """Meanwhile :func:`log` also writes TensorBoard event files in ``out/tensorboard``, when ``enabled`` and
    the tensorboard package is installed (else nothing changes); events an earlier attempt wrote at steps from
    ``purge_from`` on are dropped (a resumed run logs them again)."""
    if enabled:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            enabled = False
    if enabled:
        _EVENTS[out] = SummaryWriter(str(out / "tensorboard"), purge_step=purge_from)
    try:
        yield
    finally:
        writer = _EVENTS.pop(out, None)
        if writer is not None:
            writer.close()


def log(out: Path, entry: dict) -> None:
    """Append one metrics row to metrics.jsonl and metrics.csv (and its numbers to TensorBoard, when open)."""
    with open(out / "metrics.jsonl", "a") as handle:
        handle.write(json.dumps(entry, sort_keys=True) + "\n")
    path = out / "metrics.csv"
    new = not path.exists()
    with open(path, "a", newline="") as handle:
        writer = csv.writer(handle)
        if new:
            writer.writerow(["step", "kind", "name", "value"])
        numbers = {name: value for name, value in entry.items() if name not in ("step", "kind")
                   and isinstance(value, (int, float)) and math.isfinite(value)}
        for name, value in numbers.items():
            writer.writerow([entry["step"], entry["kind"], name, value])
    events = _EVENTS.get(out)
    if events is not None:
        for name, value in numbers.items():
            events.add_scalar(f"{entry['kind']}/{name}", value, entry["step"])


def trim_metrics(out: Path, step: int, drop_domains_row: bool) -> None:
    """Before a resume from the checkpoint of ``step``: drop the metrics rows that the resumed run logs again
    (those after ``step``, the clustering at ``step`` when it is redone, and a line cut short by a kill)."""
    def keep(row_step, kind: str) -> bool:
        return int(row_step) < step or (int(row_step) == step and not (kind == "domains" and drop_domains_row))

    for path, header in ((out / "metrics.jsonl", 0), (out / "metrics.csv", 1)):
        if not path.exists():
            continue
        with open(path, newline="") as handle:  # as written: metrics.csv lines end in \r\n
            lines = [line for line in handle if line.endswith("\n")]
        kept = lines[:header]
        for line in lines[header:]:
            row_step, kind = _step_and_kind(path.suffix, line)
            if keep(row_step, kind):
                kept.append(line)
        with atomic_path(path, suffix=f".tmp{path.suffix}") as tmp, open(tmp, "w", newline="") as handle:
            handle.writelines(kept)


def _step_and_kind(suffix: str, line: str) -> tuple:
    """The step and kind of one line of metrics.jsonl or metrics.csv."""
    if suffix == ".jsonl":
        row = json.loads(line)
        return row["step"], row["kind"]
    return tuple(next(csv.reader([line]))[:2])
