"""format: mafa - MAFA images with the faces of convert_mat's CSVs, labelled by crop.mafa.

Test faces carry `face_type` (1 masked, 2 unmasked, 3 invalid); train faces are all occluded
faces, labelled `train_label` when their occluder type is kept (1 simple, 2 complex;
3 = human body, e.g. a hand, is not a mask).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from maskpipe.collectors.base import Collected, DatasetDir, Face, SourceImage, image_index, rel, skip_row
from maskpipe.labels import WITH_MASK, WITHOUT_MASK, normalize_label
from maskpipe.settings import ConfigError, Section, option

MAFA_FACE_TYPES = {"masked": 1, "unmasked": 2, "invalid": 3}  # readme-test.txt
MAFA_OCCLUDER_TYPES = {"simple": 1, "complex": 2, "human_body": 3}  # readme-train.txt

Policy = tuple[dict[int, str], str, set[int]]


def _label(value: str, where: str) -> str:
    try:
        return normalize_label(value)
    except ValueError as exc:
        raise ConfigError(f"params.yaml: {where}: {exc}") from None


@dataclass(frozen=True)
class MafaConfig(Section):
    """params crop.mafa: which MAFA faces become which label (null = left out)."""

    test_face_types: dict[str, str | None] = option(
        {"masked": WITH_MASK, "unmasked": WITHOUT_MASK, "invalid": None}
    )
    train_label: str = WITH_MASK
    train_occluder_types: list[str] = option(["simple", "complex"], choices=MAFA_OCCLUDER_TYPES)

    def __post_init__(self) -> None:
        unknown = [k for k in self.test_face_types if k not in MAFA_FACE_TYPES]
        if unknown:
            raise ConfigError(
                f"params.yaml: crop.mafa.test_face_types: unknown name(s) {', '.join(map(str, unknown))};"
                f" known: {', '.join(MAFA_FACE_TYPES)}"
            )
        for key, value in self.test_face_types.items():
            if value:
                _label(value, f"crop.mafa.test_face_types.{key}")
        _label(self.train_label, "crop.mafa.train_label")

    def policy(self) -> Policy:
        """(test face_type code -> our label, train label, kept train occluder type codes)."""
        test_map = {MAFA_FACE_TYPES[k]: normalize_label(v) for k, v in self.test_face_types.items() if v}
        occluders = {MAFA_OCCLUDER_TYPES[n] for n in self.train_occluder_types}
        return test_map, normalize_label(self.train_label), occluders


def mafa_face_label(split: str, row: dict, policy: Policy) -> tuple[str | None, str]:
    """Our label for one MAFA face, or (None, why) when the label policy leaves it out."""
    test_map, train_label, occluders = policy
    if split == "test":
        code = row.get("face_type")
        if pd.isna(code) or int(code) not in test_map:
            return None, f"test face_type {code} not mapped by crop.mafa.test_face_types"
        return test_map[int(code)], ""
    code = row.get("occluder_type")
    if pd.isna(code) or int(code) not in occluders:
        return None, f"train occluder_type {code} not in crop.mafa.train_occluder_types"
    return train_label, ""


def collect_mafa(name: str, root: Path, interim: Path, mafa: MafaConfig, images_enabled: bool) -> Collected:
    out = Collected()
    if not images_enabled:
        out.notes.append(f"{name}: labels only (datasets.{name}.images is false); no MAFA crops")
        return out
    images = image_index(root)
    if not images:
        out.notes.append(f"{name}: datasets.{name}.images is true but {root} holds no images; no MAFA crops")
        return out
    policy = mafa.policy()
    for split in ("train", "test"):
        csv = interim / f"mafa_{split}.csv"
        if not csv.exists():
            out.notes.append(f"{name}: {csv} missing (run convert_mat); no {split} crops")
            continue
        by_image: dict[str, list[dict[str, Any]]] = {}
        for row in pd.read_csv(csv).to_dict("records"):
            by_image.setdefault(str(row["image"]), []).append(row)
        for image_name, rows in by_image.items():
            path = images.get(image_name)
            if path is None:
                out.skips.append(
                    skip_row(image_name, name, "image_missing", f"{len(rows)} faces in {csv.name}")
                )
                continue
            source = SourceImage(name, path, rel(path, root), group=rel(path, root))
            for row in rows:
                x, y, w, h = (float(row[k]) for k in ("face_x", "face_y", "face_w", "face_h"))
                box = (x, y, x + w, y + h)
                label, why = mafa_face_label(split, row, policy)
                if label is None:
                    out.skips.append(skip_row(source.source_image, name, "label_excluded", why, box))
                    continue
                source.faces.append(Face(int(row["face_index"]), label, box))
            if source.faces:
                out.sources.append(source)
    return out


def collect(ds: DatasetDir) -> Collected:
    return collect_mafa(ds.name, ds.root, ds.interim, ds.crop.mafa, bool(ds.spec.get("images", False)))
