"""Command line of the dataset-build pipeline: ``python -m pipeline <command>`` or ``fas-pipeline``."""
from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

from .cli_help import DefaultsFormatter, subcommand_parser
from .datasets import INDEXERS, IndexWarning, LayoutError
from .provenance import program_name, version_line
from .shards import ShardError
from .templates import template_names


def _cmd_index(args) -> int:
    from .index import format_summary, index_dataset, write_index
    if args.out.is_dir():
        raise ValueError(f"{args.out}: is a folder; --out names the table to write, e.g. "
                         f"{args.out / (args.dataset + '.csv')} (its JSON summary goes beside it)")
    index = index_dataset(args.dataset, args.root, workers=args.workers, quiet=args.quiet)
    table_path, json_path = write_index(index, args.out)
    if args.json:
        written = json.loads(Path(json_path).read_text())  # the summary as written, its table's hash included
        print(json.dumps({**written, "table_path": str(table_path), "summary_path": str(json_path)}, indent=2,
                         sort_keys=True))
        return 0
    print(format_summary(index.summary))
    print(f"wrote {table_path} and {json_path}")
    return 0


def _cmd_demo_data(args) -> int:
    from .demo import DemoConfig, write_demo_corpus
    report = write_demo_corpus(Path(args.out), DemoConfig(seed=args.seed, shift=args.shift), workers=args.workers,
                               quiet=args.quiet)
    print(report)
    return 0


def _cmd_build(args) -> int:
    from .build import run_build
    return run_build(args.config, quiet=args.quiet, as_json=args.json, verbose=args.verbose)


def _cmd_audit(args) -> int:
    from .audit import audit, leftovers
    problems = audit(args.build, args.shard_dir)
    left = leftovers(args.build, args.shard_dir)
    if args.json:
        print(json.dumps({"build": str(args.build), "ok": not problems, "problems": problems,
                          "leftovers": [str(p) for p in left]}, indent=2))
        return 1 if problems else 0
    for problem in problems:
        print(f"MISMATCH {problem}", file=sys.stderr)
    for path in left:
        print(f"LEFTOVER {path}: a temporary file of a killed build (the next run of the build removes it)")
    verdict = f"FAILED, {len(problems)} problem(s)" if problems else "the manifest, its tables and every shard match"
    print(f"audit: {verdict}")
    return 1 if problems else 0


def _cmd_init_config(args) -> int:
    from .templates import write_template
    roots = {}
    for item in args.root:
        dataset, sep, root = item.partition("=")
        if not sep or dataset not in INDEXERS:
            raise ValueError(f"--root {item!r}: expected DATASET=PATH with DATASET one of {sorted(INDEXERS)}")
        roots[dataset] = root
    top = {"name": args.name, "output_dir": args.output_dir, "manifest_dir": args.manifest_dir}
    out = write_template(args.template, roots, args.out, top, force=args.force)
    print(f"wrote {out} ({args.template} template, {len(roots)} dataset(s)); build it with: fas-pipeline build "
          f"--config {out}")
    return 0


def _cmd_config_reference(args) -> int:
    from .config_reference import reference
    print(reference(), end="")
    return 0


def _cmd_compare(args) -> int:
    from .compare import Tolerances, compare, format_summary
    summary, table = compare(args.build_a, args.build_b,
                             Tolerances(args.max_missing, args.min_iou, args.max_pixel_diff))
    print(json.dumps(summary, indent=2, sort_keys=True) if args.json else format_summary(summary))
    if args.out:
        from .atomic import write_csv, write_json
        write_csv(args.out, table)
        write_json(args.out.with_suffix(".json"), summary)
        if not args.json:
            print(f"per-sample table: {args.out}; summary: {args.out.with_suffix('.json')}")
    return 1 if summary["reasons"] else 0


def _cmd_preview(args) -> int:
    from .preview import write_preview
    path = write_preview(args.build, args.out, args.n, args.dataset, args.label)
    print(f"preview of {args.build}: {path}")
    return 0


