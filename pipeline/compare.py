"""Compare two builds of the same sources: which samples only one has, whether any label, split, attack or
domain differs (never allowed), and per common sample how far apart the boxes, the channels and the depth
maps are. Byte identity holds on one machine; a rebuild elsewhere (another CPU, a GPU, other package
versions) differs in bytes, and this tells "the same cache, rebuilt" from "a different cache"."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from .audit import find_manifest
from .shards import open_shard

KEY = ["video_id", "frame_index"]
META = ["label", "split", "attack", "domain"]
MAPS = ("rgb", "hsv", "lbp", "depth", "depth_estimate")
# LBP is reported, not judged: its codes are categorical, so a sub-pixel shift of the crop changes most of them;
# it is a function of rgb, which is judged
JUDGED = ("rgb", "hsv", "depth", "depth_estimate")


@dataclass(frozen=True)
class Tolerances:
    """What "the same cache, rebuilt" may differ by."""

    max_missing: float = 0.0  # fraction of samples only one build has
    min_iou: float = 0.9  # mean box IoU of the common samples
    max_pixel_diff: float = 8.0  # mean absolute difference (0-255) of each judged channel set and map, averaged


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of boxes (N x 4, x1 y1 x2 y2) row by row."""
    x1, y1 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x2, y2 = np.minimum(a[:, 2], b[:, 2]), np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area = lambda r: (r[:, 2] - r[:, 0]) * (r[:, 3] - r[:, 1])  # noqa: E731
    return inter / np.maximum(area(a) + area(b) - inter, 1e-9)


def _load(build) -> tuple[dict, pd.DataFrame]:
    path = find_manifest(build)
    manifest = json.loads(path.read_text())
    samples = pd.read_csv(path.parent / "samples.csv", dtype={"video_id": str, "subject": str}, keep_default_na=False)
    return manifest, samples


def _read(shard_dir: Path, handles: dict, shard: str, row: int, names: tuple) -> dict:
    if shard not in handles:
        handles[shard] = open_shard(shard_dir / shard)
    f = handles[shard]
    return {name: f[name][row] for name in names if name in f}


