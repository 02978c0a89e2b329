"""Safe extraction of zip and tar archives.

A dataset archive holds regular files and folders, nothing else. Every member is
checked before anything is written, and the whole archive is refused for:

- a symlink, hardlink, device, FIFO, socket or any other non-regular, non-folder member
  (tar or zip; a dataset has no business containing them, and links are how
  extraction escapes: CVE-2025-4517 bypasses tarfile's ``data`` filter on the
  Python 3.11.7 installed here, so no tarfile filter is trusted);
- an absolute path, a drive path (``C:...``) or a ``..`` component.

Then the members are written by this module, one by one, into a fresh temp
folder beside the destination: every target's resolved path must stay inside
that folder, regular files are created with ``open(..., 'xb')`` from the member
stream (never ``extractall``), and the folder replaces the destination only when
all went well. A corrupt or truncated archive raises :class:`SourceError`.

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
import re
import shutil
import stat
import tarfile
import tempfile
import zipfile
import zlib
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from maskpipe.io import _umask
from maskpipe.sources import SourceError

IGNORED_TOP = "__MACOSX"
_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # local file header, empty archive
_COPY_CHUNK = 1 << 20


class UnsafeArchiveError(SourceError):
    """An archive member is a link / special file, or would land outside the destination."""


@dataclass(frozen=True)
class _Member:
    name: str  # clean relative posix path
    is_dir: bool
    open: Callable[[], AbstractContextManager[IO[bytes]]] | None  # None for folders


def _clean_member_name(name: str, archive: Path) -> str | None:
    """The member's relative posix path, None to skip it; raises on unsafe names."""
    norm = name.replace("\\", "/")
    if norm.startswith("/") or re.match(r"^[A-Za-z]:", norm):
        raise UnsafeArchiveError(f"{archive.name}: absolute member path {name!r} rejected")
    parts = [p for p in norm.split("/") if p not in ("", ".")]
    if ".." in parts:
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} escapes the folder ('..') - rejected")
    if "\0" in norm:
        raise UnsafeArchiveError(f"{archive.name}: member {name!r} has a NUL byte in its name - rejected")
    if not parts or parts[0] == IGNORED_TOP:
        return None
    return "/".join(parts)


def _kind_name(mode: int) -> str:
    for test, label in (
        (stat.S_ISLNK, "symlink"),
        (stat.S_ISCHR, "character device"),
        (stat.S_ISBLK, "block device"),
        (stat.S_ISFIFO, "FIFO"),
        (stat.S_ISSOCK, "socket"),
    ):
        if test(mode):
            return label
    return f"special file (mode {mode:o})"


