"""Safe extraction of zip and tar archives.

Every member is checked before anything is written: absolute paths, ``..``
components, links pointing outside the destination and device files reject the
whole archive. A corrupt or truncated archive raises :class:`SourceError`. The
caller extracts into a temp folder, so a failure never leaves a half dataset.

Single-top-folder rule: archives often wrap the dataset in one folder
(``Face Mask Dataset/Train/...``, ``lfw/<Name>/...``), others do not
(Kaggle's face-mask-detection zip holds ``annotations/`` and ``images/``).
When the extracted tree holds exactly one entry and it is a folder, that folder
becomes the dataset root. This is applied once, never recursively, so a dataset
whose only content is one class folder keeps it. ``__MACOSX/`` (macOS resource
forks) is never extracted.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import stat
import tarfile
import zipfile
import zlib
from pathlib import Path

from maskpipe.sources import SourceError

IGNORED_TOP = "__MACOSX"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # local file header, empty archive


class UnsafeArchiveError(SourceError):
    """An archive member would be written outside the destination."""


def _clean_member_name(name: str, archive: Path) -> str | None:
    """The member's relative posix path, None to skip it; raises on unsafe names."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UnsafeArchiveError(f"{archive.name}: absolute member path {name!r} rejected")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} escapes the folder ('..') - rejected")
    if not parts or parts[0] == IGNORED_TOP:
        return None
    return "/".join(parts)


def _check_link_target(member: str, target: str, archive: Path, *, relative_to_member: bool) -> None:
    """Reject a link whose target is absolute or resolves outside the extraction folder."""
    norm = target.replace("\\", "/")
    base = posixpath.dirname(member) if relative_to_member else ""
    resolved = posixpath.normpath(posixpath.join(base, norm))
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm) or resolved == ".." or resolved.startswith("../"):
        raise UnsafeArchiveError(
            f"{archive.name}: link {member!r} -> {target!r} points outside the folder - rejected"
        )


def archive_kind(path: Path) -> str:
    """'zip' or 'tar' (any compression), from the content; SourceError if neither."""
    path = Path(path)
    with open(path, "rb") as fh:
        head = fh.read(4)
    if head in _ZIP_MAGIC:
        if zipfile.is_zipfile(path):
            return "zip"
        raise SourceError(f"{path.name}: corrupt or truncated zip archive")
    try:
        if tarfile.is_tarfile(path):
            return "tar"
    except (OSError, EOFError, zlib.error, tarfile.TarError) as exc:  # truncated compressed tar
        raise SourceError(f"{path.name}: corrupt or truncated tar archive ({exc})") from None
    raise SourceError(f"{path.name}: not a zip or tar archive (corrupt or truncated download?)")


def _inside(path: Path, root: Path) -> bool:
    real, base = os.path.realpath(path), os.path.realpath(root)
    return real == base or real.startswith(base + os.sep)


def _extract_zip(archive: Path, dest: Path) -> None:
    with zipfile.ZipFile(archive) as zf:
        files, links = [], []
        for info in zf.infolist():
            name = _clean_member_name(info.filename, archive)
            if name is None:
                continue
            if stat.S_ISLNK(info.external_attr >> 16):
                target = zf.read(info).decode("utf-8", "replace")
                _check_link_target(name, target, archive, relative_to_member=True)
                links.append((name, target))
            else:
                files.append((info, name))
        link_names = {name for name, _ in links}
        for name in [n for _, n in files] + list(link_names):
            parts = name.split("/")
            if any("/".join(parts[:i]) in link_names for i in range(1, len(parts))):
                raise UnsafeArchiveError(f"{archive.name}: member {name!r} lies inside a link - rejected")
        for info, name in files:  # every member checked: now write
            out = dest.joinpath(*name.split("/"))
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, open(out, "wb") as dst:  # CRC is checked at EOF
                shutil.copyfileobj(src, dst, 1 << 20)
        # Links last, then a physical check: a chain of in-folder-looking links can still escape.
        for name, target in links:
            out = dest.joinpath(*name.split("/"))
            out.parent.mkdir(parents=True, exist_ok=True)
            os.symlink(target, out)
        for name, target in links:
            if not _inside(dest.joinpath(*name.split("/")), dest):
                raise UnsafeArchiveError(
                    f"{archive.name}: link {name!r} -> {target!r} resolves outside the folder - rejected"
                )


def _extract_tar(archive: Path, dest: Path) -> None:
    with tarfile.open(archive, "r:*") as tar:
        members = []
        for member in tar.getmembers():  # reads the whole index: truncation shows here
            name = _clean_member_name(member.name, archive)
            if name is None:
                continue
            if member.issym():
                _check_link_target(name, member.linkname, archive, relative_to_member=True)
            elif member.islnk():  # hard link targets are archive paths
                _check_link_target(name, member.linkname, archive, relative_to_member=False)
            elif not (member.isfile() or member.isdir()):
                raise UnsafeArchiveError(f"{archive.name}: special file {member.name!r} rejected")
            member.name = name
            members.append(member)
        # The 'data' filter re-checks all of the above and drops unsafe permission bits.
        tar.extractall(dest, members=members, filter="data")


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract ``archive`` (zip / tar / tar.gz / tar.bz2 / tar.xz) into folder ``dest``.

    Raises UnsafeArchiveError for a member that would land outside ``dest`` and
    SourceError for a corrupt or truncated archive. ``dest`` should be a fresh
    temp folder: on failure its content is undefined and must be discarded.
    """
    archive, dest = Path(archive), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    kind = archive_kind(archive)
    try:
        if kind == "zip":
            _extract_zip(archive, dest)
        else:
            _extract_tar(archive, dest)
    except SourceError:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
        raise SourceError(f"{archive.name}: corrupt or truncated {kind} archive ({exc})") from None
    except (RuntimeError, NotImplementedError) as exc:  # encrypted zip, unknown compression
        raise SourceError(f"{archive.name}: cannot extract ({exc})") from None
    return dest


def dataset_root(folder: Path) -> Path:
    """The folder itself, or its only sub-folder when it holds nothing else (see module doc)."""
    entries = [e for e in folder.iterdir() if e.name != IGNORED_TOP]
    if len(entries) == 1 and entries[0].is_dir() and not entries[0].is_symlink():
        return entries[0]
    return folder


def extract_dataset(archive: Path, staging: Path, dest: Path) -> None:
    """Extract ``archive`` into ``staging``, then move the dataset root's entries into ``dest``.

    ``staging`` and ``dest`` must be on the same filesystem (moves are renames).
    """
    safe_extract(archive, staging)
    root = dataset_root(staging)
    dest.mkdir(parents=True, exist_ok=True)
    for entry in sorted(root.iterdir()):
        if entry.name == IGNORED_TOP:
            continue
        os.replace(entry, dest / entry.name)
