"""Boxes and labels drawn on a picture (annotated images, videos and the web page's PNG)."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, ImageDraw, ImageFont

from maskpipe import draw_layout
from maskpipe.imaging import to_rgb
from maskpipe.labels import ANOMALY

LABEL_COLORS = {
    "with_mask": (34, 160, 70),
    "without_mask": (215, 40, 40),
    "mask_weared_incorrect": (240, 150, 0),
    ANOMALY: (150, 60, 200),
}
OTHER_COLOR = (40, 110, 230)


def annotate(img: Image.Image, faces: Sequence[dict], legend: bool = True) -> Image.Image:
    """A copy of the image with each face's box and ``label confidence`` drawn on it.

    Labels are placed by ``draw_layout`` (inside the picture, not over each other) and a legend
    counts the faces per label. The CLI, the HTTP page and the video writer all draw with this.
    """
    out = to_rgb(img).copy()
    draw = ImageDraw.Draw(out)
    line = max(2, round(min(out.size) / 200))
    font_size = max(11, round(min(out.size) / 28))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow without FreeType
        font = ImageFont.load_default()
    boxes, texts, sizes, offsets = [], [], [], []
    for face in faces:
        x0, y0, x1, y1 = face["box"]
        boxes.append((float(x0), float(y0), float(x1), float(y1)))
        draw.rectangle([x0, y0, x1, y1], outline=_color(face["label"]), width=line)
        conf = face.get("confidence")
        text = face["label"] if conf is None else f"{face['label']} {conf:.2f}"
        tb = draw.textbbox((0, 0), text, font=font)
        texts.append(text)
        sizes.append((tb[2] - tb[0] + 4, tb[3] - tb[1] + 4))
        offsets.append((tb[0], tb[1]))
    spots = draw_layout.place_labels(boxes, sizes, out.size)
    drawn: list[tuple[float, float, float, float]] = []
    for face, text, (w, h), (ox, oy), (tx, ty) in zip(faces, texts, sizes, offsets, spots, strict=True):
        rect = (tx, ty, tx + w, ty + h)
        # a crowd leaves no room for every label: one that would cover another is left out (the box
        # keeps its colour, which the legend explains) rather than drawn unreadably on top
        if any(draw_layout.overlap(rect, other) > 0 for other in drawn):
            continue
        drawn.append(rect)
        draw.rectangle(list(rect), fill=_color(face["label"]))
        draw.text((tx + 2 - ox, ty + 2 - oy), text, fill=(255, 255, 255), font=font)
    if legend and faces:
        _draw_legend(draw, out.size, boxes, [f["label"] for f in faces], font)
    return out


def _color(label: str) -> tuple[int, int, int]:
    return LABEL_COLORS.get(label, OTHER_COLOR)


def _draw_legend(
    draw: ImageDraw.ImageDraw, image: tuple[int, int], boxes, labels: Sequence[str], font
) -> None:
    """A box in the corner that covers the fewest faces: one coloured line per label with its count."""
    entries = draw_layout.legend_entries(labels)
    lines = draw_layout.legend_text(entries)
    bbs = [draw.textbbox((0, 0), t, font=font) for t in lines]
    line_h = max(b[3] - b[1] for b in bbs) + 4
    swatch = line_h - 6
    w = max(b[2] - b[0] for b in bbs) + swatch + 14
    h = line_h * len(lines) + 6
    x, y = draw_layout.place_legend((w, h), image, boxes)
    draw.rectangle([x, y, x + w, y + h], fill=(255, 255, 255), outline=(60, 60, 60))
    for i, (text, bb) in enumerate(zip(lines, bbs, strict=True)):
        ly = y + 3 + i * line_h
        if i < len(entries):
            draw.rectangle([x + 4, ly + 3, x + 4 + swatch, ly + 3 + swatch], fill=_color(entries[i][0]))
        draw.text((x + swatch + 10 - bb[0], ly + 2 - bb[1]), text, fill=(20, 20, 20), font=font)