def _refuse(archive: Path, name: str, kind: str) -> UnsafeArchiveError:
    return UnsafeArchiveError(
        f"{archive.name}: member {name!r} is a {kind}; a dataset archive may hold only "
        "regular files and folders - archive rejected, nothing extracted"
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


def _zip_members(zf: zipfile.ZipFile, archive: Path) -> list[_Member]:
    members = []
    for info in zf.infolist():
        name = _clean_member_name(info.filename, archive)
        if name is None:
            continue
        mode = info.external_attr >> 16  # unix mode when the zip was made on unix, else 0
        kind = stat.S_IFMT(mode)
        if kind not in (0, stat.S_IFREG, stat.S_IFDIR):
            raise _refuse(archive, info.filename, _kind_name(mode))
        is_dir = info.is_dir() or kind == stat.S_IFDIR
        members.append(_Member(name, is_dir, None if is_dir else (lambda i=info: zf.open(i))))
    return members


def _tar_members(tar: tarfile.TarFile, archive: Path) -> list[_Member]:
    members = []
    for info in tar.getmembers():  # reads the whole index: truncation shows here
        name = _clean_member_name(info.name, archive)
        if name is None:
            continue
        if info.issym():
            raise _refuse(archive, info.name, f"symlink (-> {info.linkname!r})")
        if info.islnk():
            raise _refuse(archive, info.name, f"hardlink (-> {info.linkname!r})")
        if info.ischr() or info.isblk():
            raise _refuse(archive, info.name, "device")
        if info.isfifo():
            raise _refuse(archive, info.name, "FIFO")
        if not (info.isreg() or info.isdir()):
            raise _refuse(archive, info.name, f"special file (tar type {info.type!r})")
        opener = None if info.isdir() else (lambda i=info: _tar_stream(tar, i))
        members.append(_Member(name, info.isdir(), opener))
    return members


def _tar_stream(tar: tarfile.TarFile, info: tarfile.TarInfo) -> IO[bytes]:
    stream = tar.extractfile(info)
    if stream is None:  # pragma: no cover - only regular members reach here
        raise SourceError(f"member {info.name!r} has no data")
    return stream


def _inside(path: str, root: str) -> bool:
    return path == root or path.startswith(root + os.sep)


def _write_members(members: list[_Member], root: Path, archive: Path) -> None:
    """Write checked members under ``root`` (a fresh folder); the resolved target must stay inside."""
    real_root = os.path.realpath(root)
    for member in members:
        target = os.path.join(real_root, *member.name.split("/"))
        folder = target if member.is_dir else os.path.dirname(target)
        os.makedirs(folder, exist_ok=True)
        # Only regular files and folders are ever created here, so nothing can redirect a
        # path; checked anyway, per member, so a future change cannot silently escape.
        if not _inside(os.path.realpath(folder), real_root):
            raise UnsafeArchiveError(
                f"{archive.name}: member {member.name!r} resolves outside the folder - rejected"
            )
        if member.is_dir:
            continue
        try:
            # 'x' = O_CREAT|O_EXCL: never follows a link, never overwrites (duplicate members fail).
            with member.open() as src, open(target, "xb") as dst:
                shutil.copyfileobj(src, dst, _COPY_CHUNK)  # zip CRC is checked at EOF
        except FileExistsError:
            raise UnsafeArchiveError(
                f"{archive.name}: member {member.name!r} appears twice - rejected"
            ) from None
        except IsADirectoryError:
            raise UnsafeArchiveError(
                f"{archive.name}: member {member.name!r} is both a file and a folder - rejected"
            ) from None


def _extract_into(archive: Path, root: Path, kind: str) -> None:
    if kind == "zip":
        with zipfile.ZipFile(archive) as zf:
            _write_members(_zip_members(zf, archive), root, archive)
    else:
        with tarfile.open(archive, "r:*") as tar:
            _write_members(_tar_members(tar, archive), root, archive)


def safe_extract(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Extract ``archive`` (zip / tar / tar.gz / tar.bz2 / tar.xz) into folder ``dest``.

    ``dest`` must be absent or empty. The members are written into a temp folder
    beside ``dest`` that is renamed to ``dest`` only on success: on any failure
    nothing was written to ``dest`` nor anywhere else. Raises UnsafeArchiveError
    for a link / special / escaping member and SourceError for a corrupt or
    truncated archive.
    """
    archive, dest = Path(archive), Path(dest)
    kind = archive_kind(archive)
    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise SourceError(f"{dest}: extraction target must be an empty folder")
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.extract-", dir=dest.parent))
    os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it 0700; it becomes dest
    try:
        try:
            _extract_into(archive, tmp, kind)
        except SourceError:
            raise
        except (zipfile.BadZipFile, zipfile.LargeZipFile, tarfile.TarError, EOFError, zlib.error) as exc:
            raise SourceError(f"{archive.name}: corrupt or truncated {kind} archive ({exc})") from None
        except (RuntimeError, NotImplementedError) as exc:  # encrypted zip, unknown compression
            raise SourceError(f"{archive.name}: cannot extract ({exc})") from None
        except (NotADirectoryError, FileExistsError) as exc:  # "a" is a file, then "a/b" comes
            raise UnsafeArchiveError(
                f"{archive.name}: member paths clash ({exc.strerror}: {exc.filename}) - rejected"
            ) from None
        os.replace(tmp, dest)  # rename(2): atomic; an empty dest folder is replaced
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
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
