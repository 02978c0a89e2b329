"""Uploaded bytes -> an RGB picture, with the same checks as imaging.open_rgb for files."""

from __future__ import annotations

import io
import warnings

from PIL import Image, ImageOps, UnidentifiedImageError

from maskpipe.imaging import ImageReadError, to_rgb


class ImageTooLarge(ImageReadError):
    """An image over the pixel limit (a 413 in the HTTP app)."""


class NotAnImage(ImageReadError):
    """Bytes in no image format Pillow knows (a 415 in the HTTP app)."""


def decode_image(data: bytes, max_pixels: int | None = None, name: str = "upload") -> Image.Image:
    """Bytes -> RGB (EXIF orientation applied, fully decoded), like imaging.open_rgb for files.

    Raises ImageTooLarge over ``max_pixels`` (checked from the header, before decoding) and
    ImageReadError for anything that is not a complete image.
    """
    if not data:
        raise NotAnImage(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            # our own limit applies; PIL's bomb warning (at ~89 Mpx) is no error
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if max_pixels and img.width * img.height > max_pixels:
                    raise ImageTooLarge(
                        f"{name}: {img.width}x{img.height} exceeds the {max_pixels} pixel limit"
                    )
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name}: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise NotAnImage(f"{name}: not an image (no known image format)") from exc
    except Exception as exc:
        raise ImageReadError(f"{name}: not a readable image ({exc.__class__.__name__}: {exc})") from exc
