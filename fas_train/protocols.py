"""Cross-domain protocols (configs/protocols/*.yaml): which datasets and splits are trained on and tested,
and the source-subject holdout that selects checkpoints and thresholds without looking at the target."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import yaml


@dataclass(frozen=True)
class Protocol:
    name: str
    family: str
    sources: tuple
    target: str
    variant: str
    splits: dict  # dataset -> tuple of splits used
    holdout_fraction: float
    holdout_seed: int
    path: str

    def source_samples(self, samples: pd.DataFrame) -> pd.DataFrame:
        """Rows of a build's sample table that the protocol trains on (before the validation holdout)."""
        return self._select(samples, self.sources)

    def target_samples(self, samples: pd.DataFrame) -> pd.DataFrame:
        """Rows the protocol tests on."""
        return self._select(samples, (self.target,))

    def _select(self, samples, datasets):
        missing = [d for d in datasets if not (samples["dataset"] == d).any()]
        if missing:
            raise ValueError(f"{self.path}: the build has no samples of {missing} (protocol {self.name})")
        keep = np.zeros(len(samples), bool)
        for d in datasets:
            keep |= (samples["dataset"] == d).to_numpy() & samples["split"].isin(self.splits[d]).to_numpy()
        return samples[keep]


def load_protocol(path: str | Path, variant: str | None = None) -> Protocol:
    """Read a protocol config; ``variant`` picks a split variant (default: the file's default_variant)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: protocol config not found")
    raw = yaml.safe_load(path.read_text())
    try:
        variant = variant or raw["default_variant"]
        if variant not in raw["split_variants"]:
            raise ValueError(f"{path}: no split variant {variant!r}; has {sorted(raw['split_variants'])}")
        splits = {d: tuple(s) for d, s in raw["split_variants"][variant].items()}
        sources, target = tuple(raw["sources"]), raw["target"]
        if target in sources:
            raise ValueError(f"{path}: the target {target} is also a source")
        for d in sources + (target,):
            if d not in splits:
                raise ValueError(f"{path}: variant {variant!r} gives no splits for {d}")
        validation = raw.get("validation", {})
        if validation.get("holdout", "subject") != "subject":
            raise ValueError(f"{path}: validation.holdout must be 'subject'")
        return Protocol(raw["protocol"], raw["family"], sources, target, variant, splits,
                        float(validation.get("fraction", 0.2)), int(validation.get("seed", 0)), str(path))
    except KeyError as err:
        raise ValueError(f"{path}: missing key {err}") from None


def holdout_by_subject(samples: pd.DataFrame, fraction: float, seed: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Split source samples into (train, validation) by whole subjects, per dataset: about ``fraction`` of each
    dataset's subjects (at least one, never all) go to validation, drawn deterministically from ``seed``."""
    validation = np.zeros(len(samples), bool)
    for dataset, rows in samples.groupby("dataset", sort=True):
        subjects = np.array(sorted(rows["subject"].unique()))
        if len(subjects) < 2:
            raise ValueError(f"{dataset}: one subject only, nothing to hold out for validation")
        count = min(len(subjects) - 1, max(1, round(fraction * len(subjects))))
        rng = np.random.default_rng([seed, sum(map(ord, dataset))])
        chosen = set(rng.choice(subjects, count, replace=False))
        validation |= (samples["dataset"] == dataset).to_numpy() & samples["subject"].isin(chosen).to_numpy()
    return samples[~validation], samples[validation]
