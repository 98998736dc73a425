"""Tabulate run folders. :func:`collect`: one row per (method, protocol, split variant, selection), mean and
standard deviation over seeds of the video-level metrics (DomainBed's collect_results, for FAS). The folds of
one protocol (OULU-NPU's protocols 3 and 4) form one row, mean and standard deviation over folds and seeds, as
OULU-NPU results are published (APCER, BPCER, ACER at the development threshold). :func:`summarize`: one row
per run, what model selection saw (the source-validation AUC) beside what the target gives (its AUC and HTER
at the source threshold)."""
from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from .metrics import compared_metrics

METRICS = ("auc", "hter_at_target_eer_threshold", "hter_at_source_threshold", "apcer_worst", "bpcer", "acer")


def finished_runs(runs: list[Path]) -> list[tuple[Path, dict, dict]]:
    """(folder, report.json, run.json) of each finished run among ``runs``, in order; none finished is an
    error."""
    found = [(folder, json.loads((folder / "report.json").read_text()),
              json.loads((folder / "run.json").read_text()))
             for folder in runs if (folder / "report.json").is_file()]  # the others are unfinished
    if not found:
        raise ValueError("no finished run (report.json) among the folders given")
    return found


def selection_kind(report: dict) -> str:
    """"ORACLE" for a run that picked its checkpoint on the target, else "honest"."""
    return "ORACLE" if report["selection"].startswith("ORACLE") else "honest"


def collect(runs: list[Path], level: str = "video") -> pd.DataFrame:
    """Mean and std over seeds of each group of finished runs (folders with report.json); two runs of the
    same group and seed count once (the later folder given)."""
    rows = []
    for _, report, run in finished_runs(runs):
        metrics, _ = compared_metrics(report, level)
        rows.append({"method": report["method"], "protocol": report.get("protocol_group", report["protocol"]),
                     "fold": report["protocol"], "variant": report["variant"], "selection": selection_kind(report),
                     "seed": run["config"]["seed"], **{m: metrics.get(m, float("nan")) for m in METRICS}})
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


SOURCE_AUC = {"frame": "auc", "video": "video_auc", "video branch": "video_branch_auc"}  # in selection_scores


def summarize(runs: list[Path], level: str = "frame") -> pd.DataFrame:
    """One row per finished run (folders with report.json, in the order given): method, protocol, seed, the
    kept checkpoint's step and its source-validation AUC, the target's AUC and HTER at the threshold fixed on
    source validation, and the gap between the two AUCs; at ``level`` ("frame" or "video"), or the video
    branch's for a method whose own number that is."""
    rows = []
    for folder, report, run in finished_runs(runs):
        metrics, compared = compared_metrics(report, level)
        source_auc = report["selection_scores"].get(SOURCE_AUC[compared], float("nan"))
        rows.append({"method": report["method"], "protocol": report["protocol"], "level": compared,
                     "seed": run["config"]["seed"], "best_step": report["best_step"],
                     "selection": selection_kind(report), "source_auc": source_auc, "target_auc": metrics["auc"],
                     "target_hter": metrics["hter_at_source_threshold"], "gap": source_auc - metrics["auc"],
                     "run": str(folder)})
    return pd.DataFrame(rows)


def format_summary(table: pd.DataFrame) -> str:
    """:func:`summarize`'s rows as aligned text, with what the columns mean and where each run's files are."""
    head = f"{'method':<12} {'protocol':<15} {'level':<12} {'source-val AUC':>14} {'target AUC':>10} " \
           f"{'target HTER':>11} {'gap':>7}"
    lines = [head]
    for row in table.itertuples():
        oracle = "  ORACLE (selected on the target)" if row.selection == "ORACLE" else ""
        lines.append(f"{row.method:<12} {row.protocol:<15} {row.level:<12} {row.source_auc:>14.4f} "
                     f"{row.target_auc:>10.4f} {row.target_hter:>11.4f} {row.gap:>7.4f}{oracle}")
    lines += ["source-val AUC: held-out source subjects at the kept checkpoint (what model selection saw); target "
              "AUC and HTER: the unseen domain, HTER at the threshold fixed on source validation; gap: source-val "
              "AUC - target AUC"]
    lines += [f"{row.method}: {row.run}/report.json, plots {row.run}/roc.png, det.png, histogram.png"
              for row in table.itertuples()]
    return "\n".join(lines)
