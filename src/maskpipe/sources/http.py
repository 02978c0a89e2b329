"""Download a URL to a file: temp file, SHA-256 verified, then renamed."""

from __future__ import annotations

import hashlib
import http.client
import os
import urllib.error
import urllib.request
from pathlib import Path

from tqdm import tqdm

from maskpipe.io import atomic_path
from maskpipe.sources import SourceError

USER_AGENT = "maskpipe-download/1"
CHUNK = 1 << 20


class ChecksumMismatch(SourceError):
    pass


def sha256_file(path: str | os.PathLike) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(CHUNK), b""):
            digest.update(block)
    return digest.hexdigest()


def download_url(
    url: str,
    dest: str | os.PathLike,
    sha256: str,
    *,
    timeout: float = 60.0,
    desc: str | None = None,
) -> Path:
    """Fetch ``url`` into ``dest``; the file appears only once its SHA-256 equals ``sha256``.

    ``timeout`` bounds the connection and every read (a stalled server fails,
    a slow but moving one does not). Raises SourceError (ChecksumMismatch for a
    wrong digest) with a one-line reason; nothing is left at ``dest`` then.
    """
    dest = Path(dest)
    expected = sha256.lower().removeprefix("sha256:")
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    try:
        with atomic_path(dest, suffix=".part") as tmp:
            digest = hashlib.sha256()
            received = 0
            with urllib.request.urlopen(request, timeout=timeout) as response:
                length = response.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                with (
                    open(tmp, "wb") as out,
                    tqdm(
                        total=total,
                        unit="B",
                        unit_scale=True,
                        unit_divisor=1024,
                        desc=desc or dest.name,
                        disable=None,
                        leave=False,
                    ) as bar,
                ):
                    for block in iter(lambda: response.read(CHUNK), b""):
                        out.write(block)
                        digest.update(block)
                        received += len(block)
                        bar.update(len(block))
            if total is not None and received != total:
                raise SourceError(f"{url}: download cut short ({received} of {total} bytes)")
            actual = digest.hexdigest()
            if actual != expected:
                raise ChecksumMismatch(
                    f"{url}: sha256 mismatch (expected {expected}, got {actual}; "
                    f"{received} bytes) - corrupt download or wrong checksum in params.yaml"
                )
    except urllib.error.HTTPError as exc:
        raise SourceError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise SourceError(f"{url}: cannot connect ({exc.reason})") from None
    except TimeoutError:
        raise SourceError(f"{url}: no answer within {timeout:g} s") from None
    except http.client.IncompleteRead as exc:
        raise SourceError(f"{url}: download cut short ({len(exc.partial)} bytes read)") from None
    except (http.client.HTTPException, ConnectionError) as exc:
        raise SourceError(f"{url}: connection failed ({type(exc).__name__}: {exc})") from None
    return dest
