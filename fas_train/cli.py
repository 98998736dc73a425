"""Command line of the trainer: ``fas-train methods|train|eval|collect|summary|sweep|export|predict|metrics``
(or ``python -m fas_train ...``)."""
from __future__ import annotations

import argparse
import json
import re
import typing
import sys
from dataclasses import fields
from pathlib import Path

from pipeline.cli_help import DefaultsFormatter, subcommand_parser
from pipeline.provenance import program_name, version_line

from .checkpoint import WriteFailed
from .methods import METHODS
from .metrics import FUSIONS
from .preemption import PREEMPTED_EXIT, Preempted
from .settings import RunConfig
from .train import TrainingStopped


def _cmd_train(args) -> int:
    from .train import run
    values = {f.name: getattr(args, f.name) for f in fields(RunConfig) if hasattr(args, f.name)}
    values["options"] = tuple(args.option)
    result = run(RunConfig(**values))
    if result is not None:  # under torchrun, process 0 reports
        _print(result, Path(args.out), args.json)
    return 0


def _cmd_eval(args) -> int:
    from .evaluation import evaluate_run
    result = evaluate_run(Path(args.run), verify=not args.no_verify, build=args.build, fusion=args.fusion,
                          fta_rejected=args.fta_rejected)
    _print(result, Path(args.run), args.json)
    return 0


def _cmd_export(args) -> int:
    from .export import export_run
    spec = export_run(Path(args.run), Path(args.out), build=args.build, format=args.format)
    files = ", ".join(spec["files"])
    print(f"exported {spec['method']} ({spec['provenance']['protocol']}, step {spec['provenance']['best_step']}) "
          f"to {args.out}: {files}, model.json")
    print("  thresholds (source validation): " + ", ".join(f"{k} {v:.4f}" for k, v in spec["thresholds"].items()))
    print(f"  read back with {spec['runtime']}, largest score difference from the run's networks on random faces: "
          + ", ".join(f"{k} {v:.1e}" for k, v in spec["round_trip"].items()))
    print(f"  score new footage with: fas-train predict --model {args.out} VIDEO_OR_IMAGE...")
    return 0


def _cmd_predict(args) -> int:
    from .predict import predict
    from .scorers import model_scorer, run_scorer
    if (args.run is None) == (args.model is None):
        raise ValueError("give one of --run RUN or --model MODEL_DIR")
    scorer = (run_scorer(Path(args.run), build=args.build, device=args.device) if args.run
              else model_scorer(Path(args.model), device=args.device))
    summary = predict(scorer, args.inputs, Path(args.out), sizing=args.sizing, batch_size=args.batch_size,
                      quiet=args.quiet)
    if args.json:
        print(json.dumps(summary, indent=2, sort_keys=True))
    else:
        print(f"{summary['inputs']} input(s): {summary['live']} live, {summary['spoof']} spoof, "
              f"{summary['failure_to_acquire']} failure to acquire, {summary['unreadable']} unreadable; "
              f"{summary['frames']} frames in {summary['seconds']:.1f} s ({summary['frames_per_second']} frames/s)")
        print(f"  per input: {args.out}/<name>.csv and .json; all: {args.out}/predictions.csv")
    return 1 if summary["unreadable"] else 0


def _cmd_metrics(args) -> int:
    from .score_files import format_metrics, score_file_metrics
    result = score_file_metrics(Path(args.scores), dev=Path(args.dev) if args.dev else None,
                                criterion=args.threshold_from, fusion=args.fusion, plots=args.plots)
    print(json.dumps(result, indent=2, sort_keys=True) if args.json else format_metrics(result))
    return 0


def _cmd_collect(args) -> int:
    from .collect import collect, format_table
    table = collect([Path(r) for r in args.runs], args.level)
    print(format_table(table))
    if args.csv:
        table.to_csv(args.csv, index=False)
    return 0


def _cmd_summary(args) -> int:
    from .collect import format_summary, summarize
    table = summarize([Path(r) for r in args.runs], args.level)
    rows = table.astype(object).where(table.notna(), None).to_dict(orient="records")  # NaN -> null, full floats
    print(json.dumps(rows, indent=2) if args.json else format_summary(table))
    return 0


def _cmd_sweep(args) -> int:
    from .sweep import print_commands, run_sweep
    if args.print_commands:
        print_commands(args.sweep)
        return 0
    return run_sweep(args.sweep, args.workers, args.scheduler)


