"""Dataset-format collectors: `datasets.<name>.format` -> the function that lists its faces.

A collector takes a DatasetDir (name, data/raw/<name>, its params, the typed crop config,
data/interim) and returns Collected: source images with their faces (label, box), skip rows
for what it could not use, and notes for the stage log. It never decodes images (the crop
workers do). A new format is one module here with a `collect(ds)` function and one line in
COLLECTORS.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from maskpipe.collectors import folders, lfw, mafa, voc
from maskpipe.collectors.base import Collected, Collector, DatasetDir, Face, SourceImage
from maskpipe.download import dataset_enabled

COLLECTORS: dict[str, Collector] = {
    "voc": voc.collect,
    "folders": folders.collect,
    "lfw": lfw.collect,
    "mafa": mafa.collect,
}

__all__ = [
    "COLLECTORS",
    "Collected",
    "DatasetDir",
    "Face",
    "SourceImage",
    "assign_face_ids",
    "collect_all",
    "limit_sources",
]


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "image"


def assign_face_ids(sources: list[SourceImage]) -> None:
    """face_id = <dataset>-<file stem>-<face index>. Where stems repeat within a dataset the
    relative path stands in for the stem, and where even those slugs clash a path hash is added."""
    stems = Counter((s.dataset, Path(s.source_image).stem) for s in sources)
    slug_of: dict[int, str] = {}
    for k, s in enumerate(sources):
        stem = Path(s.source_image).stem
        slug_of[k] = _slug(
            stem if stems[(s.dataset, stem)] == 1 else Path(s.source_image).with_suffix("").as_posix()
        )
    clashes = Counter((s.dataset, slug_of[k]) for k, s in enumerate(sources))
    for k, s in enumerate(sources):
        slug = slug_of[k]
        if clashes[(s.dataset, slug)] > 1:  # "a b/x.png" vs "a_b/x.png"
            slug = f"{slug}_{hashlib.sha1(s.source_image.encode('utf-8')).hexdigest()[:8]}"
        for face in s.faces:
            face.face_id = f"{s.dataset}-{slug}-{face.index}"


def limit_sources(sources: list[SourceImage], limit: int) -> list[SourceImage]:
    """`limit` images that still cover every label: take them in turn from each label's images
    (by the rarest label of an image), rarest label first; keep the original order."""
    counts = Counter(f.label for s in sources for f in s.faces)
    buckets: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        rarest = min((f.label for f in s.faces), key=lambda lab: (counts[lab], lab))
        buckets.setdefault(rarest, []).append(i)
    order = sorted(buckets, key=lambda lab: (counts[lab], lab))
    chosen: list[int] = []
    depth = 0
    while len(chosen) < min(limit, len(sources)):
        for lab in order:
            if depth < len(buckets[lab]) and len(chosen) < limit:
                chosen.append(buckets[lab][depth])
        depth += 1
    return [sources[i] for i in sorted(chosen)]


def collect_all(
    raw_root: Path, datasets: Mapping[str, Mapping[str, Any]], cfg: Any, interim: Path
) -> Collected:
    """The faces of every enabled dataset whose format has a collector (others, e.g. mask
    templates, are not faces), with face ids assigned. ``cfg``: a crop_config.CropConfig."""
    limit = cfg.max_images_per_dataset
    total = Collected()
    for name, spec in datasets.items():
        spec = spec or {}
        collector = COLLECTORS.get(spec.get("format"))
        if collector is None:
            continue
        root = raw_root / name
        if not root.is_dir():
            total.notes.append(f"{name}: {root} missing (run the download stage); skipped")
            continue
        if not dataset_enabled(root, bool(spec.get("enabled", True))):
            total.notes.append(f"{name}: disabled; skipped")
            continue
        got = collector(DatasetDir(name, root, spec, cfg, interim))
        if limit is not None and len(got.sources) > limit:
            got.notes.append(
                f"{name}: limited to {limit} of {len(got.sources)} images (crop.max_images_per_dataset)"
            )
            got.sources = limit_sources(got.sources, limit)
        if not got.sources and not got.notes:  # a collector that found nothing and said nothing
            got.notes.append(f"{name}: no usable images under {root}")
        total.sources += got.sources
        total.skips += got.skips
        total.notes += got.notes
    assign_face_ids(total.sources)
    return total
