"""How a face box becomes a classifier input: shared by the crop stage and prediction.

Boxes are (xmin, ymin, xmax, ymax) in pixels of the decoded, EXIF-rotated image, half-open.
A box is unusable when it is empty, negative (max < min), entirely outside the image, or -
after clipping to the image - narrower or shorter than `min_face`. Otherwise it is padded by
`padding` x its width / height on each side, clipped to the image, and resized to
`size` x `size`: `stretch` (a padded face box is roughly square, and a detector box at
prediction time gets the same treatment) or `letterbox` (aspect kept, black borders).

Models are trained on these crops, so prediction must cut exactly the same ones: this module
is the one place the geometry lives, and it imports nothing of the crop stage.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from PIL import Image

from maskpipe.settings import Section, option

Box = tuple[float, float, float, float]
RESIZE_MODES = ("stretch", "letterbox")
# The pixel cap of crop.max_pixels and predict.max_pixels: larger images are refused from their
# header, before decoding (a 13000x13000 PNG decodes to 507 MB of RGB). Pillow itself refuses
# images over 2 x Image.MAX_IMAGE_PIXELS, so a cap above that would never apply.
DEFAULT_MAX_PIXELS = 40_000_000
PILLOW_MAX_PIXELS = 2 * Image.MAX_IMAGE_PIXELS


@dataclass(frozen=True)
class CropGeometry(Section):
    """The `crop:` keys that decide what a crop looks like (the crop stage's config extends it)."""

    padding: float = option(0.10, ge=0, le=2, doc="fraction of the box added on each side")
    size: int = option(256, ge=8, le=4096, doc="crops are size x size pixels")
    resize: Literal["stretch", "letterbox"] = "stretch"

    def geometry(self) -> CropGeometry:
        """Just the geometry (a subclass carries more)."""
        return CropGeometry(padding=self.padding, size=self.size, resize=self.resize)


def box_problem(box: Box, width: int, height: int, min_face: int) -> str | None:
    """Why a box cannot be cropped (a skip reason), or None when it can."""
    if not all(math.isfinite(v) for v in box):
        return "invalid_box"
    xmin, ymin, xmax, ymax = box
    if xmax < xmin or ymax < ymin:
        return "negative_box"
    if xmax == xmin or ymax == ymin:
        return "empty_box"
    cx0, cy0, cx1, cy1 = max(xmin, 0), max(ymin, 0), min(xmax, width), min(ymax, height)
    if cx1 <= cx0 or cy1 <= cy0:
        return "out_of_image"
    if cx1 - cx0 < min_face or cy1 - cy0 < min_face:
        return "too_small"
    return None


def pad_box(box: Box, padding: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Grow the box by `padding` x its size on each side, clip to the image, whole pixels."""
    xmin, ymin, xmax, ymax = box
    dx, dy = (xmax - xmin) * padding, (ymax - ymin) * padding
    return (
        max(0, math.floor(xmin - dx)),
        max(0, math.floor(ymin - dy)),
        min(width, math.ceil(xmax + dx)),
        min(height, math.ceil(ymax + dy)),
    )


def resize_square(img: Image.Image, size: int, mode: str = "stretch") -> Image.Image:
    if mode == "stretch":
        return img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    scale = size / max(img.width, img.height)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    canvas = Image.new("RGB", (size, size))
    canvas.paste(
        img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0), ((size - w) // 2, (size - h) // 2)
    )
    return canvas


def crop_face(
    img: Image.Image, box: Box, geometry: CropGeometry
) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Padded, clipped, resized RGB crop of one face (box assumed valid) and the padded box."""
    pad = pad_box(box, geometry.padding, img.width, img.height)
    return resize_square(img.crop(pad), geometry.size, geometry.resize), pad