def method_options() -> dict:
    """Each method's summary and options (name, type, default), from its class and config dataclass."""
    from .settings import type_name
    out = {}
    for name, (cls, config_cls) in sorted(METHODS.items()):
        types = typing.get_type_hints(config_cls)
        paragraph = (sys.modules[cls.__module__].__doc__ or cls.__doc__ or "").strip().split("\n\n")[0]
        out[name] = {"summary": re.split(r"(?<=\.)\s", " ".join(paragraph.split()))[0],
                     "class": f"{cls.__module__}.{cls.__name__}",
                     "options": [{"name": f.name, "type": type_name(types[f.name]), "default": f.default}
                                 for f in fields(config_cls)]}
    return out


def _cmd_methods(args) -> int:
    listing = method_options()
    if args.json:
        print(json.dumps(listing, indent=2, default=str))
        return 0
    for name, entry in listing.items():
        print(f"{name}: {entry['summary']}")
        for option in entry["options"]:
            print(f"  --option {option['name']}=...  {option['type']}, default {option['default']!r}")
    print("Defaults are the method's paper settings where the paper gives one; docs/methods.md's fidelity table "
          "names the choices it does not.")
    return 0


def _print(result: dict, out: Path, as_json: bool = False) -> None:
    from .metrics import operating_summary
    if as_json:
        print(json.dumps({**result, "run": str(out)}, indent=2, sort_keys=True))
        return
    video, frame = result["metrics"]["video"], result["metrics"]["frame"]
    print(f"{result['method']} on {result['protocol']} ({result['variant']} splits); selection: {result['selection']}")
    print(f"  video level ({result.get('fusion', 'mean')} of frames): AUC {video['auc']:.4f}  "
          f"HTER@target-EER-threshold {video['hter_at_target_eer_threshold']:.4f}  "
          f"HTER@source-threshold {video['hter_at_source_threshold']:.4f}  ACER {video['acer']:.4f}")
    print(f"    {operating_summary(video)}")
    print(f"  frame level: AUC {frame['auc']:.4f}  EER {frame['eer']:.4f}  "
          f"HTER@source-threshold {frame['hter_at_source_threshold']:.4f}")
    print(f"    {operating_summary(frame)}")
    for part, source in result.get("provenance", {}).items():  # where pretrained parts came from
        print(f"  {part.replace('_', ' ')}: {source}")
    if "video_branch" in result["metrics"]:
        branch = result["metrics"]["video_branch"]
        tag = " (the method's own number: compared and selected on)" if result.get("compared") == "video_branch" else ""
        print(f"  video branch{tag}: AUC {branch['auc']:.4f}  "
              f"HTER@target-EER-threshold {branch['hter_at_target_eer_threshold']:.4f}  "
              f"HTER@source-threshold {branch['hter_at_source_threshold']:.4f}")
    print(f"  report: {out / 'report.json'}  scores: {out / 'scores.csv'}  plots: {out}/roc.png, det.png, "
          f"histogram.png")


