"""Sweeps: a grid of training runs (methods with their options x protocols x split variants x seeds, shared
settings) run as Luigi tasks, then the table of their results.

Each run is a :class:`TrainRun` task, the trainer in a subprocess of its own whose output goes to the run folder's
``train.log``; its target is the folder's ``report.json``. A finished run is skipped, a killed one resumes from its
checkpoint (the trainer's own resume), a failed one is reported with its folder and log while the others go on.
:class:`Table` needs every run and writes ``table.md``, ``table.csv`` and ``table.png`` beside the runs. Luigi's
local scheduler runs ``--workers`` runs at once, each on a GPU of its own when several are visible; with a
central scheduler (``luigid``) several machines share one sweep over a shared filesystem, no code change.

A sweep file (``fas_train/configs/sweeps/*.yaml``, or any path)::

    name: mico_demo
    build: data_manifests/demo/builds/demo   # a build's manifest folder
    out: build/sweeps/mico_demo               # run folders: <out>/<label>/<protocol>[@variant]/seed<k>
    protocols: [mico_OCI_to_M, mico_OMI_to_C, mico_OCM_to_I, mico_ICM_to_O]
    variants: [null]                           # split variants; null: each protocol's default
    seeds: [0, 1, 2]
    settings: {steps: 60, eval_every: 20, per_class: 4, network: small, input_size: 64}
    methods: [erm, rfm, {label: rfm-first-order, method: rfm, options: [meta_gradient=first-order]}]
    level: video                               # the table's level: video, frame, or paper (each method's own)
    note: small networks, 60 steps             # printed under the table
"""
from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import subprocess
import sys
import threading
import time
import typing
from contextlib import contextmanager
from dataclasses import dataclass, fields
from functools import cached_property
from pathlib import Path

import luigi
from pydantic import TypeAdapter, ValidationError
from tqdm import tqdm

from pipeline.audit import find_manifest
from pipeline.yaml_files import read_yaml

from .methods import METHODS
from .protocols import bundled, load_protocol
from .settings import RunConfig, method_config

SWEEP_KEYS = {"name", "build", "out", "protocols", "variants", "seeds", "settings", "methods", "level", "note"}
RUN_FIXED = {"method", "build", "protocol", "out", "variant", "seed", "options", "quiet"}  # the grid's, not settings


@dataclass(frozen=True)
class RunSpec:
    """One run of a sweep: its id (``<label>/<protocol>[@variant]/seed<k>``, its folder under the sweep's
    ``out``), its table row label and column, and what the trainer is given."""

    run_id: str
    label: str  # the method's row in the table (a method, or a method with options)
    protocol: str  # as the sweep names it
    variant: str | None
    seed: int
    config: RunConfig

    @property
    def folder(self) -> Path:
        return Path(self.config.out)


@dataclass(frozen=True)
class Sweep:
    """A sweep file, its grid expanded."""

    name: str
    path: Path
    build: str
    out: Path
    runs: tuple  # RunSpec, in grid order
    level: str
    note: str


