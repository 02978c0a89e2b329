"""dlib's face detector and 68-point landmark model, loaded once per process.

Why dlib: `dlib-bin` is a prebuilt wheel and `face-recognition-models` ships the
iBUG 68-point predictor, so both work offline. We locate the model file without
importing `face_recognition_models` (its __init__ needs `pkg_resources`, which
recent setuptools no longer ships).
"""

from __future__ import annotations

import functools
import importlib.util
from pathlib import Path


class DlibUnavailable(RuntimeError):
    pass


def _models_dir() -> Path:
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise DlibUnavailable(
            "face-recognition-models is not installed: `pip install face-recognition-models`"
        )
    return Path(list(spec.submodule_search_locations)[0]) / "models"


def predictor_path() -> Path:
    path = _models_dir() / "shape_predictor_68_face_landmarks.dat"
    if not path.exists():
        raise DlibUnavailable(f"{path}: 68-point landmark model missing from face-recognition-models")
    return path


@functools.lru_cache(maxsize=1)
def face_detector():
    """dlib's HOG + linear SVM frontal face detector."""
    import dlib

    return dlib.get_frontal_face_detector()


@functools.lru_cache(maxsize=1)
def shape_predictor():
    import dlib

    return dlib.shape_predictor(str(predictor_path()))