def _same_size(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two C x H x W maps at the smaller one's size (area interpolation) when their sizes differ."""
    if a.shape == b.shape:
        return a, b
    side = min(a.shape[-1], b.shape[-1])
    shrink = lambda m: m if m.shape[-1] == side else np.stack(  # noqa: E731
        [cv2.resize(c, (side, side), interpolation=cv2.INTER_AREA) for c in m])
    return shrink(a), shrink(b)


def compare(build_a, build_b, tolerances: Tolerances = Tolerances()) -> tuple[dict, pd.DataFrame]:
    """(summary with ``verdict`` and the reasons, per-sample table) of two builds."""
    (manifest_a, samples_a), (manifest_b, samples_b) = _load(build_a), _load(build_b)
    merged = samples_a.merge(samples_b, on=KEY, how="outer", suffixes=("_a", "_b"), indicator=True)
    only_a = merged[merged["_merge"] == "left_only"][KEY]
    only_b = merged[merged["_merge"] == "right_only"][KEY]
    both = merged[merged["_merge"] == "both"].sort_values(KEY).reset_index(drop=True)
    meta_diff = []
    for column in META:
        differs = both[f"{column}_a"].astype(str) != both[f"{column}_b"].astype(str)
        meta_diff += [f"{r.video_id}#{r.frame_index}: {column} {getattr(r, column + '_a')!r} vs "
                      f"{getattr(r, column + '_b')!r}" for r in both[differs].itertuples()]
    names = tuple(n for n in MAPS if n in manifest_a.get("shard_datasets", MAPS[:4])
                  and n in manifest_b.get("shard_datasets", MAPS[:4])) + ("box",)
    handles_a, handles_b, rows = {}, {}, []
    try:
        for r in both.itertuples():
            a = _read(Path(manifest_a["shard_dir"]), handles_a, r.shard_a, int(r.row_a), names)
            b = _read(Path(manifest_b["shard_dir"]), handles_b, r.shard_b, int(r.row_b), names)
            entry = {"video_id": r.video_id, "frame_index": r.frame_index,
                     "box_iou": float(box_iou(a["box"][None], b["box"][None])[0])}
            for name in names[:-1]:
                x, y = _same_size(a[name], b[name])
                entry[f"{name}_mad"] = float(np.abs(x.astype(np.int16) - y.astype(np.int16)).mean())
            rows.append(entry)
    finally:
        for f in [*handles_a.values(), *handles_b.values()]:
            f.close()
    table = pd.DataFrame(rows, columns=["video_id", "frame_index", "box_iou"] + [f"{n}_mad" for n in names[:-1]])
    total = len(both) + len(only_a) + len(only_b)
    summary = {"build_a": manifest_a["build"], "build_b": manifest_b["build"],
               "config_hash_a": manifest_a["config_hash"], "config_hash_b": manifest_b["config_hash"],
               "common": len(both), "only_a": len(only_a), "only_b": len(only_b),
               "only_a_samples": [f"{v}#{i}" for v, i in only_a.itertuples(index=False)][:20],
               "only_b_samples": [f"{v}#{i}" for v, i in only_b.itertuples(index=False)][:20],
               "metadata_differences": meta_diff[:50], "metadata_difference_count": len(meta_diff),
               "box_iou": _stats(table["box_iou"]),
               **{f"{n}_mad": _stats(table[f"{n}_mad"]) for n in names[:-1]},
               "tolerances": tolerances.__dict__}
    reasons = []
    if meta_diff:
        reasons.append(f"{len(meta_diff)} sample(s) differ in label, split, attack or domain")
    missing = (len(only_a) + len(only_b)) / max(total, 1)
    if missing > tolerances.max_missing:
        reasons.append(f"{len(only_a) + len(only_b)} of {total} samples ({missing:.1%}) are in one build only "
                       f"(tolerance {tolerances.max_missing:.1%})")
    if len(table) and table["box_iou"].mean() < tolerances.min_iou:
        reasons.append(f"mean box IoU {table['box_iou'].mean():.3f} < {tolerances.min_iou}")
    for name in [n for n in names[:-1] if n in JUDGED]:
        if len(table) and table[f"{name}_mad"].mean() > tolerances.max_pixel_diff:
            reasons.append(f"{name}: mean absolute difference {table[f'{name}_mad'].mean():.2f} > "
                           f"{tolerances.max_pixel_diff}")
    summary["verdict"] = "different caches" if reasons else "the same cache, rebuilt (within tolerances)"
    summary["reasons"] = reasons
    return summary, table


def _stats(values: pd.Series) -> dict:
    if not len(values):
        return {}
    return {"mean": float(values.mean()), "min": float(values.min()), "p05": float(values.quantile(0.05)),
            "median": float(values.median()), "p95": float(values.quantile(0.95)), "max": float(values.max())}


def format_summary(summary: dict) -> str:
    """The comparison as a short table for a terminal."""
    lines = [f"compare {summary['build_a']} (config {summary['config_hash_a'][:12]}) with {summary['build_b']} "
             f"(config {summary['config_hash_b'][:12]})",
             f"  samples: {summary['common']} in both, {summary['only_a']} only in A, {summary['only_b']} only in B",
             f"  label/split/attack/domain differences: {summary['metadata_difference_count']}"]
    lines += [f"    {d}" for d in summary["metadata_differences"][:10]]
    lines.append(f"  {'measure':<20} {'mean':>8} {'p05':>8} {'median':>8} {'p95':>8} {'max':>8}")
    for key in [k for k in summary if k == "box_iou" or k.endswith("_mad")]:
        s = summary[key]
        if s:
            lines.append(f"  {key:<20} {s['mean']:8.3f} {s['p05']:8.3f} {s['median']:8.3f} {s['p95']:8.3f} "
                         f"{s['max']:8.3f}")
    lines.append(f"  verdict: {summary['verdict']}")
    lines += [f"    - {r}" for r in summary["reasons"]]
    return "\n".join(lines)
