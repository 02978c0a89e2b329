"""Pascal VOC annotation files (the Kaggle "Face Mask Detection" format)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path


class VocError(ValueError):
    """An annotation file that cannot be used; the message names the file and the problem."""


@dataclass(frozen=True)
class VocObject:
    name: str
    xmin: float
    ymin: float
    xmax: float
    ymax: float
    difficult: bool = False
    index: int = 0  # position among the file's <object> elements (bad ones included)

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (self.xmin, self.ymin, self.xmax, self.ymax)


@dataclass(frozen=True)
class VocAnnotation:
    path: Path
    filename: str
    width: int | None
    height: int | None
    objects: list[VocObject] = field(default_factory=list)
    # objects whose <bndbox> is missing or not numeric: (index, name, problem)
    bad_objects: list[tuple[int, str, str]] = field(default_factory=list)


def _number(node: ET.Element | None, tag: str) -> float:
    child = node.find(tag) if node is not None else None
    if child is None or child.text is None or not child.text.strip():
        raise ValueError(f"<{tag}> missing")
    try:
        return float(child.text.strip())
    except ValueError:
        raise ValueError(f"<{tag}> is not a number: {child.text.strip()!r}") from None


def _optional_int(node: ET.Element | None, tag: str) -> int | None:
    try:
        value = int(_number(node, tag))
    except ValueError:
        return None
    return value if value > 0 else None  # some tools write size 0 when unknown


def parse_voc(path: str | Path) -> VocAnnotation:
    """Parse one VOC XML file. Raises VocError for unparsable XML or a missing <filename>.

    Objects with a missing or non-numeric box do not fail the file: they are
    returned in `bad_objects` so the caller can list them as skipped.
    """
    path = Path(path)
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as exc:
        raise VocError(f"{path}: not valid XML ({exc})") from exc
    except OSError as exc:
        raise VocError(f"{path}: cannot read ({exc})") from exc
    if root.tag != "annotation":
        raise VocError(f"{path}: root element is <{root.tag}>, expected <annotation>")
    filename = (root.findtext("filename") or "").strip()
    if not filename:
        raise VocError(f"{path}: <filename> missing")
    size = root.find("size")
    objects: list[VocObject] = []
    bad: list[tuple[int, str, str]] = []
    for i, obj in enumerate(root.findall("object")):
        name = (obj.findtext("name") or "").strip()
        box = obj.find("bndbox")
        try:
            if box is None:
                raise ValueError("<bndbox> missing")
            coords = [_number(box, t) for t in ("xmin", "ymin", "xmax", "ymax")]
        except ValueError as exc:
            bad.append((i, name, str(exc)))
            continue
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        objects.append(VocObject(name, *coords, difficult=difficult, index=i))
    return VocAnnotation(
        path=path,
        filename=filename,
        width=_optional_int(size, "width"),
        height=_optional_int(size, "height"),
        objects=objects,
        bad_objects=bad,
    )