def load_sweep(name_or_path: str | Path) -> Sweep:
    """Read a sweep file (a path, or the name of a shipped one) and expand its grid; errors name the file."""
    path = bundled("sweeps", name_or_path)
    raw = read_yaml(path) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of sweep settings, not {type(raw).__name__}")
    where = str(path)
    unknown = sorted(set(raw) - SWEEP_KEYS)
    missing = sorted({"name", "build", "out", "protocols", "methods"} - set(raw))
    if unknown or missing:
        raise ValueError(f"{where}: unknown key(s) {unknown}, missing key(s) {missing}; keys: {sorted(SWEEP_KEYS)}")
    settings = dict(raw.get("settings") or {})
    allowed = {f.name for f in fields(RunConfig)} - RUN_FIXED
    if set(settings) - allowed:
        raise ValueError(f"{where}: settings {sorted(set(settings) - allowed)} are not trainer settings; "
                         f"allowed: {sorted(allowed)}")
    types = typing.get_type_hints(RunConfig)
    for name, value in settings.items():  # typed as the trainer's own settings: `steps: '60'` is refused
        try:
            TypeAdapter(types[name]).validate_python(value, strict=True)
        except ValidationError as err:
            raise ValueError(f"{where}: settings.{name}: {err.errors()[0]['msg']} (got {value!r})") from None
    level = raw.get("level", "video")
    if level not in ("video", "frame", "paper"):
        raise ValueError(f"{where}: level must be video, frame or paper (each method at its paper's), not {level!r}")
    out = Path(raw["out"]).resolve()  # relative paths: from the folder the sweep is started in
    build = str(Path(raw["build"]).resolve())
    runs, seen = [], set()
    for entry in raw["methods"]:
        entry = {"method": entry} if isinstance(entry, str) else dict(entry)
        label = str(entry.pop("label", entry.get("method")))
        method, options = entry.pop("method", None), tuple(entry.pop("options", ()))
        if entry or method not in METHODS or "/" in label or label in seen:
            raise ValueError(f"{where}: method entry {label!r}: needs a method of {sorted(METHODS)}, a label of its "
                             f"own without '/', and only label, method, options (got extra {sorted(entry)})")
        seen.add(label)
        try:  # an unknown or ill-typed option is refused before any run
            method_config(RunConfig(method=method, build=build, protocol="", out="", options=options))
        except ValueError as err:
            raise ValueError(f"{where}: method entry {label!r}: {err}") from None
        for protocol in raw["protocols"]:
            for variant in raw.get("variants") or [None]:
                load_protocol(protocol, variant)  # an unknown protocol or variant is refused before any run
                for seed in raw.get("seeds") or [0]:
                    run_id = f"{label}/{protocol}{f'@{variant}' if variant else ''}/seed{seed}"
                    config = RunConfig(method=method, build=build, protocol=protocol, out=str(out / run_id),
                                       variant=variant, seed=int(seed), options=options, quiet=True, **settings)
                    runs.append(RunSpec(run_id, label, protocol, variant, int(seed), config))
    return Sweep(raw["name"], path, build, out, tuple(runs), level, str(raw.get("note", "")))


def train_command(config: RunConfig) -> list[str]:
    """The ``fas_train train`` command line of a run (a flag where a setting differs from its default)."""
    args = [sys.executable, "-m", "fas_train", "train"]
    for f in fields(RunConfig):
        value, flag = getattr(config, f.name), "--" + f.name.replace("_", "-")
        if f.name == "options":
            args += [part for option in value for part in ("--option", option)]
        elif f.name == "verify":
            args += [] if value else ["--no-verify"]
        elif isinstance(value, bool):
            args += [flag] if value else []
        elif value is not None and value != f.default:
            args += [flag, str(value)]
    return args


class TrainRun(luigi.Task):
    """One run of a sweep; done when its report covers the sweep's number of steps."""

    sweep = luigi.Parameter(description="sweep file")
    run_id = luigi.Parameter(description="<label>/<protocol>[@variant]/seed<k>")
    threads = luigi.IntParameter(default=0, significant=False,
                                 description="CPU threads of the run (0: the trainer's default)")

    @cached_property
    def spec(self) -> RunSpec:
        return next(r for r in load_sweep(self.sweep).runs if r.run_id == self.run_id)

    def output(self):
        return luigi.LocalTarget(str(self.spec.folder / "report.json"))

    def complete(self) -> bool:
        report = self.spec.folder / "report.json"
        return report.is_file() and json.loads(report.read_text()).get("steps") == self.spec.config.steps

    def run(self):
        folder = self.spec.folder
        folder.mkdir(parents=True, exist_ok=True)
        log = folder / "train.log"
        with gpu_slot(load_sweep(self.sweep).out / ".gpu-locks") as gpu, open(log, "a") as sink:
            env = dict(os.environ)
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
            if self.threads:  # runs side by side share the cores instead of each taking all of them
                env.setdefault("OMP_NUM_THREADS", str(self.threads))
            sink.write(f"$ {shlex.join(train_command(self.spec.config))}\n")
            sink.flush()
            code = subprocess.run(train_command(self.spec.config), stdout=sink, stderr=subprocess.STDOUT,
                                  env=env).returncode
        if code:
            tail = log.read_text().splitlines()[-5:]
            raise RuntimeError(f"run {self.run_id} failed (exit {code}); folder {folder}, log {log}:\n"
                               + "\n".join(f"  {line}" for line in tail))


class Table(luigi.Task):
    """The sweep's table, once every run has its report."""

    sweep = luigi.Parameter(description="sweep file")
    threads = luigi.IntParameter(default=0, significant=False, description="CPU threads per run")

    def requires(self):
        return [TrainRun(sweep=self.sweep, run_id=r.run_id, threads=self.threads) for r in load_sweep(self.sweep).runs]

    def output(self):
        return luigi.LocalTarget(str(load_sweep(self.sweep).out / "table.json"))

    def complete(self) -> bool:
        """Written, and from the reports as they are now (a run extended or redone makes it stale)."""
        from .table import reports_digest
        sweep = load_sweep(self.sweep)
        path = sweep.out / "table.json"
        return path.is_file() and json.loads(path.read_text()).get("reports") == reports_digest(sweep.runs)

    def run(self):
        from .table import write_table
        write_table(load_sweep(self.sweep))


