"""A sweep's table in the papers' layout: methods in rows, protocols in columns, HTER and AUC in %, mean ± std
over seeds (and folds), at the sweep's level, the model selection named; beside it the numbers the papers
publish (``fas_train/configs/published.yaml``) when the build is of the real datasets, with the difference.
Written as ``table.md``, ``table.csv`` (one row per run) and ``table.png`` (each method's HTER and its spread,
per protocol), with ``table.json`` recording which reports made it."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.yaml_files import read_yaml

from .metrics import compared_metrics
from .protocols import CONFIGS

METRICS = {"hter": "hter_at_target_eer_threshold", "hter_source": "hter_at_source_threshold", "auc": "auc",
           "acer": "acer"}


def reports_digest(runs) -> dict:
    """sha256 of each finished run's report.json, by run id (what a table was made from)."""
    digest = {}
    for run in runs:
        path = run.folder / "report.json"
        if path.is_file():
            digest[run.run_id] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digest


def run_rows(sweep) -> pd.DataFrame:
    """One row per finished run: its labels and metrics (fractions) at the sweep's level."""
    rows = []
    published = load_published() if sweep.level == "paper" else None  # read once, not once per run
    for run in sweep.runs:
        path = run.folder / "report.json"
        if not path.is_file():
            continue
        report = json.loads(path.read_text())
        metrics, level = compared_metrics(report, run_level(sweep.level, run.config.method, published))
        column = report.get("protocol_group", report["protocol"])
        if len({r.variant for r in sweep.runs}) > 1:
            column += f" ({report['variant']})"
        rows.append({"run": run.run_id, "label": run.label, "method": run.config.method, "protocol": run.protocol,
                     "column": column, "variant": report["variant"], "seed": run.seed, "steps": report.get("steps"),
                     "selection": "ORACLE" if report["selection"].startswith("ORACLE") else "honest",
                     "level": level, **{name: metrics.get(key, np.nan) for name, key in METRICS.items()},
                     **operating_columns(metrics)})
    return pd.DataFrame(rows)


def run_level(level: str, method: str, published: list[dict] | None = None) -> str:
    """The level a run is compared at: the sweep's, or with ``level: paper`` the level of the method's published
    numbers (frame or video; video for a method the papers do not publish). ``published``: the entries of
    :func:`load_published`, when the caller has them already."""
    if level != "paper":
        return level
    published = [e for e in (load_published() if published is None else published) if e["method"] == method]
    return "frame" if published and published[0]["level"] == "frame" else "video"


def frames_per_video(build: str | Path) -> str:
    """How many frames per video a build sampled, in words (its manifest's frames section)."""
    frames = json.loads((Path(build) / "manifest.json").read_text())["config"]["frames"]
    words = {"even": f"{frames['count']} evenly spaced frames", "all": "every frame",
             "every": f"every {frames['step']}th frame"}[frames["policy"]]
    return words + (f" (at most {frames['max_frames']})" if frames.get("max_frames") else "") + " per video"


def operating_columns(metrics: dict) -> dict:
    """The ISO/IEC 30107-3 operating points of one level's metrics as table.csv's optional columns
    (``bpcer@apcer5%``, ``apcer@bpcer10%``, ``tpr@fpr1%``; empty for reports written before they existed)."""
    out = {}
    for key, value_name, column in (("bpcer_at_apcer", "bpcer", "bpcer@apcer"),
                                    ("apcer_at_bpcer", "apcer", "apcer@bpcer"), ("tpr_at_fpr", "tpr", "tpr@fpr")):
        for rate, entry in metrics.get(key, {}).items():
            out[f"{column}{rate}"] = np.nan if entry[value_name] is None else entry[value_name]
    return out


def summarize(rows: pd.DataFrame) -> pd.DataFrame:
    """Mean and std (over seeds and folds) per (label, column), in %."""
    grouped = rows.groupby(["label", "column"], sort=False)
    out = grouped.size().rename("runs").to_frame()
    out["level"] = grouped["level"].agg(lambda levels: ", ".join(sorted(set(levels))))
    for name in METRICS:
        out[f"{name}_mean"] = 100 * grouped[name].mean()
        out[f"{name}_std"] = 100 * grouped[name].std(ddof=0)
    return out.reset_index()


def load_published() -> list[dict]:
    """The papers' published numbers: entries with paper, table, where, method, protocol, hter, auc (in %)."""
    return read_yaml(CONFIGS / "published.yaml")["results"]


def is_demo_build(build: str | Path) -> bool:
    """Whether a build was made from the synthetic demo corpus (its dataset roots sit in one)."""
    manifest = json.loads((Path(build) / "manifest.json").read_text())
    return any((Path(s["root"]).parent / "demo_corpus.json").is_file() for s in manifest["sources"].values())