def _cmd_face_sizes(args) -> int:
    import yaml
    from .config import load_config
    from .face_sizes import measure, recommend, report
    config = load_config(args.config)
    sizing = {}
    for dataset, root in sorted(config.datasets.items()):
        sizes = measure(dataset, root, args.videos, args.frames, quiet=args.quiet)
        print(report(sizes, config.face.for_dataset(dataset), args.margin))
        if len(sizes.sides):
            sizing[dataset] = recommend(sizes, args.margin)
    print("\nfor the build config (face section):")
    print(yaml.safe_dump({"sizing": sizing}, default_flow_style=None, sort_keys=True).rstrip())
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name("pipeline", "fas-pipeline"), description=__doc__,
                                     formatter_class=DefaultsFormatter)
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", required=True, parser_class=subcommand_parser)

    index = commands.add_parser("index", help="index a dataset copy into a video table and JSON summary")
    index.add_argument("--dataset", required=True, choices=sorted(INDEXERS), help="which dataset the copy is")
    index.add_argument("--root", required=True, type=Path, help="the dataset's root folder, official layout")
    index.add_argument("--out", required=True, type=Path, help="table to write (.csv); the summary goes beside it")
    index.add_argument("--workers", type=int, default=4, help="hashing threads")
    index.add_argument("--quiet", action="store_true", help="no progress bar")
    index.add_argument("--json", action="store_true", help="print the summary as JSON (the only output on stdout)")
    index.set_defaults(run=_cmd_index)

    demo = commands.add_parser("demo-data", help="write the synthetic demo corpus in the four official layouts")
    demo.add_argument("--out", required=True, type=Path, help="folder to write the four datasets into")
    demo.add_argument("--seed", type=int, default=0, help="the corpus's random seed (same seed, same bytes)")
    demo.add_argument("--shift", type=float, default=None,
                      help="the controlled domain-shift profile at this strength (0: domains alike, 1: its default); "
                           "without it, each dataset's classic capture style")
    demo.add_argument("--workers", type=int, default=None, help="rendering processes (default: one per core)")
    demo.add_argument("--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_cmd_demo_data)

    build = commands.add_parser("build", help="build sharded HDF5 from indexed videos (Luigi + dask)")
    build.add_argument("--config", required=True, type=Path, help="build config YAML")
    build.add_argument("--quiet", action="store_true", help="no progress bars, errors only (batch jobs)")
    build.add_argument("--verbose", action="store_true", help="Luigi's and dask's INFO lines too")
    build.add_argument("--json", action="store_true", help="print the summary as JSON (the only output on stdout)")
    build.set_defaults(run=_cmd_build)

    faces = commands.add_parser("face-sizes", help="measure face sizes per dataset and recommend detector sizing")
    faces.add_argument("--config", required=True, type=Path, help="build config YAML (its datasets are measured)")
    faces.add_argument("--videos", type=int, default=24, help="videos sampled per dataset")
    faces.add_argument("--frames", type=int, default=3, help="frames per video")
    faces.add_argument("--margin", type=float, default=0.5,
                       help="search faces down to this fraction of the smallest one seen")
    faces.add_argument("--quiet", action="store_true", help="no progress bar")
    faces.set_defaults(run=_cmd_face_sizes)

    check = commands.add_parser("audit", help="check a build's shards against its manifest")
    check.add_argument("build", type=Path, help="the build's manifest folder (data_manifests/<name>) or file")
    check.add_argument("--shard-dir", type=Path, default=None, help="where the shards are, if moved")
    check.add_argument("--json", action="store_true", help="print the summary as JSON (the only output on stdout)")
    check.set_defaults(run=_cmd_audit)

    versus = commands.add_parser("compare", help="compare two builds of the same sources (exit 1 beyond tolerances)")
    versus.add_argument("build_a", type=Path, help="a build's manifest folder")
    versus.add_argument("build_b", type=Path, help="another build's manifest folder")
    versus.add_argument("--max-missing", type=float, default=0.0,
                        help="fraction of samples allowed in one build only")
    versus.add_argument("--min-iou", type=float, default=0.9, help="least mean box IoU")
    versus.add_argument("--max-pixel-diff", type=float, default=8.0,
                        help="largest mean absolute difference of a channel set or map, 0-255")
    versus.add_argument("--out", type=Path, default=None, help="write the per-sample table (CSV) and summary (JSON)")
    versus.add_argument("--json", action="store_true", help="print the summary as JSON (the only output on stdout)")
    versus.set_defaults(run=_cmd_compare)

    init = commands.add_parser("init-config", help="write a build config from a shipped template with your "
                               "dataset roots (comments kept; checked before it is written)")
    init.add_argument("template", choices=template_names(), help="full: all five datasets, 8 frames per video; "
                      "paper-frames: the papers' 2 frames per video")
    init.add_argument("--root", action="append", default=[], required=True, metavar="DATASET=PATH",
                      help="a dataset's copy, repeatable (e.g. --root oulu=/data/Oulu_NPU); only these are built")
    init.add_argument("--out", required=True, type=Path, help="the config file to write")
    init.add_argument("--name", default=None, help="the build's name (default: the template's)")
    init.add_argument("--output-dir", dest="output_dir", default=None,
                      help="where shards go (default: the template's)")
    init.add_argument("--manifest-dir", dest="manifest_dir", default=None,
                      help="where manifests go (default: the template's)")
    init.add_argument("--force", action="store_true", help="overwrite an existing --out")
    init.set_defaults(run=_cmd_init_config)

    keys = commands.add_parser("config-reference", help="print every build-config key with its type, default "
                               "and meaning (Markdown; docs/configuration.md is its output)")
    keys.set_defaults(run=_cmd_config_reference)

    sheet = commands.add_parser("preview", help="write a contact sheet (PNG) of samples of a build")
    sheet.add_argument("build", type=Path, help="the build's manifest folder")
    sheet.add_argument("--out", required=True, type=Path, help="PNG to write")
    sheet.add_argument("--dataset", default=None, help="only this dataset's samples")
    sheet.add_argument("--label", choices=["live", "spoof"], default=None, help="only samples of this label")
    sheet.add_argument("--n", type=int, default=24, help="samples to show")
    sheet.set_defaults(run=_cmd_preview)
    return parser


def _show_warning(message, category, filename, lineno, file=None, line=None):
    print(f"WARNING: {message}", file=sys.stderr)


def main(argv=None) -> int:
    """Entry point; returns the exit status (2 for bad input)."""
    args = build_parser().parse_args(argv)
    warnings.simplefilter("always", IndexWarning)
    warnings.showwarning = _show_warning
    try:
        return args.run(args)
    except (LayoutError, FileNotFoundError, FileExistsError, ValueError, ShardError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
