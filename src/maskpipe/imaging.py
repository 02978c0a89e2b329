"""Opening images the same way everywhere: EXIF orientation applied, RGB out."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from PIL import Image, ImageOps

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


class ImageReadError(Exception):
    """An image that cannot be used; the message names the file and the problem."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


def not_regular_reason(path: str | Path) -> str | None:
    """Why ``path`` (links followed) is no regular file, or None when it is one.

    Checked with os.stat before opening: opening a FIFO blocks until someone writes to it
    (`maskpipe predict pipe.png` hung forever, issue 13), a device can be endless.
    """
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "file not found"
    except OSError as exc:  # symlink loop, permission denied on a folder, name too long
        return f"cannot access ({exc.strerror or type(exc).__name__})"
    if stat.S_ISREG(mode):
        return None
    for test, kind in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISBLK, "a block device"),
        (stat.S_ISSOCK, "a socket"),
    ):
        if test(mode):
            return f"not a regular file ({kind}) - refused"
    return "not a regular file - refused"


def to_rgb(img: Image.Image) -> Image.Image:
    """RGBA / LA / P / CMYK / L / I;16 -> RGB. Transparency is composited on white."""
    if img.mode == "RGB":
        return img
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGB", rgba.size, (255, 255, 255))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    if img.mode.startswith("I;16") or img.mode == "I":
        return img.point(lambda v: v / 256).convert("L").convert("RGB")
    return img.convert("RGB")


def open_rgb(path: str | Path, max_pixels: int | None = None) -> Image.Image:
    """Fully decode an image, apply EXIF orientation and return RGB.

    Raises ImageReadError (naming the file) for missing, corrupt, truncated or
    oversized images.
    """
    path = Path(path)
    reason = not_regular_reason(path)
    if reason:
        raise ImageReadError(f"{path}: {reason}")
    try:
        with Image.open(path) as img:
            if max_pixels and img.width * img.height > max_pixels:
                raise ImageReadError(f"{path}: {img.width}x{img.height} exceeds the {max_pixels} pixel limit")
            img.load()  # forces a full decode, so truncation is caught here
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except ImageReadError:
        raise
    except Exception as exc:  # PIL raises many types for bad files
        raise ImageReadError(f"{path}: cannot decode image ({exc.__class__.__name__}: {exc})") from exc
