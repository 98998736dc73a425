"""A training run's settings (:class:`RunConfig`) and the method they make: the method's config with the run's
``name=value`` options applied, its paper defaults filled in, and the checks that refuse a bad value before
any work starts."""
from __future__ import annotations

import typing
from dataclasses import dataclass, fields, replace

import pandas as pd
import torch
import yaml
from pydantic import TypeAdapter, ValidationError

from pipeline.yaml_files import parse_yaml

from .methods import METHODS
from .metrics import FUSIONS


MIN_INPUT_SIZE = 32  # ResNets reduce their input 32-fold; the depth networks 8-fold to maps of at least 4 x 4


@dataclass(frozen=True)
class RunConfig:
    method: str
    build: str  # a build's manifest folder
    protocol: str  # a protocol YAML
    out: str
    variant: str | None = None
    steps: int = 1000
    eval_every: int = 100
    checkpoint_every: int = 50  # steps between checkpoints besides those of evaluations (preemption loses less)
    per_class: int | None = None  # None: the method's default (its paper's batch)
    network: str = "paper"
    input_size: int | None = None  # None: the method's paper size (else the stored crop); 0: the stored crop
    #                                size; else images are resized to it on the device
    seed: int = 0
    workers: int = 0  # DataLoader processes; 0: read in this process (threads, prefetched)
    device: str = "auto"
    select_on_target: bool = False
    options: tuple = ()  # "name=value" overrides of the method's config (ablations, hyper-parameters)
    quiet: bool = False  # no progress bar
    verify: bool = True  # check the build against its manifest before reading it (--no-verify: skip)
    domains: str | None = None  # the sample column whose values are the domains; None: the protocol's
    precision: str = "auto"  # "auto" (bf16 autocast on CUDA, fp32 elsewhere), "bf16" or "fp32"
    channels_last: str = "auto"  # "auto" (on CUDA), "on" or "off"
    fusion: str = "mean"  # how a video's frame scores make its score: mean, median, max or min
    fta_rejected: bool = False  # count target presentations without a usable face as rejected (ISO/IEC 30107-3)

    def __post_init__(self):
        for name in ("steps", "eval_every", "checkpoint_every", "per_class", "input_size"):
            value, least = getattr(self, name), 0 if name == "input_size" else 1
            if value is not None and value < least:
                raise ValueError(f"--{name.replace('_', '-')} {value}: must be at least {least}")
        if self.input_size and self.input_size < MIN_INPUT_SIZE:
            raise ValueError(f"--input-size {self.input_size}: the networks need at least {MIN_INPUT_SIZE} pixels "
                             f"(their feature maps shrink by up to 32; 0: the stored crop size)")
        if self.precision not in ("auto", "bf16", "fp32"):
            raise ValueError(f"precision {self.precision!r}: use auto, bf16 or fp32")
        if self.channels_last not in ("auto", "on", "off"):
            raise ValueError(f"channels_last {self.channels_last!r}: use auto, on or off")
        if self.fusion not in FUSIONS:
            raise ValueError(f"--fusion {self.fusion!r}: use one of {list(FUSIONS)}")


def method_config(cfg: RunConfig):
    """The method's config dataclass with ``cfg.options`` ("name=value") applied. Each value is read as YAML
    and then as its field's type (``lr=1e-4`` is a float, although YAML 1.1 reads it as text); an unknown or
    ill-typed option is refused naming the field, its type and the method's options."""
    if cfg.method not in METHODS:
        raise ValueError(f"unknown method {cfg.method!r}; known: {sorted(METHODS)}")
    cls, config_cls = METHODS[cfg.method]
    types = typing.get_type_hints(config_cls)
    known = ", ".join(f"{f.name} ({type_name(types[f.name])}, default {f.default!r})" for f in fields(config_cls))
    overrides = {}
    for option in cfg.options:
        name, sep, value = option.partition("=")
        if not sep or name not in types:
            raise ValueError(f"option {option!r}: expected name=value; {cfg.method}'s options: {known}")
        try:
            overrides[name] = TypeAdapter(types[name]).validate_python(parse_yaml(value))
        except (ValidationError, yaml.YAMLError) as err:
            reason = err.errors()[0]["msg"] if isinstance(err, ValidationError) else "not a YAML value"
            raise ValueError(f"option {option!r}: {name} is {type_name(types[name])}: {reason}; "
                             f"{cfg.method}'s options: {known}") from None
    return cls, config_cls(**overrides)


def type_name(annotation) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def build_method(cfg: RunConfig, domains: list):
    cls, config = method_config(cfg)
    torch.manual_seed(cfg.seed)
    return cls.create(config, cfg.network, sorted(domains), cfg.seed)


def resolved(cfg: RunConfig, method) -> RunConfig:
    """``cfg`` with the method's defaults filled in: its paper's batch and input size."""
    return replace(cfg, per_class=cfg.per_class or method.config.per_class,
                   input_size=method.input_size if cfg.input_size is None else cfg.input_size)


def check_sizes(cfg: RunConfig, method, manifest: dict, train_rows: pd.DataFrame, protocol) -> None:
    """Refuse, before any work, a ``per_class`` larger than the smallest (domain, class) group of the
    protocol's training data (a batch would hold its samples several times over, and a huge count exhausts
    memory building one batch) and stored crops smaller than the networks need."""
    column = cfg.domains or protocol.domains
    groups = train_rows.groupby([column, "label"]).size()
    if len(groups) and cfg.per_class > groups.min():
        counts = ", ".join(f"{domain}/{label} {n}" for (domain, label), n in groups.items())
        raise ValueError(f"--per-class {cfg.per_class}: more samples per (domain, class) than the smallest group "
                         f"of {protocol.name}'s training data holds ({groups.min()}; {counts}); use --per-class "
                         f"{groups.min()} or less")
    stored = manifest["config"]["face"]["size"]
    if not cfg.input_size and stored < MIN_INPUT_SIZE:
        raise ValueError(f"the build's crops are {stored} pixels, the networks need at least {MIN_INPUT_SIZE}: "
                         f"give --input-size {MIN_INPUT_SIZE} or more (the crops are resized up)")