def visible_gpus() -> list[str]:
    """The GPUs a run may be pinned to, as CUDA_VISIBLE_DEVICES values."""
    import torch
    count = torch.cuda.device_count()
    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    ids = [i.strip() for i in listed.split(",") if i.strip()] if listed else [str(i) for i in range(count)]
    return ids[:count]


@contextmanager
def gpu_slot(lock_dir: Path, gpus: list[str] | None = None, poll: float = 1.0):
    """A GPU of this machine no other run of the sweep holds (a lock file per GPU and host), or None when
    fewer than two are visible (then every run sees what the sweep sees)."""
    gpus = visible_gpus() if gpus is None else gpus
    if len(gpus) < 2:
        yield None
        return
    lock_dir.mkdir(parents=True, exist_ok=True)
    while True:
        for gpu in gpus:
            handle = open(lock_dir / f"{socket.gethostname()}-gpu{gpu}.lock", "w")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.close()
                continue
            try:
                yield gpu
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)
                handle.close()
            return
        time.sleep(poll)


def run_sweep(name_or_path: str, workers: int = 1, scheduler: str | None = None) -> int:
    """Run a sweep to its table; return 0, or 1 when runs failed (listed, with a partial table)."""
    from .table import write_table
    sweep = load_sweep(name_or_path)
    path = str(sweep.path.resolve())
    find_manifest(sweep.build)  # a missing build is refused before any run starts
    options = {"workers": workers, "detailed_summary": True}
    if scheduler:
        host, port = scheduler_address(scheduler)
        options.update(local_scheduler=False, scheduler_host=host, scheduler_port=port)
    else:
        options["local_scheduler"] = True
    threads = max(1, (os.cpu_count() or 1) // workers)  # on the CPU; a pinned GPU run is not limited by it
    with sweep_progress(sweep, path):
        luigi.build([Table(sweep=path, threads=threads)], log_level="WARNING", **options)
    failed = [r for r in sweep.runs if not TrainRun(sweep=path, run_id=r.run_id).complete()]
    print(f"sweep {sweep.name}: {len(sweep.runs) - len(failed)} of {len(sweep.runs)} runs finished")
    if failed:
        for r in failed:
            print(f"  NOT FINISHED {r.run_id}: folder {r.folder}, log {r.folder / 'train.log'}")
        if len(failed) < len(sweep.runs):
            table = write_table(sweep, partial=True)
            print(f"partial table (finished runs only): {table}")
        return 1
    print((sweep.out / "table.md").read_text())
    print(f"table: {sweep.out / 'table.md'}, {sweep.out / 'table.csv'}, {sweep.out / 'table.png'}")
    return 0


def scheduler_address(scheduler: str) -> tuple[str, int]:
    """(host, port) of ``--scheduler HOST:PORT``, refused (ValueError) unless a server answers there."""
    host, _, port = scheduler.rpartition(":")
    if not port.isdigit():
        raise ValueError(f"--scheduler {scheduler!r}: expected HOST:PORT (Luigi's central scheduler, luigid)")
    host = host or "localhost"
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise ValueError(f"--scheduler {scheduler}: nothing answers there ({err.strerror or err}); start luigid "
                         f"on that machine (luigid --port {port}), or leave --scheduler out for a local one") from None
    return host, int(port)


@contextmanager
def sweep_progress(sweep: Sweep, path: str, every: float = 5.0):
    """A progress bar (rate and ETA) of the sweep's finished runs, wherever Luigi runs them."""
    tasks = [TrainRun(sweep=path, run_id=r.run_id) for r in sweep.runs]
    done = threading.Event()
    with tqdm(total=len(tasks), initial=sum(t.complete() for t in tasks), unit="run", desc=f"sweep {sweep.name}",
              dynamic_ncols=True) as bar:
        def watch():
            while not done.wait(every):
                bar.update(sum(t.complete() for t in tasks) - bar.n)
        thread = threading.Thread(target=watch, daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()
            bar.update(sum(t.complete() for t in tasks) - bar.n)


def print_commands(name_or_path: str) -> None:
    """One shell command per run (for a cluster's own job arrays)."""
    for r in load_sweep(name_or_path).runs:
        print(shlex.join(train_command(r.config)))
