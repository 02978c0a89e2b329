"""Boxes and labels drawn on a picture (annotated images, videos and the web page's PNG)."""

from __future__ import annotations

from typing import Sequence

from PIL import Image, ImageDraw, ImageFont

from maskpipe.imaging import to_rgb
from maskpipe.predict_report import ANOMALY

LABEL_COLORS = {
    "with_mask": (34, 160, 70),
    "without_mask": (215, 40, 40),
    "mask_weared_incorrect": (240, 150, 0),
    ANOMALY: (150, 60, 200),
}
OTHER_COLOR = (40, 110, 230)


def annotate(img: Image.Image, faces: Sequence[dict]) -> Image.Image:
    """A copy of the image with each face's box and ``label confidence`` drawn on it."""
    out = to_rgb(img).copy()
    draw = ImageDraw.Draw(out)
    line = max(2, round(min(out.size) / 200))
    font_size = max(11, round(min(out.size) / 28))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow without FreeType
        font = ImageFont.load_default()
    for face in faces:
        x0, y0, x1, y1 = face["box"]
        color = LABEL_COLORS.get(face["label"], OTHER_COLOR)
        draw.rectangle([x0, y0, x1, y1], outline=color, width=line)
        conf = face.get("confidence")
        text = face["label"] if conf is None else f"{face['label']} {conf:.2f}"
        tb = draw.textbbox((0, 0), text, font=font)
        tw, th = tb[2] - tb[0], tb[3] - tb[1]
        ty = y0 - th - 4 if y0 - th - 4 >= 0 else min(y1 + 1, out.height - th - 4)
        tx = min(max(0, x0), max(0, out.width - tw - 4))
        draw.rectangle([tx, ty, tx + tw + 4, ty + th + 4], fill=color)
        draw.text((tx + 2 - tb[0], ty + 2 - tb[1]), text, fill=(255, 255, 255), font=font)
    return out
