"""Prediction over a folder of images, in batches; one bad file never costs the others.

``scan_folder`` lists what a folder holds: images to predict, and everything else by kind
(videos, other files, links not followed, broken or looping links, special files), so the
report can say what was left out instead of skipping it silently. Directory symlinks are not
followed (as ``Path.rglob`` did not), which also keeps a link loop from recursing.
"""

from __future__ import annotations

import os
import stat
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from PIL import Image

from maskpipe.draw import annotate
from maskpipe.imaging import ImageReadError, is_image_file, open_rgb
from maskpipe.video import is_video_file

if TYPE_CHECKING:
    from maskpipe.predictor import Predictor

WRITABLE_SUFFIXES = {
    ".png",
    ".jpg",
    ".jpeg",
    ".bmp",
    ".webp",
    ".tif",
    ".tiff",
}  # PIL cannot write every format it reads
SKIP_REASONS = {
    "video": "a video inside a folder; predict it on its own",
    "other_file": "not an image",
    "link_not_followed": "a link to a folder (not followed)",
    "broken_link": "a link that does not resolve (missing target or a loop)",
    "special_file": "not a regular file (FIFO, socket or device)",
}


@dataclass
class FolderScan:
    images: list[Path] = field(default_factory=list)
    skipped: list[dict[str, str]] = field(default_factory=list)  # {"source", "kind", "reason"}


def scan_folder(folder: Path) -> FolderScan:
    scan = FolderScan()
    for path in sorted(_walk(folder), key=str):
        rel = str(path.relative_to(folder))
        kind = _kind(path)
        if kind == "image":
            scan.images.append(path)
        else:
            scan.skipped.append({"source": rel, "kind": kind, "reason": SKIP_REASONS[kind]})
    return scan


def _walk(folder: Path):
    for entry in os.scandir(folder):
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            yield from _walk(path)
        else:
            yield path


def _kind(path: Path) -> str:
    try:
        mode = path.stat().st_mode  # follows a file link; a dangling or looping link raises
    except OSError:
        return "broken_link" if path.is_symlink() else "special_file"
    if stat.S_ISDIR(mode):
        return "link_not_followed"
    if not stat.S_ISREG(mode):
        return "special_file"
    if is_image_file(path):
        return "image"
    return "video" if is_video_file(path) else "other_file"


def image_files(folder: Path) -> list[Path]:
    return scan_folder(folder).images


def _viz_target(viz_dir: Path, rel: Path) -> Path:
    return viz_dir / (
        rel if rel.suffix.lower() in WRITABLE_SUFFIXES else rel.with_suffix(rel.suffix + ".png")
    )


def _save_image(img: Image.Image, target: Path) -> None:
    from maskpipe.io import atomic_path

    with atomic_path(target) as tmp:
        fmt = Image.registered_extensions().get(target.suffix.lower(), "PNG")
        img.save(tmp, format=fmt)


def _error(rel: Path, exc: Exception) -> str:
    text = str(exc)
    return text if str(rel) in text or rel.name in text else f"{rel}: {exc.__class__.__name__}: {text}"


def _predict_batch(loaded: list[tuple[Path, Image.Image]], predictor: Predictor) -> list[Any]:
    """Faces per image, or the exception of an image that failed: the batch is retried one image
    at a time when it fails, so only the image at fault loses its result."""
    try:
        return list(predictor.predict_images([im for _, im in loaded]))
    except Exception:
        out: list[Any] = []
        for _, img in loaded:
            try:
                out.append(predictor.predict_image(img))
            except Exception as exc:  # e.g. a detector that cannot handle this picture
                out.append(exc)
        return out


def predict_images_in(
    paths: Sequence[Path],
    predictor: Predictor,
    root: Path | None = None,
    viz_dir: Path | None = None,
    progress: bool | None = None,
) -> list[dict[str, Any]]:
    """Results for image files in batches of ``batch_size`` images. A file that cannot be read,
    predicted or annotated gets ``error`` (naming it) and no faces; the others are unaffected."""
    from tqdm import tqdm

    results: list[dict[str, Any]] = []
    batch_size = predictor.settings.batch_size
    rel_of = {p: (p.relative_to(root) if root else Path(p.name)) for p in paths}
    bar = tqdm(
        total=len(paths), unit="img", desc="predict", disable=None if progress is None else not progress
    )
    n_faces, started = 0, time.perf_counter()
    try:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start : start + batch_size]
            loaded: list[tuple[Path, Image.Image]] = []
            for path in chunk:
                try:
                    loaded.append((path, open_rgb(path, max_pixels=predictor.settings.max_pixels)))
                except (ImageReadError, OSError) as exc:
                    results.append(
                        {
                            "source": str(rel_of[path]),
                            "type": "image",
                            "error": _error(rel_of[path], exc),
                            "faces": [],
                        }
                    )
            for (path, img), faces in zip(loaded, _predict_batch(loaded, predictor), strict=True):
                rel = rel_of[path]
                entry = {
                    "source": str(rel),
                    "type": "image",
                    "width": img.width,
                    "height": img.height,
                    "faces": [],
                    "error": None,
                }
                if isinstance(faces, Exception):
                    entry["error"] = _error(rel, faces)
                else:
                    entry["faces"] = faces
                    if viz_dir is not None:
                        target = _viz_target(viz_dir, rel)
                        try:
                            _save_image(annotate(img, faces), target)
                            entry["visualization"] = str(target)
                        except OSError as exc:
                            entry["error"] = f"{rel}: cannot write {target} ({exc})"
                results.append(entry)
                n_faces += len(entry["faces"])
            bar.set_postfix_str(
                f"{n_faces} faces, {n_faces / max(time.perf_counter() - started, 1e-9):.1f} faces/s",
                refresh=False,
            )
            bar.update(len(chunk))
    finally:
        bar.close()
    order = {str(rel_of[p]): i for i, p in enumerate(paths)}
    return sorted(results, key=lambda r: order.get(r["source"], 0))
