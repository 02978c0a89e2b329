"""format: folders - one image per face, labelled by the nearest enclosing class folder."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from maskpipe.collectors.base import Collected, DatasetDir, Face, SourceImage, image_files, rel, skip_row
from maskpipe.labels import normalize_label


def folder_label(rel_parts: Iterable[str]) -> str | None:
    """The label of the nearest enclosing folder that names a class (Train/WithMask/x.png -> with_mask)."""
    for part in reversed(list(rel_parts)):
        try:
            return normalize_label(part)
        except ValueError:
            continue
    return None


def collect_folders(name: str, root: Path) -> Collected:
    out = Collected()
    for path in image_files(root):
        rel_path = rel(path, root)
        label = folder_label(Path(rel_path).parts[:-1])
        if label is None:
            out.skips.append(skip_row(rel_path, name, "unknown_label", "no enclosing folder names a class"))
            continue
        out.sources.append(SourceImage(name, path, rel_path, group=rel_path, faces=[Face(0, label, None)]))
    return out


def collect(ds: DatasetDir) -> Collected:
    return collect_folders(ds.name, ds.root)
