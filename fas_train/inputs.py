"""The data of a run: its build checked against the manifest, the protocol's train, validation and target parts
with the protocol's domains, read with the channels the method uses."""
from __future__ import annotations

from pipeline.audit import verify_for_training

from .data import ShardDataset, load_build
from .protocols import DOMAIN_COLUMNS, load_protocol, with_domains
from .settings import RunConfig, method_config


def run_data(cfg: RunConfig):
    """(manifest, protocol, channels, [(rows, dataset) of train, validation, target]): the protocol's
    parts of the build (source-subject holdout, or an intra-dataset protocol's development part), with the
    protocol's domains, read with the channels the method uses."""
    manifest, samples = load_build(cfg.build)
    protocol = load_protocol(cfg.protocol, cfg.variant)
    column = cfg.domains or protocol.domains
    if column not in DOMAIN_COLUMNS:
        raise ValueError(f"--domains {column!r}: use one of {list(DOMAIN_COLUMNS)}")
    values = sorted(samples[column].astype(str).unique())
    method_cls, method_cfg = method_config(cfg)
    channels = method_cls.channels(method_cfg)
    parts = [(rows, ShardDataset(manifest["shard_dir"], rows, channels))
             for rows in (with_domains(r, column, values) for r in protocol.parts(samples))]
    return manifest, protocol, channels, parts


def check_build(cfg: RunConfig) -> str:
    """Refuse a build that fails its audit (tables, manifest content, shard sizes and sha256, cached); say how
    it was checked."""
    if not cfg.verify:
        return "skipped (--no-verify)"
    return verify_for_training(cfg.build)
