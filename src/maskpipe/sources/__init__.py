"""Where a dataset comes from: the source forms allowed in params.yaml ``datasets.<name>.sources``.

    "mirror:<folder>"            a local copy; relative paths are relative to the repo root
    "<folder>"                   the same, without the prefix
    "kaggle:<owner>/<slug>[/<version>]"
                                 through the ``kaggle`` package (needs Kaggle credentials);
                                 a version number pins the dataset version
    {url: https://..., sha256: <hex>}
                                 a zip / tar / tar.gz archive, verified before extraction

A mirror may also point at an archive file (e.g. the zip downloaded by hand from
Kaggle): it is extracted like a URL archive.

Each source fills an empty folder with the dataset's files or raises
:class:`SourceError` saying why it could not.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maskpipe.paths import resolve_external

SOURCE_FORMS = (
    "mirror:<folder>, <folder>, kaggle:<owner>/<slug>, or a mapping {url: https://..., sha256: <64 hex>}"
)

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # 2+ letters: "C:\\x" stays a path
_KAGGLE_REF = re.compile(r"^[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*(/\d+)?$")  # owner/slug[/version]
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class SourceError(Exception):
    """A source could not deliver its dataset; the message says why (one line)."""


class SourceSpecError(ValueError):
    """A source entry in params.yaml is malformed."""


@dataclass(frozen=True)
class MirrorSource:
    spec: str
    path: Path

    kind = "mirror"

    def hint(self) -> str:
        return f"put the dataset folder (or its downloaded .zip / .tar.gz) at {self.path}"


@dataclass(frozen=True)
class KaggleSource:
    spec: str
    ref: str  # owner/slug[/version]

    kind = "kaggle"

    def hint(self) -> str:
        return (
            "set Kaggle credentials (~/.kaggle/kaggle.json with chmod 600, or KAGGLE_USERNAME "
            f"and KAGGLE_KEY) on a machine that can reach kaggle.com, for {self.ref}"
        )


@dataclass(frozen=True)
class UrlSource:
    spec: str
    url: str
    sha256: str

    kind = "url"

    def hint(self) -> str:
        return f"check the network / the URL, or download {self.url} by hand and point a mirror: source at it"


Source = MirrorSource | KaggleSource | UrlSource


def parse_source(spec: Any) -> Source:
    """Turn one params.yaml source entry into a Source; SourceSpecError if malformed."""
    if isinstance(spec, dict):
        return _parse_url(spec)
    if not isinstance(spec, str) or not spec.strip():
        raise SourceSpecError(f"source {spec!r}: expected {SOURCE_FORMS}")
    text = spec.strip()
    match = _SCHEME.match(text)
    scheme = match.group(1).lower() if match else None
    if scheme is None:
        return MirrorSource(spec=text, path=resolve_external(text))
    rest = text[match.end() :].strip()
    if scheme == "mirror":
        if not rest:
            raise SourceSpecError(f"source {text!r}: mirror: needs a folder")
        return MirrorSource(spec=text, path=resolve_external(rest))
    if scheme == "kaggle":
        if not _KAGGLE_REF.match(rest):
            raise SourceSpecError(
                f"source {text!r}: expected kaggle:<owner>/<slug> or kaggle:<owner>/<slug>/<version>"
            )
        return KaggleSource(spec=text, ref=rest)
    if scheme in ("http", "https"):
        raise SourceSpecError(
            f"source {text!r}: a URL source needs its checksum, write it as {{url: {text}, sha256: <64 hex>}}"
        )
    raise SourceSpecError(f"source {text!r}: unknown kind '{scheme}:' (expected {SOURCE_FORMS})")


def _parse_url(spec: dict) -> UrlSource:
    unknown = set(spec) - {"url", "sha256"}
    if unknown:
        raise SourceSpecError(f"source {spec!r}: unknown keys {sorted(unknown)} (allowed: url, sha256)")
    url = spec.get("url")
    if not isinstance(url, str) or not re.match(r"^https?://", url):
        raise SourceSpecError(f"source {spec!r}: 'url' must be an http(s):// address")
    digest = str(spec.get("sha256") or "").strip().lower().removeprefix("sha256:")
    if not _SHA256.match(digest):
        raise SourceSpecError(
            f"source {spec!r}: 'sha256' must be the archive's 64-hex SHA-256 (sha256sum <file>)"
        )
    # The archive format (zip, tar, tar.gz, tar.bz2, tar.xz) is detected from the content.
    return UrlSource(spec=f"{url} (sha256 {digest[:12]}...)", url=url, sha256=digest)
