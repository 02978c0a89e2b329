"""Stage `download`: bring each dataset of params.yaml ``datasets:`` into data/raw/<name>/.

Sources are tried in order (see :mod:`maskpipe.sources`); the first that delivers
a non-empty folder wins. Every attempt fills a fresh temp folder that replaces
``data/raw/<name>`` only on success (:func:`maskpipe.io.atomic_dir`), so a failed,
interrupted or corrupt download never leaves a half dataset.

``data/raw/<name>/source.json`` records which source won, what was tried and why
each attempt failed, the file count, the byte count and a checksum of the tree
(no timestamps: the same data always gives the same file, so DVC sees no change).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maskpipe.io import atomic_dir, write_json
from maskpipe.settings import ConfigError, Section, option
from maskpipe.sources import (
    KaggleSource,
    MirrorSource,
    Source,
    SourceError,
    SourceSpecError,
    UrlSource,
    parse_source,
)
from maskpipe.sources.archive import extract_dataset
from maskpipe.sources.http import download_url, sha256_file
from maskpipe.sources.kaggle_source import fetch_kaggle
from maskpipe.sources.mirror import fetch_mirror

SOURCE_JSON = "source.json"


class SourceInfoError(ValueError):
    """A source.json that cannot be read; the message names the file."""


def dataset_enabled(raw_dir: str | os.PathLike, params_enabled: bool = True) -> bool:
    """Enabled in params and in the source.json the download stage wrote into ``raw_dir``."""
    if not params_enabled:
        return False
    info = Path(raw_dir) / SOURCE_JSON
    if info.exists():
        try:
            return bool(json.loads(info.read_text(encoding="utf-8")).get("enabled", True))
        except json.JSONDecodeError as exc:
            raise SourceInfoError(f"{info}: not valid JSON ({exc})") from exc
    return True


DEFAULT_TIMEOUT = 60.0  # seconds per network connect / read


@dataclass(frozen=True)
class DatasetConfig(Section):
    """One params.yaml ``datasets.<name>`` entry (sources are parsed by maskpipe.sources)."""

    sources: list[Any] = option(
        doc="tried in order: mirror:<folder>, <folder>, kaggle:<owner>/<slug>, {url, sha256}"
    )
    enabled: bool = option(
        True, doc="false: supported but out of the run (data/raw/<name>/ holds only source.json)"
    )
    format: str | None = option(None, doc="how the crop stage reads it (voc, folders, mafa, lfw, templates)")
    timeout: float = option(DEFAULT_TIMEOUT, gt=0, doc="seconds per network connect / read")
    images: bool = option(True, doc="mafa: whether a source provides the images (crop reads it)")


class DatasetConfigError(ConfigError):
    """params.yaml ``datasets.<name>`` is malformed."""


class DatasetUnavailable(RuntimeError):
    """No source could deliver the dataset; the message lists every attempt and the ways out."""

    def __init__(self, name: str, attempts: list[dict], hints: list[str]):
        self.name, self.attempts, self.hints = name, attempts, hints
        super().__init__(format_unavailable(name, attempts, hints))


def format_unavailable(name: str, attempts: list[dict], hints: list[str]) -> str:
    lines = [f"dataset '{name}': no source could provide it. Tried, in order:"]
    for i, attempt in enumerate(attempts, 1):
        lines.append(f"  {i}. {attempt['source']}: {attempt['error']}")
    lines.append("To provide it, either:")
    lines += [f"  - {hint}" for hint in hints]
    lines.append(f"  - add or reorder sources under datasets.{name}.sources in params.yaml")
    lines.append(f"  - or leave it out of the run: dvc exp run -S datasets.{name}.enabled=false")
    return "\n".join(lines)


def tree_checksum(folder: str | os.PathLike, exclude: tuple[str, ...] = (SOURCE_JSON,)) -> dict[str, Any]:
    """Count, size and checksum of the files under ``folder`` (top-level ``exclude`` names skipped).

    checksum = sha256 over the lines ``<file sha256>  <relative posix path>\n``
    (what ``sha256sum`` prints), sorted by path. Names and contents count;
    timestamps and permissions do not, so the same data gives the same checksum.
    """
    folder = Path(folder)
    entries = []
    total = 0
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in names:
            path = Path(root, name)
            rel = path.relative_to(folder).as_posix()
            if rel in exclude:
                continue
            entries.append((rel, sha256_file(path)))
            total += path.stat().st_size
    entries.sort()
    digest = hashlib.sha256()
    for rel, file_hash in entries:
        digest.update(f"{file_hash}  {rel}\n".encode())
    return {"files": len(entries), "bytes": total, "checksum": f"sha256:{digest.hexdigest()}"}


def validate_config(name: str, cfg: Any) -> tuple[bool, list[Source]]:
    """(enabled, parsed sources) of one ``datasets.<name>`` entry; DatasetConfigError if malformed."""
    where = f"params.yaml: datasets.{name}"
    if not isinstance(cfg, dict):
        raise DatasetConfigError(f"{where}: expected a mapping with enabled, format, sources")
    try:
        config = DatasetConfig.from_mapping(cfg, f"datasets.{name}")
    except ConfigError as exc:
        raise DatasetConfigError(str(exc)) from None
    enabled, specs = config.enabled, config.sources
    if enabled and not specs:
        raise DatasetConfigError(f"{where}.sources: expected a non-empty list of sources")
    sources = []
    for i, spec in enumerate(specs):
        try:
            sources.append(parse_source(spec))
        except SourceSpecError as exc:
            raise DatasetConfigError(f"{where}.sources[{i}]: {exc}") from None
    return enabled, sources


def fetch_source(source: Source, dest: Path, staging: Path, *, timeout: float, name: str) -> None:
    """Fill the empty folder ``dest`` from one source; ``staging`` is scratch space beside it."""
    if isinstance(source, MirrorSource):
        fetch_mirror(source, dest, staging)
    elif isinstance(source, KaggleSource):
        fetch_kaggle(source, dest, staging, timeout=timeout)
    elif isinstance(source, UrlSource):
        archive = staging.parent / "archive"
        download_url(source.url, archive, source.sha256, timeout=timeout, desc=name)
        extract_dataset(archive, staging, dest)
    else:  # pragma: no cover - parse_source makes only the three kinds
        raise TypeError(source)


# Failures of a source we report and move past; anything else is a bug and propagates.
_SOURCE_FAILURES = (SourceError, OSError, EOFError, zlib.error, shutil.Error)


def fetch_dataset(name: str, cfg: dict, out_dir: str | os.PathLike) -> dict[str, Any]:
    """Write dataset ``name`` to ``out_dir`` (replaced as a whole) and return its source.json.

    Raises DatasetConfigError for a malformed entry, DatasetUnavailable when no
    source works (``out_dir`` is then left as it was).
    """
    out_dir = Path(out_dir)
    enabled, sources = validate_config(name, cfg)
    info: dict[str, Any] = {
        "dataset": name,
        "enabled": enabled,
        "format": cfg.get("format"),
        "sources": [s.spec for s in sources],
    }
    if not enabled:
        info.update(source=None, tried=[], files=0, bytes=0, checksum=None)
        with atomic_dir(out_dir) as tmp:
            write_json(tmp / SOURCE_JSON, info)
        return info

    timeout = float(cfg.get("timeout", DEFAULT_TIMEOUT))
    attempts: list[dict] = []
    for source in sources:
        try:
            with (
                atomic_dir(out_dir) as tmp,
                tempfile.TemporaryDirectory(
                    prefix=f".{out_dir.name}.download-", dir=out_dir.parent
                ) as scratch,
            ):
                fetch_source(source, tmp, Path(scratch) / "staging", timeout=timeout, name=name)
                tree = tree_checksum(tmp)
                if tree["files"] == 0:
                    raise SourceError("delivered no files")
                attempts.append({"source": source.spec, "kind": source.kind, "ok": True})
                info.update(source={"spec": source.spec, "kind": source.kind}, tried=attempts, **tree)
                write_json(tmp / SOURCE_JSON, info)
            return info
        except _SOURCE_FAILURES as exc:
            attempts.append({"source": source.spec, "kind": source.kind, "ok": False, "error": _reason(exc)})
    raise DatasetUnavailable(name, attempts, [s.hint() for s in sources])


def _reason(exc: BaseException) -> str:
    if isinstance(exc, SourceError):
        return str(exc)
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.strerror or type(exc).__name__}: {exc.filename}"
    return f"{type(exc).__name__}: {exc}"
