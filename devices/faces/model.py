"""dlib's face detector, landmark predictors and ResNet embedding, loaded once per process.

The model files come with the `face-recognition-models` package (installed from the
registry, read from its directory; nothing is downloaded at run time):

- detection: dlib's HOG + linear SVM frontal face detector (built into dlib);
- landmarks: the 68-point shape predictor (iBUG 300-W landmarks: pose, eyes, mouth) and the
  5-point one (the alignment the embedding network was trained with);
- embedding: `dlib_face_recognition_resnet_model_v1` (ResNet-29, 128 floats; 99.38 % on
  LFW as published by dlib).
"""

from __future__ import annotations

import functools
import importlib.util
import os
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

DETECT_SIDE = 400

MODEL_FILES = {
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "embedding": "dlib_face_recognition_resnet_model_v1.dat",
}


def models_dir() -> str:
    """The directory of the model files `face-recognition-models` installs.

    Located without importing the package (its `__init__` needs `pkg_resources`).
    """
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("the face-recognition-models package is not installed")
    return os.path.join(next(iter(spec.submodule_search_locations)), "models")


@dataclass(frozen=True, slots=True)
class DetectedFace:
    """One face found in an image: its box (left, top, right, bottom) and 68 landmarks."""

    box: tuple[int, int, int, int]
    landmarks: npt.NDArray[np.float64]  # (68, 2) x, y in pixels
    rect: Any  # the dlib rectangle, for the embedding


class FaceModel:
    """The loaded dlib models. Build one per process with `face_model()`.

    dlib's detector, shape predictors and network are not safe to call from two threads
    at once (the network keeps its layer outputs in the object: concurrent enrolments in
    the API's thread pool corrupted the heap and killed the process), so every call holds
    the model's lock. Parallelism comes from processes (the check-in verifier's pool).
    """

    def __init__(self, directory: str | None = None) -> None:
        import dlib  # a compiled extension: imported only where faces are analysed

        d = directory or models_dir()
        self._dlib = dlib
        self.detector = dlib.get_frontal_face_detector()
        self.landmarks68 = dlib.shape_predictor(os.path.join(d, MODEL_FILES["landmarks68"]))
        self.landmarks5 = dlib.shape_predictor(os.path.join(d, MODEL_FILES["landmarks5"]))
        self.embedder = dlib.face_recognition_model_v1(os.path.join(d, MODEL_FILES["embedding"]))
        self._busy = threading.Lock()

    def detect(self, rgb: npt.NDArray[np.uint8]) -> list[DetectedFace]:
        """Faces in an RGB image (H, W, 3), each with its 68 landmarks.

        The detector runs on a copy at most `DETECT_SIDE` px on its longer side (a phone's
        face fills much of the frame; this is most of the saving on a 640 px frame), and
        upsampled once when smaller than that, so that faces of about 40 px are found; the
        landmarks are placed on the full image.
        """
        h, w = rgb.shape[:2]
        scale = min(1.0, DETECT_SIDE / max(h, w))
        small = rgb if scale == 1.0 else np.asarray(
            Image.fromarray(rgb).resize((round(w * scale), round(h * scale)),
                                        Image.Resampling.BILINEAR))
        upsample = 1 if max(h, w) < DETECT_SIDE else 0
        with self._busy:
            return self._detect(rgb, small, scale, upsample)

    def _detect(self, rgb: npt.NDArray[np.uint8], small: npt.NDArray[np.uint8], scale: float,
                upsample: int) -> list[DetectedFace]:
        out = []
        for r in self.detector(small, upsample):
            if scale != 1.0:
                r = self._dlib.rectangle(round(r.left() / scale), round(r.top() / scale),
                                         round(r.right() / scale), round(r.bottom() / scale))
            shape = self.landmarks68(rgb, r)
            pts = np.array([(p.x, p.y) for p in shape.parts()], dtype=np.float64)
            out.append(DetectedFace((r.left(), r.top(), r.right(), r.bottom()), pts, r))
        return out

    def embed(self, rgb: npt.NDArray[np.uint8], face: DetectedFace) -> npt.NDArray[np.float32]:
        """The 128-float embedding of a detected face (aligned on its 5 landmarks)."""
        with self._busy:
            shape = self.landmarks5(rgb, face.rect)
            d = self.embedder.compute_face_descriptor(rgb, shape)
        return np.asarray(d, dtype=np.float32)


_lock = threading.Lock()


@functools.cache
def _cached() -> FaceModel:
    return FaceModel()


def face_model() -> FaceModel:
    """This process's model (loaded on first use, about 2 s and 130 MB)."""
    with _lock:
        return _cached()
