"""Opening images the same way everywhere: EXIF orientation applied, RGB out."""

from __future__ import annotations

from pathlib import Path

from PIL import Image, ImageOps

IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"}


class ImageReadError(Exception):
    """An image that cannot be used; the message names the file and the problem."""


def is_image_file(path: Path) -> bool:
    return path.suffix.lower() in IMAGE_EXTENSIONS


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
    if not path.exists():
        raise ImageReadError(f"{path}: file not found")
    try:
        with Image.open(path) as img:
            if max_pixels and img.width * img.height > max_pixels:
                raise ImageReadError(
                    f"{path}: {img.width}x{img.height} exceeds the {max_pixels} pixel limit"
                )
            img.load()  # forces a full decode, so truncation is caught here
            img = ImageOps.exif_transpose(img)
            return to_rgb(img)
    except ImageReadError:
        raise
    except Exception as exc:  # PIL raises many types for bad files
        raise ImageReadError(f"{path}: cannot decode image ({exc.__class__.__name__}: {exc})") from exc
