"""Kaggle source, through the official ``kaggle`` package.

The package authenticates when it is imported and calls ``exit(1)`` (plus a
help text on stdout) when no credentials are found, so it is imported lazily,
inside a guard that turns all of that into a one-line SourceError.
"""

from __future__ import annotations

import contextlib
import io
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from maskpipe.sources import KaggleSource, SourceError
from maskpipe.sources.archive import extract_dataset


@contextlib.contextmanager
def _requests_default_timeout(seconds: float) -> Iterator[None]:
    """Give every `requests` call made inside the block a timeout when it has none.

    The kaggle client sends its API requests without one; offline or behind a
    black-holing firewall that would hang the stage forever.
    """
    try:
        from requests.adapters import HTTPAdapter
    except ImportError:  # kaggle depends on requests; nothing to patch without it
        yield
        return
    original = HTTPAdapter.send

    def send(self, request, *args, **kwargs):
        if kwargs.get("timeout") is None:
            kwargs["timeout"] = seconds
        return original(self, request, *args, **kwargs)

    HTTPAdapter.send = send
    try:
        yield
    finally:
        HTTPAdapter.send = original


def kaggle_api():
    """The ``kaggle.api`` object (its import prints and may exit without credentials)."""
    sink = io.StringIO()
    try:
        with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
            import kaggle  # noqa: PLC0415 - lazy on purpose, see module doc
    except ImportError:
        raise SourceError("the 'kaggle' package is not installed (pip install kaggle)") from None
    except (Exception, SystemExit) as exc:
        raise SourceError(f"the kaggle package failed to load ({type(exc).__name__}: {exc})") from None
    return kaggle.api


def fetch_kaggle(source: KaggleSource, dest: Path, staging: Path, *, timeout: float = 60.0) -> None:
    """Download ``source.ref`` with the kaggle API and extract it into ``dest``."""
    api = kaggle_api()
    sink = io.StringIO()
    with tempfile.TemporaryDirectory(prefix="kaggle-", dir=staging.parent) as tmp:
        try:
            with contextlib.redirect_stdout(sink), _requests_default_timeout(timeout):
                api.authenticate()
                api.dataset_download_files(
                    source.ref, path=tmp, force=True, quiet=not sys.stderr.isatty(), unzip=False
                )
        except SystemExit:  # authenticate() calls exit(1) when it finds no credentials
            raise SourceError(
                "no Kaggle credentials (~/.kaggle/kaggle.json, KAGGLE_USERNAME + KAGGLE_KEY, "
                "KAGGLE_API_TOKEN or `kaggle auth login`)"
            ) from None
        except Exception as exc:  # requests / kagglesdk raise many kinds: network, 401/403/404
            raise SourceError(f"Kaggle download of {source.ref} failed ({_describe(exc)})") from None
        files = sorted(p for p in Path(tmp).rglob("*") if p.is_file())
        if not files:
            raise SourceError(f"Kaggle download of {source.ref} produced no file")
        if len(files) > 1:
            names = ", ".join(p.name for p in files[:5])
            raise SourceError(
                f"Kaggle download of {source.ref} produced several files ({names}), expected one zip"
            )
        extract_dataset(files[0], staging, dest)


def _describe(exc: BaseException) -> str:
    try:
        import requests
    except ImportError:  # pragma: no cover - kaggle depends on requests
        requests = None
    if requests is not None:
        if isinstance(exc, requests.exceptions.Timeout):
            return "kaggle.com did not answer in time"
        if isinstance(exc, requests.exceptions.ConnectionError):
            reason = str(exc)
            if "NameResolution" in reason or "resolve" in reason:
                return "cannot reach kaggle.com: name resolution failed (offline?)"
            return f"cannot reach kaggle.com ({_first_line(reason)})"
        if isinstance(exc, requests.exceptions.HTTPError) and exc.response is not None:
            code = exc.response.status_code
            meaning = {
                401: "credentials rejected",
                403: "access denied (accept the dataset's rules on kaggle.com?)",
                404: "no such dataset",
            }.get(code, exc.response.reason or "")
            return f"HTTP {code} {meaning}".strip()
    first = _first_line(str(exc))
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _first_line(text: str) -> str:
    lines = text.strip().splitlines()
    first = lines[0] if lines else ""
    return first[:200] + "..." if len(first) > 200 else first
