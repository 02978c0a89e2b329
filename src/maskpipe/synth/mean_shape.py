"""Mean 68-point face shapes relative to the face box (the "box" landmark fallback).

Each point is (x, y) as a fraction of the face box width / height from its top-left
corner: the per-point median over faces whose dlib landmarks passed every check. Box
conventions differ between datasets (VOC boxes are tight, folder images are the whole
photo, LFW uses one fixed box), so there is one shape per dataset and a pooled default.
The numbers are data, in mean_shapes.json beside this file; refit them from a crop index with
``python scripts/fit_mean_shape.py data/crops/index.csv``.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np

DEFAULT = "default"
DETECTOR_BOX = "dlib_detector"  # relative to dlib's HOG detection box instead of a dataset box
SHAPES_FILE = Path(__file__).with_name("mean_shapes.json")


@lru_cache(maxsize=1)
def mean_shapes() -> dict[str, np.ndarray]:
    """name -> (68, 2) float64 array, from mean_shapes.json."""
    doc = json.loads(SHAPES_FILE.read_text(encoding="utf-8"))
    shapes = {name: np.asarray(entry["points"], dtype=np.float64) for name, entry in doc.items()}
    for name, shape in shapes.items():
        if shape.shape != (68, 2):
            raise ValueError(f"{SHAPES_FILE}: shape {name!r} has {shape.shape}, expected (68, 2)")
    if DEFAULT not in shapes:
        raise ValueError(f"{SHAPES_FILE}: no {DEFAULT!r} shape")
    return shapes


def mean_shape(dataset: str | None = None) -> np.ndarray:
    shapes = mean_shapes()
    return shapes.get(dataset or DEFAULT, shapes[DEFAULT]).copy()
