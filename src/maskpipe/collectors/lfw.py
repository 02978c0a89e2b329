"""format: lfw - centred, unmasked face photos in one folder per person (crop.lfw_box)."""

from __future__ import annotations

from pathlib import Path

from maskpipe.collectors.base import Collected, DatasetDir, Face, SourceImage, image_files, rel
from maskpipe.crop_geometry import Box
from maskpipe.labels import WITHOUT_MASK

LFW_FRAME = (250, 250)  # the size of an LFW photo; crop.lfw_box is given in it (scaled to other sizes)


def collect_lfw(name: str, root: Path, lfw_box: Box, frame: tuple[int, int] = LFW_FRAME) -> Collected:
    """LFW photos are centred; every photo gets the same face box. One person = one group."""
    out = Collected()
    for path in image_files(root):
        rel_path = rel(path, root)
        person = Path(rel_path).parts[0] if len(Path(rel_path).parts) > 1 else Path(rel_path).stem
        out.sources.append(
            SourceImage(
                name,
                path,
                rel_path,
                group=f"person:{person}",
                faces=[Face(0, WITHOUT_MASK, tuple(lfw_box), frame)],
            )
        )
    return out


def collect(ds: DatasetDir) -> Collected:
    return collect_lfw(ds.name, ds.root, ds.crop.lfw_box)
