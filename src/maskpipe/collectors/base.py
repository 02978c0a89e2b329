"""What a dataset collector returns: the source images of one dataset and the faces in each."""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from maskpipe.crop_geometry import Box
from maskpipe.imaging import is_image_file


@dataclass
class Face:
    index: int  # position in the source's annotation (stable across runs)
    label: str
    box: Box | None  # None = the whole image (class-folder datasets)
    box_frame: tuple[int, int] | None = None  # image size the box refers to (scaled to the real size)
    face_id: str = ""


@dataclass
class SourceImage:
    dataset: str
    path: Path
    source_image: str  # relative to the dataset folder, posix
    group: str  # faces with the same group always share a split
    faces: list[Face] = field(default_factory=list)


@dataclass
class Collected:
    sources: list[SourceImage] = field(default_factory=list)
    skips: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class DatasetDir:
    """One enabled dataset as the download stage left it, and what a collector may need."""

    name: str  # the key under `datasets:`
    root: Path  # data/raw/<name>
    spec: Mapping[str, Any]  # params datasets.<name>
    crop: Any  # crop_config.CropConfig (not imported: crop_config imports the collectors' own params)
    interim: Path  # data/interim (convert_mat's CSVs)


Collector = Callable[[DatasetDir], Collected]


def natural_key(text: str) -> tuple:
    """'img2' < 'img10'."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text))


def skip_row(source: str, dataset: str, reason: str, detail: str = "", box: Box | None = None) -> dict:
    """One row of skipped.csv (schemas.CROP_SKIP_COLUMNS)."""
    box_text = "" if box is None else ",".join(f"{v:g}" for v in box)
    return {"source": source, "dataset": dataset, "box": box_text, "reason": reason, "detail": detail}


def image_files(root: Path) -> list[Path]:
    return sorted(
        (p for p in root.rglob("*") if p.is_file() and is_image_file(p)),
        key=lambda p: natural_key(p.as_posix()),
    )


def image_index(root: Path) -> dict[str, Path]:
    """File name -> first image of that name under root (annotations name images by file name)."""
    index: dict[str, Path] = {}
    for p in image_files(root):
        index.setdefault(p.name, p)
    return index


def rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()
