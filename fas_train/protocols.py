"""Protocols: which samples a run trains on, selects its checkpoint and threshold on, and tests on.

- Cross-domain protocols (fas_train/configs/protocols/*.yaml, :class:`Protocol`): source datasets and splits, a target
  dataset, and a holdout of source subjects for model selection, so the target is never looked at.
- Intra-dataset protocols (fas_train/configs/protocols/oulu/*.yaml, :class:`IntraProtocol`): OULU-NPU's protocols 1-4,
  whose train, development and test parts follow the dataset's rules (pipeline.datasets.oulu_protocols); the
  development part selects the checkpoint and fixes the threshold, as the protocols prescribe.

Both give :meth:`parts` (train, validation, test rows) and ``domains``: the sample column whose values are the
domains the meta-learning methods split (``dataset`` for cross-domain protocols; ``camera`` or ``session``
within one dataset)."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.yaml_files import read_yaml


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
    domains: str = "dataset"
    selection = "source validation (subjects held out of the source domains)"

    @property
    def group(self) -> str:
        """The name results are grouped under (one protocol; folds of one protocol share it)."""
        return self.name

    def parts(self, samples: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """(train, validation, target) rows of a build's sample table."""
        train, validation = holdout_by_subject(self.source_samples(samples), self.holdout_fraction, self.holdout_seed)
        return train, validation, self.target_samples(samples)

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


@dataclass(frozen=True)
class IntraProtocol:
    """One of OULU-NPU's protocols (and fold): its parts follow the dataset's rules by video name."""

    name: str
    family: str
    dataset: str
    number: str
    fold: int | None
    domains: str
    path: str
    variant: str = "official"
    selection = "development set (the protocol's own)"

    @property
    def sources(self) -> tuple:
        return (self.dataset,)

    @property
    def group(self) -> str:
        return f"{self.family} P{self.number}"

    def parts(self, samples: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
        """(train, development, test) rows: each part's split of the dataset, videos chosen by the rules."""
        from pipeline.datasets.oulu_protocols import members
        rows = samples[samples["dataset"] == self.dataset]
        names = rows["video_id"].str.rsplit("/", n=1).str[-1]
        out = []
        for part in ("train", "devel", "test"):
            chosen = rows[(rows["split"] == part).to_numpy() & names.isin(members(self.number, self.fold, part)).to_numpy()]
            if chosen.empty:
                raise ValueError(f"{self.path}: the build has no {self.dataset} samples in the {part} part of "
                                 f"{self.name}")
            out.append(chosen)
        return tuple(out)

    def target_samples(self, samples: pd.DataFrame) -> pd.DataFrame:
        """Rows the protocol tests on: its test part."""
        return self.parts(samples)[2]


DOMAIN_COLUMNS = ("dataset", "camera", "session")


CONFIGS = Path(__file__).resolve().parent / "configs"  # shipped with the package: protocols, sweeps, published


def bundled(kind: str, name_or_path: str | Path) -> Path:
    """A config file: an existing path, or the name of one shipped in ``fas_train/configs/<kind>/`` (with or
    without ``.yaml``; OULU-NPU's protocols are found by name too, e.g. ``oulu_p3_fold1``). A missing
    ``configs/<kind>/...`` path (where the shipped files were before they moved into the package, as older
    run.json files name them) is found by its name."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".yaml")
    legacy = path.parent == Path(".") or Path("configs", kind) in (path.parent, *path.parent.parents)
    found = sorted((CONFIGS / kind).rglob(f"{stem}.yaml")) if legacy else []
    if len(found) != 1:
        names = sorted(p.stem for p in (CONFIGS / kind).rglob("*.yaml"))
        raise FileNotFoundError(f"{name_or_path}: no such file, nor a shipped {kind[:-1]} config; shipped: "
                                f"{', '.join(names)}")
    return found[0]


def load_protocol(path: str | Path, variant: str | None = None):
    """Read a protocol config (a path, or the name of a shipped one: ``mico_OCI_to_M``); ``variant`` picks a
    split variant of a cross-domain protocol (default: the file's default_variant)."""
    path = bundled("protocols", path)
    raw = read_yaml(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a mapping of protocol settings, not {type(raw).__name__}")
    if "oulu_protocol" in raw:
        return _intra(raw, path, variant)
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


def _intra(raw: dict, path: Path, variant: str | None) -> IntraProtocol:
    from pipeline.datasets.oulu_protocols import folds
    try:
        number, fold, domains = str(raw["oulu_protocol"]), raw.get("fold"), raw.get("domains", "camera")
        if number not in "1234" or len(number) != 1 or fold not in folds(number):
            raise ValueError(f"{path}: OULU-NPU protocol {number!r} fold {fold!r} does not exist")
        if domains not in DOMAIN_COLUMNS:
            raise ValueError(f"{path}: domains must be one of {DOMAIN_COLUMNS}, not {domains!r}")
        if variant not in (None, "official"):
            raise ValueError(f"{path}: no split variant {variant!r}; has ['official']")
        return IntraProtocol(raw["protocol"], raw["family"], raw["dataset"], number, fold, domains, str(path))
    except KeyError as err:
        raise ValueError(f"{path}: missing key {err}") from None


def with_domains(rows: pd.DataFrame, column: str, values: list) -> pd.DataFrame:
    """``rows`` with a numeric ``domain`` column: the index of each row's ``column`` value in ``values`` (the
    dataset's own domain codes when ``column`` is ``dataset``)."""
    if column == "dataset":
        return rows
    codes = {v: i for i, v in enumerate(values)}
    return rows.assign(domain=rows[column].astype(str).map(codes).astype("int64"))


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
