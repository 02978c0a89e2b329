"""format: voc - Pascal VOC XML annotations beside (or one folder over from) their images."""

from __future__ import annotations

from pathlib import Path

from maskpipe.collectors.base import (
    Collected,
    DatasetDir,
    Face,
    SourceImage,
    image_index,
    natural_key,
    rel,
    skip_row,
)
from maskpipe.labels import normalize_label
from maskpipe.voc import VocError, parse_voc


def collect_voc(name: str, root: Path) -> Collected:
    out = Collected()
    images = image_index(root)
    xmls = sorted(root.rglob("*.xml"), key=lambda p: natural_key(p.as_posix()))
    for xml in xmls:
        src = rel(xml, root)
        try:
            ann = parse_voc(xml)
        except VocError as exc:
            out.skips.append(skip_row(src, name, "bad_annotation", str(exc)))
            continue
        for i, obj_name, problem in ann.bad_objects:
            out.skips.append(skip_row(src, name, "bad_annotation", f"object {i} ({obj_name}): {problem}"))
        candidates = [xml.parent.parent / "images" / ann.filename, xml.parent / ann.filename]
        image = next((c for c in candidates if c.is_file()), None) or images.get(Path(ann.filename).name)
        if image is None:
            out.skips.append(
                skip_row(
                    src,
                    name,
                    "image_missing",
                    f"{ann.filename} not found ({len(ann.objects)} faces annotated)",
                )
            )
            continue
        source = SourceImage(name, image, rel(image, root), group=rel(image, root))
        for obj in ann.objects:
            try:
                label = normalize_label(obj.name)
            except ValueError as exc:
                out.skips.append(skip_row(source.source_image, name, "unknown_label", str(exc), obj.box))
                continue
            source.faces.append(Face(obj.index, label, obj.box))
        if source.faces:
            out.sources.append(source)
    return out


def collect(ds: DatasetDir) -> Collected:
    return collect_voc(ds.name, ds.root)
