#!/usr/bin/env python3
"""Fit the mean 68-point face shapes of the "box" landmark fallback and write them as data.

    python scripts/fit_mean_shape.py data/crops/index.csv            # writes src/maskpipe/synth/mean_shapes.json

For every unmasked face of the crop index whose dlib landmarks passed every check, the points
are taken relative to the face box (x, y as fractions of its width / height from its top-left
corner); the per-point median is the shape. One shape per dataset with at least 20 such faces,
a pooled "default", and "dlib_detector" (relative to dlib's HOG box, for detector boxes).
Values are rounded to 3 decimals (0.1 % of a box side, far below landmark noise), so a refit
on the same crops gives the same file. Review the diff before committing it: the synthesize
stage's output depends on these numbers.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from maskpipe.synth.mean_shape import DEFAULT, DETECTOR_BOX, SHAPES_FILE

MIN_FACES = 20  # fewer faces give a noisy median; the default shape covers such a dataset
DECIMALS = 3


def fit_mean_shape(samples) -> np.ndarray:
    """Median box-relative shape of ``samples``: iterable of (points (68, 2), face rect)."""
    rel = []
    for points, (x0, y0, x1, y1) in samples:
        rel.append(np.column_stack([(points[:, 0] - x0) / (x1 - x0), (points[:, 1] - y0) / (y1 - y0)]))
    if not rel:
        raise ValueError("no faces with landmarks to fit a mean shape on")
    return np.median(np.stack(rel), axis=0)


def fit_from_samples(by_dataset: dict[str, list]) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    shapes = {DEFAULT: fit_mean_shape([s for group in by_dataset.values() for s in group])}
    counts = {DEFAULT: sum(len(group) for group in by_dataset.values())}
    for name, group in sorted(by_dataset.items()):
        if len(group) >= MIN_FACES:
            shapes[name] = fit_mean_shape(group)
            counts[name] = len(group)
    return shapes, counts


def shapes_document(shapes: dict[str, np.ndarray], counts: dict[str, int]) -> dict:
    """The JSON document mean_shape.py reads: name -> {faces, points [[x, y] x 68]}."""
    return {
        name: {
            "faces": int(counts[name]),
            "points": [[round(float(x), DECIMALS), round(float(y), DECIMALS)] for x, y in shape],
        }
        for name, shape in shapes.items()
    }


def write_shapes(shapes: dict[str, np.ndarray], counts: dict[str, int], path: Path) -> None:
    doc = shapes_document(shapes, counts)
    lines = ["{"]
    for i, (name, entry) in enumerate(doc.items()):  # one point per line: reviewable diffs
        points = ",\n".join(f"    {json.dumps(p)}" for p in entry["points"])
        comma = "," if i < len(doc) - 1 else ""
        lines.append(
            f'  {json.dumps(name)}: {{"faces": {entry["faces"]}, "points": [\n{points}\n  ]}}{comma}'
        )
    lines.append("}")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def fit_from_index(index_csv: Path) -> tuple[dict[str, np.ndarray], dict[str, int]]:
    from maskpipe.synth.landmarks import DLIB68, find_landmarks
    from maskpipe.synth.synthesize import iter_source_faces, load_crop_face

    by_dataset: dict[str, list] = {}
    by_detection: list = []
    for row in iter_source_faces(index_csv):
        crop = load_crop_face(row)
        found = find_landmarks(crop.image, crop.rect, dataset=row["dataset"])
        if found.method == DLIB68:
            by_dataset.setdefault(row["dataset"], []).append((found.points, crop.rect))
            if found.detection is not None:
                by_detection.append((found.points, found.detection))
    shapes, counts = fit_from_samples(by_dataset)
    shapes[DETECTOR_BOX] = fit_mean_shape(by_detection)
    counts[DETECTOR_BOX] = len(by_detection)
    return shapes, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("index_csv", type=Path, help="data/crops/index.csv (crop_path relative to the cwd)")
    parser.add_argument("--out", type=Path, default=SHAPES_FILE, help="the JSON file to write")
    args = parser.parse_args()
    shapes, counts = fit_from_index(args.index_csv)
    write_shapes(shapes, counts, args.out)
    print(f"wrote {args.out}: " + ", ".join(f"{k} ({counts[k]} faces)" for k in shapes))


if __name__ == "__main__":
    main()