def markdown(sweep, rows: pd.DataFrame, summary: pd.DataFrame, published: list[dict] | None, partial: bool) -> str:
    """The table as Markdown: HTER (at the target's EER threshold, as the papers report it) and AUC per
    protocol; then the deployable HTER at the threshold fixed on source data."""
    columns = list(dict.fromkeys(summary["column"]))
    labels = list(dict.fromkeys(summary["label"]))
    cell = summary.set_index(["label", "column"])
    selections = ", ".join(sorted(set(rows["selection"])))
    seeds = sorted({r.seed for r in sweep.runs})
    frames = frames_per_video(sweep.build)

    def value(label, column, name):
        if (label, column) not in cell.index:
            return "–"
        row = cell.loc[(label, column)]
        return f"{row[name + '_mean']:.2f} ± {row[name + '_std']:.2f}"

    head = "| Method | " + " | ".join(f"{c} HTER | {c} AUC" for c in columns) + " |"
    rule = "|---|" + "---:|---:|" * len(columns)
    lines = [f"# Sweep {sweep.name}{' (PARTIAL: finished runs only)' if partial else ''}", "",
             f"HTER and AUC in %, mean ± std over seeds {seeds} (and folds), {level_words(sweep)}; model selection: "
             f"{selections}. HTER at the target's EER threshold, as the papers report it.", "", head, rule]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(f"{value(label, c, 'hter')} | {value(label, c, 'auc')}"
                                                    for c in columns) + " |")
        method = sweep_method(sweep, label)
        paper = {e["protocol"]: e for e in published or [] if e["method"] == method} if label == method else {}
        if paper:
            ours = f"ours: {', '.join(sorted(set(summary.loc[summary['label'] == label, 'level'])))} level, {frames}"
            lines.append(published_row(paper, columns, lambda c: cell.loc[(label, c)] if (label, c) in cell.index
                                       else None, ours))
    lines += ["", "Deployable HTER (threshold fixed on source validation data), in %:", "",
              "| Method | " + " | ".join(columns) + " |", "|---|" + "---:|" * len(columns)]
    for label in labels:
        lines.append(f"| {label} | " + " | ".join(value(label, c, "hter_source") for c in columns) + " |")
    settings = next(iter(sweep.runs)).config
    lines += ["", f"Runs: {int(summary['runs'].sum())} of {len(sweep.runs)}; build {sweep.build}; "
                  f"{settings.steps} steps, network {settings.network}, input size {settings.input_size or 'method default'}; "
                  f"code {', '.join(code_versions(sweep))}; command: fas-train sweep {sweep.path}."]
    if published is None:
        lines.append("Published numbers are not shown: the build is the synthetic demo corpus, not the datasets.")
    if sweep.note:
        lines.append(sweep.note)
    return "\n".join(lines) + "\n"


def level_words(sweep) -> str:
    """The table's level in words."""
    return "each method at its paper's level" if sweep.level == "paper" else f"{sweep.level} level"


def published_row(paper: dict, columns: list, ours, made: str) -> str:
    """A Markdown row of a paper's numbers per protocol column, each with ours minus it (Δ), labelled with the
    level and frames the paper's numbers came from and ``made``, how ours were."""
    cells = []
    for column in columns:
        entry, mine = paper.get(column), ours(column)
        for name in ("hter", "auc"):
            if entry is None or entry[name] is None:  # not in the paper's table
                cells.append("–")
            else:
                delta = "" if mine is None else f" (Δ {mine[name + '_mean'] - entry[name]:+.2f})"
                cells.append(f"{entry[name]:.2f}{delta}")
    source = next(iter(paper.values()))
    return (f"| ↳ published ({source['paper']}, {source['table']}; {source['level']} level, {source['frames']}; "
            f"{made}) | " + " | ".join(cells) + " |")


def code_versions(sweep) -> list[str]:
    """The git commits (or package versions) the finished runs were trained with, from their run.json."""
    found = set()
    for run in sweep.runs:
        path = run.folder / "run.json"
        if (run.folder / "report.json").is_file() and path.is_file():
            code = json.loads(path.read_text()).get("code", {})
            found.add(str(code.get("git_commit") or code.get("version")))
    return sorted(found)


def sweep_method(sweep, label: str) -> str:
    return next(r.config.method for r in sweep.runs if r.label == label)


def plot(summary: pd.DataFrame, path: Path, title: str) -> None:
    """Per protocol, each method's HTER (mean, with its std as an error bar)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    columns = list(dict.fromkeys(summary["column"]))
    fig, axes = plt.subplots(1, len(columns), figsize=(3.2 * len(columns), 3.2), squeeze=False, sharey=True)
    for ax, column in zip(axes[0], columns):
        part = summary[summary["column"] == column]
        ax.bar(range(len(part)), part["hter_mean"], yerr=part["hter_std"], capsize=3, color="tab:blue")
        ax.set_xticks(range(len(part)), part["label"], rotation=45, ha="right")
        ax.set_title(column)
    axes[0][0].set_ylabel("HTER (%)")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_table(sweep, partial: bool = False) -> Path:
    """Write the table files from the finished runs' reports; return the Markdown file's path."""
    from pipeline.atomic import write_csv, write_json, write_text
    rows = run_rows(sweep)
    if rows.empty:
        raise ValueError(f"sweep {sweep.name}: no finished run to tabulate")
    summary = summarize(rows)
    published = None if is_demo_build(sweep.build) else load_published()
    stem = "table.partial" if partial else "table"
    sweep.out.mkdir(parents=True, exist_ok=True)
    write_text(sweep.out / f"{stem}.md", markdown(sweep, rows, summary, published, partial))
    write_csv(sweep.out / f"{stem}.csv", rows)
    plot(summary, sweep.out / f"{stem}.png", f"{sweep.name}: HTER (%), {level_words(sweep)}")
    if not partial:
        for name in ("table.partial.md", "table.partial.csv", "table.partial.png"):
            (sweep.out / name).unlink(missing_ok=True)
        write_json(sweep.out / "table.json", {"sweep": str(sweep.path), "reports": reports_digest(sweep.runs)})
    return sweep.out / f"{stem}.md"