def _scoring_options(parser, default="mean") -> None:
    parser.add_argument("--fusion", choices=list(FUSIONS), default=default,
                        help="how a video's frame scores make its score" + ("" if default else " (default: the run's)"))
    parser.add_argument("--fta-rejected", dest="fta_rejected", action="store_true", default=None if default is None
                        else False, help="count target presentations without a usable face (the build's rejects) "
                                         "as rejected, per ISO/IEC 30107-3 (default: counted apart)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=program_name("fas_train", "fas-train"), description=__doc__,
                                     formatter_class=DefaultsFormatter)
    parser.add_argument("--version", action="version", version=version_line())
    commands = parser.add_subparsers(dest="command", required=True, parser_class=subcommand_parser)
    listing = commands.add_parser("methods", help="every method with its options: type, default (the paper's "
                                  "setting where the paper gives one) and the first line of its docstring")
    listing.add_argument("--json", action="store_true", help="print them as JSON")
    listing.set_defaults(handler=_cmd_methods)
    train = commands.add_parser("train", help="train a method on a protocol (resumes from --out); data-parallel "
                                "when started by torchrun")
    train.add_argument("--method", required=True, choices=sorted(METHODS), help="the method (fas-train methods "
                       "lists them with their options)")
    train.add_argument("--build", required=True, help="a build's manifest folder, e.g. data_manifests/demo/builds/demo")
    train.add_argument("--protocol", required=True, help="a protocol: a shipped one's name (mico_OCI_to_M, oulu_p1, ...) or a YAML file")
    train.add_argument("--out", required=True, help="run folder (checkpoints, metrics, report)")
    train.add_argument("--variant", default=None, help="split variant of the protocol (default: its default_variant)")
    train.add_argument("--steps", type=int, default=1000, help="training steps (one method.update each)")
    train.add_argument("--eval-every", dest="eval_every", type=int, default=100,
                       help="steps between evaluations on source validation (model selection)")
    train.add_argument("--checkpoint-every", dest="checkpoint_every", type=int, default=50,
                       help="steps between checkpoints besides those at evaluations; SIGTERM, SIGINT "
                            f"and SIGUSR1 also write one and stop with exit status {PREEMPTED_EXIT}")
    train.add_argument("--per-class", dest="per_class", type=int, default=None,
                       help="live and spoof samples per domain in a batch (over all processes under torchrun); "
                            "default: the method's paper")
    train.add_argument("--option", action="append", default=[], metavar="NAME=VALUE",
                       help="override a field of the method's config (ablations, hyper-parameters), repeatable, "
                            "e.g. --option meta_gradient=first-order")
    train.add_argument("--network", choices=["paper", "small"], default="paper",
                       help="the paper's networks, or small ones for CPU runs")
    train.add_argument("--input-size", dest="input_size", type=int, default=None,
                       help="input side in pixels (images resized on the device); default: the method's paper "
                            "size (ccdd: 224), else the stored crop; 0: the stored crop")
    train.add_argument("--seed", type=int, default=0, help="seed of weights, batches and every random draw")
    train.add_argument("--workers", type=int, default=0,
                       help="DataLoader processes; 0: threads in the training process read and prefetch")
    train.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    train.add_argument("--select-on-target", dest="select_on_target", action="store_true",
                       help="ORACLE mode: pick the checkpoint on the target test set (labelled in every output)")
    train.add_argument("--quiet", action="store_true", help="no progress bar")
    train.add_argument("--json", action="store_true", help="print the report as JSON (the only output on stdout)")
    train.add_argument("--domains", choices=["dataset", "camera", "session"], default=None,
                       help="the sample column whose values are the domains the methods split (default: the "
                            "protocol's: dataset across datasets, camera within OULU-NPU)")
    train.add_argument("--no-verify", dest="verify", action="store_false",
                       help="do not check the build against its manifest first (run.json records it)")
    train.add_argument("--precision", choices=["auto", "bf16", "fp32"], default="auto",
                       help="auto: bf16 autocast on CUDA, fp32 elsewhere (scores are float32 either way)")
    train.add_argument("--channels-last", dest="channels_last", choices=["auto", "on", "off"], default="auto",
                       help="channels-last memory layout (auto: on CUDA)")
    _scoring_options(train)
    train.set_defaults(handler=_cmd_train)
    evaluate = commands.add_parser("eval", help="evaluate a run's best checkpoint on its protocol's target")
    evaluate.add_argument("--run", required=True, help="run folder written by train")
    evaluate.add_argument("--no-verify", action="store_true", help="do not check the build against its manifest")
    evaluate.add_argument("--build", default=None, metavar="PATH",
                          help="where the run's build is now (a moved or copied build's manifest folder; accepted "
                               "when its manifest content is the run's); default: the build run.json names")
    evaluate.add_argument("--json", action="store_true", help="print the report as JSON")
    _scoring_options(evaluate, default=None)
    evaluate.set_defaults(handler=_cmd_eval)
    exporting = commands.add_parser("export", help="write a finished run's model as a self-contained folder "
                                    "(ATen graphs, preprocessing, thresholds, provenance; loads without unpickling)")
    exporting.add_argument("--run", required=True, help="run folder written by train")
    exporting.add_argument("--out", required=True, metavar="MODEL_DIR", help="the model folder to write (new)")
    exporting.add_argument("--build", default=None, metavar="PATH", help="where the run's build is now")
    exporting.add_argument("--format", choices=["torch", "onnx"], default="torch",
                           help="torch.export graphs (run by torch, scores equal to the run's) or ONNX files (for "
                                "onnxruntime, TensorRT, OpenVINO; needs the onnx extra)")
    exporting.set_defaults(handler=_cmd_export)
    predicting = commands.add_parser("predict", help="score videos, images and folders of them with a run or an "
                                     "exported model; CSV and JSON per input")
    predicting.add_argument("inputs", nargs="+", metavar="INPUT", help="videos, images, or folders of them")
    predicting.add_argument("--run", default=None, help="a finished run folder (needs its build)")
    predicting.add_argument("--model", default=None, metavar="MODEL_DIR", help="a folder written by export")
    predicting.add_argument("--build", default=None, metavar="PATH", help="with --run: where its build is now")
    predicting.add_argument("--out", default="predictions", help="folder for the outputs")
    predicting.add_argument("--sizing", default=None, metavar="DATASET",
                            help="detect faces with that dataset's sizing from the build (default: the build's "
                                 "face settings)")
    predicting.add_argument("--batch-size", dest="batch_size", type=int, default=64,
                            help="faces per network call")
    predicting.add_argument("--device", default="auto", help="auto (CUDA when present), cpu or cuda")
    predicting.add_argument("--quiet", action="store_true", help="no progress bar")
    predicting.add_argument("--json", action="store_true", help="print the summary as JSON")
    predicting.set_defaults(handler=_cmd_predict)
    scoring = commands.add_parser("metrics", help="every metric of a score file (ours, or bob.pad's CSV), the "
                                  "threshold fixed on a development file")
    scoring.add_argument("scores", metavar="SCORES.csv", help="the scores to evaluate (columns: docs/evaluation.md)")
    scoring.add_argument("--dev", default=None, metavar="DEV.csv", help="development scores that fix the threshold")
    scoring.add_argument("--threshold-from", dest="threshold_from", default="eer",
                         help="how the threshold is fixed on --dev (else on the scores themselves): eer, "
                              "min-hter, apcer=RATE or bpcer=RATE, e.g. apcer=0.05")
    scoring.add_argument("--fusion", choices=list(FUSIONS), default="mean",
                         help="frame-to-video fusion where the file has video_id")
    scoring.add_argument("--plots", default=None, metavar="DIR", help="also write ROC, DET and histograms there")
    scoring.add_argument("--json", action="store_true", help="print the metrics as JSON")
    scoring.set_defaults(handler=_cmd_metrics)
    gather = commands.add_parser("collect", help="mean ± std over seeds of finished runs")
    gather.add_argument("runs", nargs="+", help="run folders")
    gather.add_argument("--level", choices=["video", "frame"], default="video",
                        help="videos (frame scores fused) or frames")
    gather.add_argument("--csv", type=Path, default=None, help="also write the table as CSV")
    gather.set_defaults(handler=_cmd_collect)
    summary = commands.add_parser("summary", help="one line per finished run: its source-validation AUC beside the "
                                  "target's AUC and HTER at the source threshold, and where its files are")
    summary.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    summary.add_argument("--level", choices=["frame", "video"], default="frame",
                         help="frame scores, or videos (frame scores fused); a method whose own number is its "
                              "video branch's (ccdd-video) shows that")
    summary.add_argument("--json", action="store_true", help="print the rows as JSON")
    summary.set_defaults(handler=_cmd_summary)
    sweep = commands.add_parser("sweep", help="run a grid of runs as Luigi tasks (finished ones skipped, killed ones "
                                              "resumed), then its table")
    sweep.add_argument("sweep", help="a sweep file, or a shipped sweep's name (fas_train/configs/sweeps/)")
    sweep.add_argument("--workers", type=int, default=1, help="runs at once (Luigi workers)")
    sweep.add_argument("--scheduler", default=None, metavar="HOST:PORT",
                       help="Luigi's central scheduler (luigid), so that several machines share the sweep")
    sweep.add_argument("--print-commands", dest="print_commands", action="store_true",
                       help="print one train command per run (for a cluster's job arrays) and exit")
    sweep.set_defaults(handler=_cmd_sweep)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except TrainingStopped as err:
        print(f"training stopped: {err}", file=sys.stderr)
        return 3
    except Preempted as err:
        if err.lead:
            print(f"preempted: {err}", file=sys.stderr)
        return PREEMPTED_EXIT
    except WriteFailed as err:  # work was done and kept: not a refusal before work
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
