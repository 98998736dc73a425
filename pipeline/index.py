"""Index a dataset root into a source manifest: a video table (CSV) and a JSON summary beside it, and a file
record (``<table>.files.json``: each video's size, modification time and sha256) from which a later index of
the same copy (a build's own, given ``index_tables``) takes the hash of every file that is unchanged, instead
of reading its bytes again."""
from __future__ import annotations

import datetime as dt
import hashlib
import json
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd

from .atomic import write_csv, write_json
from .datasets import IndexWarning, get_indexer
from .datasets.base import SPLITS
from .hashing import hash_files
from .provenance import code_version, package_versions

COLUMNS = ["video_id", "dataset", "domain", "relpath", "split", "label", "attack", "attack_detail",
           "subject", "camera", "session", "light", "support", "size_bytes", "sha256"]
SHOWN = 10  # names listed in a warning; the summary lists all


@dataclass
class SourceIndex:
    """The video table of one dataset copy, its summary, and each file's (size, mtime_ns, sha256) by relpath."""

    table: pd.DataFrame
    summary: dict
    files: dict


def files_path(table_path: str | Path) -> Path:
    """The file record written beside a table: ``casia.csv`` -> ``casia.files.json``."""
    return Path(table_path).with_suffix(".files.json")


def read_known(table_path: str | Path, dataset: str, root: str | Path) -> dict:
    """The file record of an index table, checked to be of ``dataset`` at ``root``: relpath -> (size,
    mtime_ns, sha256). A table written before file records existed gives none."""
    path = files_path(table_path)
    if not Path(table_path).is_file():
        raise FileNotFoundError(f"{table_path}: index table not found")
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    if (record["dataset"], record["root"]) != (dataset, str(Path(root).resolve())):
        raise ValueError(f"{table_path}: an index of {record['dataset']} at {record['root']}, not of {dataset} at "
                         f"{Path(root).resolve()}")
    return {relpath: tuple(entry) for relpath, entry in record["files"].items()}


def summary_path(table_path: str | Path) -> Path:
    """The JSON summary written beside a table: ``casia.csv`` -> ``casia.json``."""
    return Path(table_path).with_suffix(".json")


def read_table(path: str | Path) -> pd.DataFrame:
    """Read a video table written by :func:`write_index`, every column as text except size_bytes."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: video table not found (run `python -m pipeline index` first)")
    table = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in COLUMNS if c not in table.columns]
    if missing:
        raise ValueError(f"{path}: not a video table, columns {missing} are missing")
    table["size_bytes"] = table["size_bytes"].astype("int64")
    return table


def index_dataset(dataset: str, root: str | Path, *, workers: int = 4, quiet: bool = False,
                  known: dict | None = None) -> SourceIndex:
    """Place and hash every video of a dataset copy; warn on unplaced files and incompleteness. ``known``
    (:func:`read_known`): files whose size and modification time are recorded there keep that hash."""
    indexer = get_indexer(dataset)
    root = Path(root).resolve()
    scan = indexer.scan(root)
    known = known or {}
    stats = [_stat(root / r.relpath) for r in scan.records]
    reused = {i: known[r.relpath][2] for i, (r, st) in enumerate(zip(scan.records, stats))
              if st is not None and known.get(r.relpath, ())[:2] == st}
    todo = [i for i in range(len(scan.records)) if i not in reused]
    hashed = dict(zip(todo, hash_files([root / scan.records[i].relpath for i in todo], workers=workers,
                                       quiet=quiet, desc=f"{dataset}: sha256")))
    rows, unreadable, files = [], [], {}
    for i, record in enumerate(scan.records):
        digest = reused.get(i) or hashed[i]
        if isinstance(digest, OSError) or stats[i] is None:
            error = digest if isinstance(digest, OSError) else FileNotFoundError("vanished while indexing")
            unreadable.append((record.relpath, f"unreadable: {error.strerror or error}"))
            continue
        rows.append({**asdict(record), "video_id": record.video_id, "domain": indexer.domain,
                     "size_bytes": stats[i][0], "sha256": digest})
        files[record.relpath] = (*stats[i], digest)
    table = pd.DataFrame(rows, columns=COLUMNS).sort_values("video_id", kind="stable").reset_index(drop=True)
    duplicated = table["video_id"][table["video_id"].duplicated()].tolist()
    if duplicated:
        raise ValueError(f"{root}: video ids are not unique (same name with different extensions?): {duplicated}")
    unplaced = scan.unplaced + unreadable
    summary = _summary(indexer, root, table, unplaced, scan)
    summary["same_content"] = same_content(table)
    summary["hashes_reused"] = len(reused)  # files unchanged since the index given as known: not read
    _warn(indexer, root, summary)
    return SourceIndex(table, summary, files)


def _stat(path: Path) -> tuple[int, int] | None:
    """(size, mtime_ns) of a file, or None when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def same_content(table: pd.DataFrame) -> list[dict]:
    """Groups of rows whose files have the same sha256 (one file under two names, or a copy of a video):
    each would be trained on as two videos, and a video in two splits would leak between them."""
    groups = table[table["sha256"].duplicated(keep=False)].groupby("sha256", sort=True)["relpath"]
    return [{"sha256": digest, "relpaths": sorted(paths)} for digest, paths in groups]


