"""Tabulate run folders: one row per (method, protocol, split variant, selection), mean and standard deviation
over seeds of the video-level metrics (DomainBed's collect_results, for FAS). The folds of one protocol (OULU-NPU's
protocols 3 and 4) form one row, mean and standard deviation over folds and seeds, as OULU-NPU results are
published (APCER, BPCER, ACER at the development threshold)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .metrics import compared_metrics

METRICS = ("auc", "hter_at_target_eer_threshold", "hter_at_source_threshold", "apcer_worst", "bpcer", "acer")


def collect(runs: list[Path], level: str = "video") -> pd.DataFrame:
    """Mean and std over seeds of each group of finished runs (folders with report.json); two runs of the
    same group and seed count once (the later folder given)."""
    rows = []
    for folder in runs:
        report_path, run_path = folder / "report.json", folder / "run.json"
        if not report_path.is_file():
            continue  # unfinished
        report, run = json.loads(report_path.read_text()), json.loads(run_path.read_text())
        metrics, _ = compared_metrics(report, level)
        rows.append({"method": report["method"], "protocol": report.get("protocol_group", report["protocol"]),
                     "fold": report["protocol"], "variant": report["variant"],
                     "selection": "ORACLE" if report["selection"].startswith("ORACLE") else "honest",
                     "seed": run["config"]["seed"], **{m: metrics.get(m, float("nan")) for m in METRICS}})
    if not rows:
        raise ValueError("no finished run (report.json) among the folders given")
    keys = ["method", "protocol", "variant", "selection"]
    table = pd.DataFrame(rows).drop_duplicates(keys + ["fold", "seed"], keep="last")  # a run counts once
    grouped = table.groupby(keys, sort=True)
    out = grouped.size().rename("runs").to_frame()
    out["folds"] = grouped["fold"].nunique()
    for m in METRICS:
        out[f"{m}_mean"] = grouped[m].mean()
        out[f"{m}_std"] = grouped[m].std(ddof=0)
    return out.reset_index()


def format_table(table: pd.DataFrame) -> str:
    lines = []
    for row in table.itertuples():
        cells = "  ".join(f"{m} {100 * getattr(row, m + '_mean'):.2f} ± {100 * getattr(row, m + '_std'):.2f}"
                          for m in METRICS)
        lines.append(f"{row.method:<6} {row.protocol:<12} {row.variant:<9} {row.selection:<7} n={row.runs} "
                     f"({row.folds} fold{'s' if row.folds > 1 else ''})  {cells}")
    return "\n".join(lines) + ("\n(video level, in %, mean ± std over seeds and folds; ORACLE rows picked their "
                              "checkpoint on the target test set)")
