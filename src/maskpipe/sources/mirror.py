"""Local mirror source: copy a folder byte for byte, or extract a local archive."""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from tqdm import tqdm

from maskpipe.sources import MirrorSource, SourceError
from maskpipe.sources.archive import extract_dataset


def _tree_size(folder: Path) -> tuple[int, int]:
    files = size = 0
    for root, _dirs, names in os.walk(folder):
        for name in names:
            files += 1
            with contextlib.suppress(OSError):  # dangling link: copytree reports it
                size += os.stat(os.path.join(root, name)).st_size
    return files, size


def copy_tree(src: Path, dest: Path, desc: str | None = None) -> int:
    """Copy ``src``'s content into ``dest`` (created); returns bytes copied. Shows a bar."""
    _files, total = _tree_size(src)
    with tqdm(
        total=total,
        unit="B",
        unit_scale=True,
        unit_divisor=1024,
        desc=desc or src.name,
        disable=None,
        leave=False,
    ) as bar:

        def copy(s: str, d: str) -> str:
            out = shutil.copy2(s, d)  # bytes as they are (+ mtime, which no checksum uses)
            bar.update(os.path.getsize(d))
            return out

        shutil.copytree(src, dest, copy_function=copy, dirs_exist_ok=True)
    return total


def fetch_mirror(source: MirrorSource, dest: Path, staging: Path) -> None:
    """Fill ``dest`` from a local folder or archive; SourceError when it is not there."""
    path = source.path
    if not path.exists():
        raise SourceError(f"not found: {path}")
    if path.is_file():
        extract_dataset(path, staging, dest)
        return
    if not path.is_dir():
        raise SourceError(f"not a folder or archive: {path}")
    if not any(path.iterdir()):
        raise SourceError(f"folder is empty: {path}")
    try:
        copy_tree(path, dest)
    except shutil.Error as exc:  # a list of (src, dst, reason) for the files that failed
        first = exc.args[0][0] if exc.args and exc.args[0] else exc
        raise SourceError(f"copying {path} failed ({len(exc.args[0])} files, e.g. {first})") from None
    except PermissionError as exc:
        raise SourceError(f"cannot read {exc.filename}: permission denied") from None