def write_index(index: SourceIndex, out: str | Path) -> tuple[Path, Path]:
    """Atomically write the table (CSV) and its summary (JSON); return both paths."""
    out = Path(out)
    text = write_csv(out, index.table)
    summary = dict(index.summary, table=out.name, table_sha256=_sha256_text(text))
    json_path = summary_path(out)
    write_json(json_path, summary)
    write_json(files_path(out), {"dataset": index.summary["dataset"], "root": index.summary["root"],
                                 "files": {k: list(v) for k, v in sorted(index.files.items())}})
    return out, json_path


def format_summary(summary: dict) -> str:
    """A short human-readable summary of an index, for the command line."""
    lines = [f"{summary['title']} ({summary['dataset']}, domain {summary['domain']}) at {summary['root']}",
             f"  {summary['videos']} videos, {summary['total_bytes'] / 2**20:.1f} MiB"]
    for split, by_label in sorted(summary["counts"].items(), key=lambda item: SPLITS.index(item[0])):
        parts = [f"{label} {sum(by_attack.values())}"
                 + (f" ({', '.join(f'{a} {n}' for a, n in by_attack.items())})" if label == "spoof" else "")
                 for label, by_attack in by_label.items()]
        lines.append(f"  {split:<6} " + "; ".join(parts))
    expected = summary["expected"]
    state = "complete" if expected["complete"] else (
        f"INCOMPLETE: {summary['videos']} of {'about ' if expected['approximate'] else ''}{expected['total']}")
    lines.append(f"  copy: {state}; {expected['missing_count']} named videos missing")
    lines.append(f"  unplaced files: {len(summary['unplaced'])}; skipped by rule: {summary['skipped_count']}")
    if summary.get("same_content"):
        lines.append(f"  files with the same content as another: "
                     f"{sum(len(g['relpaths']) for g in summary['same_content'])} (see same_content in the JSON)")
    lines.extend(f"  note: {note}" for note in summary["notes"])
    return "\n".join(lines)


def _summary(indexer, root, table, unplaced, scan) -> dict:
    counts = {}
    for (split, label, attack), n in table.groupby(["split", "label", "attack"]).size().items():
        counts.setdefault(split, {}).setdefault(label, {})[attack] = int(n)
    by_split = table["split"].value_counts().to_dict()
    total = indexer.total_expected()
    per_split = {s: {"expected": n, "found": int(by_split.get(s, 0))} for s, n in indexer.expected_per_split.items()}
    complete = len(table) >= total and not scan.missing
    return {
        "dataset": indexer.name, "title": indexer.title, "domain": indexer.domain, "root": str(root),
        "videos": len(table), "total_bytes": int(table["size_bytes"].sum()) if len(table) else 0,
        "counts": counts, "subjects": int(table["subject"].nunique()) if len(table) else 0,
        "expected": {"total": total, "approximate": indexer.expected_is_approximate, "per_split": per_split,
                     "complete": complete, "missing_count": len(scan.missing), "missing": scan.missing},
        "unplaced": [{"relpath": r, "reason": why} for r, why in unplaced],
        "skipped_count": len(scan.skipped),
        "skipped": [{"relpath": r, "reason": why} for r, why in scan.skipped],
        "notes": scan.notes,
        "label_polarity": "label column is the text 'live' (bona fide) or 'spoof'",
        "tool": code_version(), "packages": package_versions(("pandas", "numpy")),
        "created_utc": dt.datetime.now(dt.timezone.utc).replace(microsecond=0).isoformat(),
    }


def _warn(indexer, root, summary) -> None:
    if summary["same_content"]:
        groups = summary["same_content"]
        shown = "\n".join(f"    {g['sha256'][:12]}...: {', '.join(g['relpaths'][:3])}"
                           + (f" and {len(g['relpaths']) - 3} more" if len(g["relpaths"]) > 3 else "")
                           for g in groups[:SHOWN])
        more = len(groups) - SHOWN
        warnings.warn(f"{root}: {sum(len(g['relpaths']) for g in groups)} files share their content with another "
                      f"({len(groups)} group(s)); each is indexed, and would be trained on, as a video of its own:\n"
                      f"{shown}" + (f"\n    ... and {more} more (see the summary JSON)" if more > 0 else ""),
                      IndexWarning, stacklevel=3)
    if summary["unplaced"]:
        shown = "\n".join(f"    {u['relpath']}: {u['reason']}" for u in summary["unplaced"][:SHOWN])
        more = len(summary["unplaced"]) - SHOWN
        warnings.warn(f"{root}: {len(summary['unplaced'])} video file(s) could not be placed and are not "
                      f"indexed:\n{shown}" + (f"\n    ... and {more} more (see the summary JSON)" if more > 0 else ""),
                      IndexWarning, stacklevel=3)
    expected = summary["expected"]
    if not expected["complete"]:
        about = "about " if expected["approximate"] else ""
        splits = ", ".join(f"{s} {c['found']}/{c['expected']}" for s, c in expected["per_split"].items())
        text = (f"{root}: incomplete {indexer.title} copy: {summary['videos']} of {about}{expected['total']} "
                f"videos" + (f" ({splits})" if splits else ""))
        if expected["missing"]:
            names = "\n".join(f"    {m}" for m in expected["missing"][:SHOWN])
            more = expected["missing_count"] - SHOWN
            text += (f"; missing for the subjects present:\n{names}"
                     + (f"\n    ... and {more} more (see the summary JSON)" if more > 0 else ""))
        warnings.warn(text, IndexWarning, stacklevel=3)


def _sha256_text(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()
