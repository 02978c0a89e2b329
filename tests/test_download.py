"""Stage `download`: sources, safe extraction, atomic output, source.json, the stage CLI."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import subprocess
import sys
import tarfile
import threading
import zipfile
from functools import partial
from pathlib import Path

import pytest
import yaml

from maskpipe.download import (
    DatasetConfigError,
    DatasetUnavailable,
    fetch_dataset,
    tree_checksum,
)
from maskpipe.sources import (
    KaggleSource,
    MirrorSource,
    SourceError,
    SourceSpecError,
    UrlSource,
    parse_source,
)
from maskpipe.sources.archive import UnsafeArchiveError, safe_extract
from maskpipe.sources.http import ChecksumMismatch, download_url
from maskpipe.sources.kaggle_source import kaggle_api

# ----------------------------------------------------------------- fixtures


def make_tree(root: Path) -> dict[str, bytes]:
    """A small dataset: nested folders, a binary file, a name with a space."""
    files = {
        "annotations/a0.xml": b"<annotation><filename>a0.png</filename></annotation>\n",
        "annotations/a1.xml": b"<annotation><filename>a1.png</filename></annotation>\n",
        "images/a0.png": bytes(range(256)) * 40,
        "images/a 1.png": b"\x89PNG\r\n\x1a\n" + b"\x00" * 500,
    }
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return files


def zip_bytes(members: dict[str, bytes], top: str = "") -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(top + name, data)
    return buf.getvalue()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def leftovers(parent: Path) -> list[str]:
    """Temp files/folders the download machinery may have left beside its output."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith("."))


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # keep pytest output clean
        pass

    def do_GET(self):
        if self.path == "/cut.zip":  # announces the full size, sends half, hangs up
            data = (Path(self.directory) / "data.zip").read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@pytest.fixture
def http_root(tmp_path):
    """(folder served, base URL) of a real HTTP server on 127.0.0.1."""
    root = tmp_path / "www"
    root.mkdir()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(_Handler, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield root, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def url_cfg(url: str, digest: str, **extra) -> dict:
    return {
        "enabled": True,
        "format": "voc",
        "sources": [{"url": url, "sha256": digest}],
        "timeout": 10,
        **extra,
    }


# ----------------------------------------------------------------- parse_source


def test_parse_source_forms(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    mirror = parse_source("mirror:../shared/datasets/lfw-subset")
    assert isinstance(mirror, MirrorSource)
    # Relative mirrors resolve against the main repo (DVC_ROOT), not the cwd: exp --temp works.
    assert mirror.path == (tmp_path / "../shared/datasets/lfw-subset").resolve()
    assert parse_source("some/folder").path == tmp_path / "some/folder"
    assert parse_source(str(tmp_path / "abs")).path == tmp_path / "abs"
    kaggle = parse_source("kaggle:andrewmvd/face-mask-detection")
    assert isinstance(kaggle, KaggleSource) and kaggle.ref == "andrewmvd/face-mask-detection"
    assert parse_source("kaggle:andrewmvd/face-mask-detection/1").ref == "andrewmvd/face-mask-detection/1"
    url = parse_source({"url": "https://example.org/x.zip", "sha256": "sha256:" + "AB" * 32})
    assert isinstance(url, UrlSource) and url.sha256 == "ab" * 32


@pytest.mark.parametrize(
    "spec, fragment",
    [
        ("https://example.org/x.zip", "sha256"),
        ({"url": "https://example.org/x.zip"}, "sha256"),
        ({"url": "https://example.org/x.zip", "sha256": "abc"}, "64-hex"),
        ({"url": "ftp://example.org/x.zip", "sha256": "a" * 64}, "http"),
        ({"url": "https://e.org/x.zip", "sha256": "a" * 64, "md5": "x"}, "unknown keys"),
        ("kaggle:no-slash", "kaggle:<owner>/<slug>"),
        ("kaggle:o/s/latest", "kaggle:<owner>/<slug>"),
        ("kagle:owner/slug", "unknown kind"),
        ("", "expected"),
        (42, "expected"),
    ],
)
def test_parse_source_rejects_malformed(spec, fragment):
    with pytest.raises(SourceSpecError, match=fragment):
        parse_source(spec)


def test_malformed_entry_is_a_config_error_naming_the_place(tmp_path):
    cfg = {"enabled": True, "sources": ["mirror:x", "kagle:a/b"]}
    with pytest.raises(DatasetConfigError, match=r"datasets\.ds\.sources\[1\].*unknown kind"):
        fetch_dataset("ds", cfg, tmp_path / "out")
    with pytest.raises(DatasetConfigError, match=r"datasets\.ds\.enabled"):
        fetch_dataset("ds", {"enabled": "yes", "sources": ["x"]}, tmp_path / "out")
    with pytest.raises(DatasetConfigError, match=r"datasets\.ds\.sources"):
        fetch_dataset("ds", {"enabled": True, "sources": []}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------- tree checksum


def test_tree_checksum_is_content_based_and_matches_sha256sum_lines(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    files = make_tree(a)
    make_tree(b)
    os.utime(b / "images/a0.png", (0, 0))  # timestamps do not count
    (b / "source.json").write_text("{}")  # nor does the top-level source.json
    ta, tb = tree_checksum(a), tree_checksum(b)
    assert ta == tb
    assert ta["files"] == len(files) and ta["bytes"] == sum(map(len, files.values()))
    listing = "".join(f"{sha256(files[rel])}  {rel}\n" for rel in sorted(files))
    assert ta["checksum"] == "sha256:" + sha256(listing.encode())
    (b / "images/a0.png").write_bytes(b"changed")
    assert tree_checksum(b)["checksum"] != ta["checksum"]
    (b / "images/a0.png").rename(b / "images/renamed.png")
    assert tree_checksum(b)["checksum"] != ta["checksum"]


# ----------------------------------------------------------------- mirror source


def test_mirror_copies_folder_byte_for_byte_and_writes_source_json(tmp_path):
    src = tmp_path / "mirror"
    files = make_tree(src)
    out = tmp_path / "raw" / "ds"
    info = fetch_dataset("ds", {"enabled": True, "format": "voc", "sources": [f"mirror:{src}"]}, out)

    for rel, data in files.items():
        assert (out / rel).read_bytes() == data
    written = json.loads((out / "source.json").read_text())
    assert written == info
    assert written["dataset"] == "ds" and written["enabled"] is True and written["format"] == "voc"
    assert written["source"] == {"spec": f"mirror:{src}", "kind": "mirror"}
    assert written["files"] == len(files)
    assert written["checksum"] == tree_checksum(src)["checksum"] == tree_checksum(out)["checksum"]
    assert sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()) == sorted(
        [*files, "source.json"]
    )
    assert leftovers(out.parent) == []


def test_second_source_used_when_first_mirror_missing(tmp_path):
    src = tmp_path / "second"
    make_tree(src)
    missing = tmp_path / "nowhere"
    cfg = {"enabled": True, "sources": [f"mirror:{missing}", str(src)]}
    info = fetch_dataset("ds", cfg, tmp_path / "out")
    assert info["source"]["spec"] == str(src)
    first, second = info["tried"]
    assert first["ok"] is False and str(missing) in first["error"] and "not found" in first["error"]
    assert second == {"source": str(src), "kind": "mirror", "ok": True}
    assert info["files"] == 4


def test_empty_mirror_folder_is_a_failure(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetUnavailable, match="folder is empty"):
        fetch_dataset("ds", {"sources": [str(tmp_path / "empty")]}, tmp_path / "out")


def test_mirror_pointing_at_a_local_archive_is_extracted(tmp_path):
    (tmp_path / "ds.zip").write_bytes(zip_bytes({"images/x.png": b"x", "images/y.png": b"y"}, top="Top/"))
    info = fetch_dataset("ds", {"sources": [f"mirror:{tmp_path / 'ds.zip'}"]}, tmp_path / "out")
    assert (tmp_path / "out/images/x.png").read_bytes() == b"x"  # single top folder stripped
    assert info["files"] == 2


def test_interrupted_copy_keeps_previous_output_and_leaves_no_temp(tmp_path, monkeypatch):
    src = tmp_path / "mirror"
    make_tree(src)
    out = tmp_path / "raw" / "ds"
    out.mkdir(parents=True)
    (out / "previous.txt").write_text("previous run")

    import maskpipe.sources.mirror as mirror_mod

    calls = {"n": 0}
    real_copy2 = mirror_mod.shutil.copy2

    def flaky_copy2(s, d):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt  # Ctrl-C in the middle of the copy
        return real_copy2(s, d)

    monkeypatch.setattr(mirror_mod.shutil, "copy2", flaky_copy2)
    with pytest.raises(KeyboardInterrupt):
        fetch_dataset("ds", {"sources": [str(src)]}, out)
    assert [p.name for p in out.iterdir()] == ["previous.txt"]
    assert leftovers(out.parent) == []


def test_disabled_dataset_writes_only_source_json(tmp_path):
    out = tmp_path / "raw" / "off"
    info = fetch_dataset("off", {"enabled": False, "format": "folders", "sources": ["mirror:/nowhere"]}, out)
    assert [p.name for p in out.iterdir()] == ["source.json"]
    written = json.loads((out / "source.json").read_text())
    assert written == info
    assert written["enabled"] is False and written["files"] == 0 and written["source"] is None


# ----------------------------------------------------------------- URL source (real local HTTP server)


def test_url_source_downloads_verifies_and_extracts(http_root, tmp_path):
    root, base = http_root
    members = {"annotations/a.xml": b"<annotation/>", "images/a.png": b"\x89PNG" + b"1" * 3000}
    data = zip_bytes(members)
    (root / "data.zip").write_bytes(data)
    out = tmp_path / "raw" / "ds"
    info = fetch_dataset("ds", url_cfg(f"{base}/data.zip", sha256(data)), out)
    for rel, content in members.items():
        assert (out / rel).read_bytes() == content
    assert info["source"]["kind"] == "url" and f"{base}/data.zip" in info["source"]["spec"]
    assert info["files"] == 2
    assert leftovers(out.parent) == []


def test_download_url_writes_only_verified_files(http_root, tmp_path):
    root, base = http_root
    (root / "f.bin").write_bytes(b"payload" * 1000)
    dest = tmp_path / "dl" / "f.bin"
    download_url(f"{base}/f.bin", dest, sha256(b"payload" * 1000), timeout=10)
    assert dest.read_bytes() == b"payload" * 1000
    with pytest.raises(ChecksumMismatch, match="sha256 mismatch"):
        download_url(f"{base}/f.bin", tmp_path / "dl" / "g.bin", "0" * 64, timeout=10)
    assert sorted(p.name for p in dest.parent.iterdir()) == ["f.bin"]  # no g.bin, no .part


def test_url_wrong_sha256_fails_and_leaves_nothing(http_root, tmp_path):
    root, base = http_root
    (root / "data.zip").write_bytes(zip_bytes({"a.txt": b"a"}))
    out = tmp_path / "raw" / "ds"
    with pytest.raises(DatasetUnavailable) as err:
        fetch_dataset("ds", url_cfg(f"{base}/data.zip", "1" * 64), out)
    assert "sha256 mismatch" in str(err.value)
    assert not out.exists() and leftovers(out.parent) == []


def test_url_truncated_archive_fails_and_leaves_nothing(http_root, tmp_path):
    root, base = http_root
    full = zip_bytes({f"images/{i}.png": os.urandom(2000) for i in range(5)})
    (root / "data.zip").write_bytes(full)
    (root / "half.zip").write_bytes(full[: len(full) // 2])
    out = tmp_path / "raw" / "ds"
    # The checksum matches the truncated file: the download "succeeds", the archive is corrupt.
    with pytest.raises(DatasetUnavailable, match="corrupt or truncated zip"):
        fetch_dataset("ds", url_cfg(f"{base}/half.zip", sha256(full[: len(full) // 2])), out)
    # The server hangs up half-way through a response that announced the full size.
    with pytest.raises(DatasetUnavailable, match="cut short"):
        fetch_dataset("ds", url_cfg(f"{base}/cut.zip", sha256(full)), out)
    assert not out.exists() and leftovers(out.parent) == []


def test_url_zip_slip_rejected_nothing_written_outside(http_root, tmp_path):
    root, base = http_root
    outside_abs = tmp_path / "abs_evil.txt"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("good.txt", b"fine")
        zf.writestr("../evil.txt", b"escaped")
        zf.writestr(str(outside_abs), b"escaped")
    assert "../evil.txt" in zipfile.ZipFile(io.BytesIO(buf.getvalue())).namelist()
    (root / "slip.zip").write_bytes(buf.getvalue())
    out = tmp_path / "raw" / "ds"
    with pytest.raises(DatasetUnavailable, match="escapes the folder"):
        fetch_dataset("ds", url_cfg(f"{base}/slip.zip", sha256(buf.getvalue())), out)
    assert not out.exists() and leftovers(out.parent) == []
    assert not list(tmp_path.rglob("evil.txt")) and not outside_abs.exists()

    only_abs = zip_bytes({"good.txt": b"fine", str(outside_abs): b"escaped"})
    (root / "abs.zip").write_bytes(only_abs)
    with pytest.raises(DatasetUnavailable, match="absolute member path"):
        fetch_dataset("ds", url_cfg(f"{base}/abs.zip", sha256(only_abs)), out)
    assert not outside_abs.exists() and not out.exists()


def test_url_tar_gz_with_dotdot_rejected(http_root, tmp_path):
    root, base = http_root
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [("ok/a.txt", b"fine"), ("ok/../../evil.txt", b"escaped")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (root / "slip.tar.gz").write_bytes(buf.getvalue())
    out = tmp_path / "raw" / "ds"
    with pytest.raises(DatasetUnavailable, match="escapes the folder"):
        fetch_dataset("ds", url_cfg(f"{base}/slip.tar.gz", sha256(buf.getvalue())), out)
    assert not out.exists() and not list(tmp_path.rglob("evil.txt"))


def test_url_tar_gz_single_top_folder_is_stripped(http_root, tmp_path):
    root, base = http_root
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in [("lfw/Ann/Ann_0001.jpg", b"a"), ("lfw/Bob/Bob_0001.jpg", b"b")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    (root / "lfw.tgz").write_bytes(buf.getvalue())
    out = tmp_path / "raw" / "lfw"
    fetch_dataset("lfw", url_cfg(f"{base}/lfw.tgz", sha256(buf.getvalue())), out)
    assert sorted(p.name for p in out.iterdir()) == ["Ann", "Bob", "source.json"]


def test_url_http_error_and_refused_connection_are_reasons(http_root, tmp_path):
    _root, base = http_root
    with pytest.raises(SourceError, match="HTTP 404"):
        download_url(f"{base}/missing.zip", tmp_path / "x.zip", "0" * 64, timeout=10)
    import socket

    with socket.socket() as sock:  # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(SourceError, match="cannot connect"):
        download_url(f"http://127.0.0.1:{port}/x.zip", tmp_path / "x.zip", "0" * 64, timeout=5)
    assert not (tmp_path / "x.zip").exists()


# ----------------------------------------------------------------- safe_extract, more shapes


def _zip_with_symlink(name: str, target: str, extra: dict[str, bytes] | None = None, links=()) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for n, data in (extra or {}).items():
            zf.writestr(n, data)
        for link_name, link_target in [(name, target), *links]:
            info = zipfile.ZipInfo(link_name)
            info.create_system = 3  # unix
            info.external_attr = 0o120777 << 16
            zf.writestr(info, link_target)
    return buf.getvalue()


def test_safe_extract_rejects_escaping_links(tmp_path):
    cases = {
        "zip_abs_link.zip": _zip_with_symlink("link", "/etc"),
        "zip_up_link.zip": _zip_with_symlink("d/link", "../../outside"),
        # each link looks harmless alone; together "b" is dest/.. (outside)
        "zip_chain.zip": _zip_with_symlink("a", ".", links=[("b", "a/..")]),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    for kind, link_name, target in [("sym", "s", "../../etc"), ("hard", "h", "../outside.txt")]:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            info = tarfile.TarInfo(link_name)
            info.type = tarfile.SYMTYPE if kind == "sym" else tarfile.LNKTYPE
            info.linkname = target
            tar.addfile(info)
        (tmp_path / f"tar_{kind}.tar").write_bytes(buf.getvalue())
    archives = sorted(tmp_path.glob("*.zip")) + sorted(tmp_path.glob("*.tar"))
    assert len(archives) == 5
    for archive in archives:
        with pytest.raises(UnsafeArchiveError):
            safe_extract(archive, tmp_path / f"out_{archive.stem}")


def test_safe_extract_skips_macosx(tmp_path):
    (tmp_path / "ok.zip").write_bytes(zip_bytes({"images/a.png": b"png", "__MACOSX/images/._a.png": b"junk"}))
    dest = safe_extract(tmp_path / "ok.zip", tmp_path / "out")
    assert (dest / "images/a.png").read_bytes() == b"png"
    assert not (dest / "__MACOSX").exists()


def _tar_with(members: list[tuple[str, bytes, str]]) -> bytes:
    """(name, tar type, link target) members after one harmless regular file."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        good = tarfile.TarInfo("images/a.png")
        good.size = 3
        tar.addfile(good, io.BytesIO(b"png"))
        for name, kind, target in members:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, target
            tar.addfile(info)
    return buf.getvalue()


@pytest.mark.parametrize(
    "fmt,member,expected",
    [
        # links that stay inside the folder were accepted before issue 13: now any link is refused
        ("tar", ("images/latest.png", tarfile.SYMTYPE, "a.png"), "symlink"),
        ("tar", ("images/copy.png", tarfile.LNKTYPE, "images/a.png"), "hardlink"),
        ("tar", ("dev/null", tarfile.CHRTYPE, ""), "device"),
        ("tar", ("dev/sda", tarfile.BLKTYPE, ""), "device"),
        ("tar", ("pipe", tarfile.FIFOTYPE, ""), "FIFO"),
        ("zip", ("images/latest.png", 0o120777, "a.png"), "symlink"),
        ("zip", ("pipe", 0o010644, ""), "FIFO"),
        ("zip", ("dev/null", 0o020666, ""), "character device"),
    ],
)
def test_any_link_or_special_member_refuses_the_archive_before_writing(tmp_path, fmt, member, expected):
    name, kind, target = member
    if fmt == "tar":
        data = _tar_with([member])
    else:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("images/a.png", b"png")
            info = zipfile.ZipInfo(name)
            info.create_system = 3  # unix
            info.external_attr = kind << 16
            zf.writestr(info, target)
        data = buf.getvalue()
    archive = tmp_path / f"bad.{fmt}"
    archive.write_bytes(data)
    with pytest.raises(UnsafeArchiveError, match=rf"bad\.{fmt}: member '{name}' is a {expected}"):
        safe_extract(archive, tmp_path / "out")
    assert sorted(p.name for p in tmp_path.iterdir()) == [archive.name]  # nothing written at all


def test_url_archive_with_an_inside_symlink_is_refused(http_root, tmp_path):
    root, base = http_root
    data = _tar_with([("images/latest.png", tarfile.SYMTYPE, "a.png")])
    (root / "ds.tar").write_bytes(data)
    out = tmp_path / "raw" / "ds"
    with pytest.raises(DatasetUnavailable, match="is a symlink"):
        fetch_dataset("ds", url_cfg(f"{base}/ds.tar", sha256(data)), out)
    assert not out.exists() and leftovers(out.parent) == []


def test_not_an_archive_is_a_clear_failure(tmp_path):
    (tmp_path / "page.zip").write_bytes(b"<html>rate limited</html>")
    with pytest.raises(SourceError, match="not a zip or tar archive"):
        safe_extract(tmp_path / "page.zip", tmp_path / "out")


# ----------------------------------------------------------------- kaggle source


def _fake_kaggle(monkeypatch, payload: bytes, calls: list):
    api = kaggle_api()  # the real package object; only its network calls are replaced

    def dataset_download_files(dataset, path=None, force=False, quiet=True, unzip=False, licenses=()):
        calls.append({"dataset": dataset, "path": path, "unzip": unzip})
        slug = dataset.split("/")[1]
        Path(path, f"{slug}.zip").write_bytes(payload)

    monkeypatch.setattr(api, "authenticate", lambda: calls.append("auth"))
    monkeypatch.setattr(api, "dataset_download_files", dataset_download_files)
    return api


def test_kaggle_source_downloads_and_extracts(monkeypatch, tmp_path):
    members = {"annotations/x.xml": b"<annotation/>", "images/x.png": b"png"}
    calls: list = []
    _fake_kaggle(monkeypatch, zip_bytes(members), calls)
    out = tmp_path / "raw" / "kfmd"
    cfg = {
        "enabled": True,
        "sources": [f"mirror:{tmp_path / 'missing'}", "kaggle:andrewmvd/face-mask-detection"],
    }
    info = fetch_dataset("kfmd", cfg, out)
    assert calls[0] == "auth"
    assert calls[1]["dataset"] == "andrewmvd/face-mask-detection" and calls[1]["unzip"] is False
    for rel, content in members.items():
        assert (out / rel).read_bytes() == content
    assert info["source"] == {"spec": "kaggle:andrewmvd/face-mask-detection", "kind": "kaggle"}
    assert info["tried"][0]["ok"] is False
    assert not Path(calls[1]["path"]).exists()  # the download folder is temporary
    assert leftovers(out.parent) == []


def test_kaggle_zip_slip_rejected(monkeypatch, tmp_path):
    _fake_kaggle(monkeypatch, zip_bytes({"../evil.txt": b"x"}), [])
    with pytest.raises(DatasetUnavailable, match="escapes the folder"):
        fetch_dataset("k", {"sources": ["kaggle:o/s"]}, tmp_path / "raw" / "k")
    assert not list(tmp_path.rglob("evil.txt"))


def test_kaggle_without_credentials_is_a_reason_not_a_crash(monkeypatch, tmp_path, capsys):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    with pytest.raises(DatasetUnavailable) as err:  # the real authenticate() runs and exits
        fetch_dataset("k", {"sources": ["kaggle:o/s"]}, tmp_path / "raw" / "k")
    assert "no Kaggle credentials" in str(err.value)
    assert "Authentication required" not in capsys.readouterr().out  # kaggle's help text is swallowed


def test_kaggle_network_failure_is_a_reason(monkeypatch, tmp_path):
    import requests

    api = kaggle_api()
    monkeypatch.setattr(api, "authenticate", lambda: None)

    def offline(*args, **kwargs):
        raise requests.exceptions.ConnectionError("Failed to resolve 'api.kaggle.com'")

    monkeypatch.setattr(api, "dataset_download_files", offline)
    with pytest.raises(DatasetUnavailable, match="cannot reach kaggle.com: name resolution failed"):
        fetch_dataset("k", {"sources": ["kaggle:o/s"]}, tmp_path / "raw" / "k")


def test_kaggle_http_errors_are_explained(monkeypatch, tmp_path):
    import requests

    api = kaggle_api()
    monkeypatch.setattr(api, "authenticate", lambda: None)

    def forbidden(*args, **kwargs):
        response = requests.models.Response()
        response.status_code = 403
        raise requests.exceptions.HTTPError("403 Client Error", response=response)

    monkeypatch.setattr(api, "dataset_download_files", forbidden)
    with pytest.raises(DatasetUnavailable, match="HTTP 403 access denied"):
        fetch_dataset("k", {"sources": ["kaggle:o/s"]}, tmp_path / "raw" / "k")


def test_kaggle_requests_get_a_timeout(tmp_path):
    """The kaggle client sends requests without a timeout; the guard adds one."""
    import socket

    import requests

    from maskpipe.sources.kaggle_source import _requests_default_timeout

    original = requests.adapters.HTTPAdapter.send
    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/"
        with _requests_default_timeout(0.3), pytest.raises(requests.exceptions.Timeout):
            requests.Session().get(url)
    assert requests.adapters.HTTPAdapter.send is original  # restored afterwards


# ----------------------------------------------------------------- nothing works


def test_all_sources_failing_names_dataset_sources_and_remedies(http_root, monkeypatch, tmp_path):
    _root, base = http_root
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("KAGGLE_CONFIG_DIR", str(tmp_path / "kaggle-config"))
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "raw" / "mafa"
    out.mkdir(parents=True)
    (out / "kept.txt").write_text("from an earlier run")
    cfg = {
        "enabled": True,
        "sources": [
            f"mirror:{tmp_path / 'no-mirror'}",
            "kaggle:someone/mafa",
            {"url": f"{base}/gone.zip", "sha256": "a" * 64},
        ],
        "timeout": 10,
    }
    with pytest.raises(DatasetUnavailable) as err:
        fetch_dataset("mafa", cfg, out)
    message = str(err.value)
    assert message.startswith("dataset 'mafa': no source could provide it")
    assert f"1. mirror:{tmp_path / 'no-mirror'}: not found" in message
    assert "2. kaggle:someone/mafa: no Kaggle credentials" in message
    assert f"3. {base}/gone.zip" in message and "HTTP 404" in message
    assert f"put the dataset folder (or its downloaded .zip / .tar.gz) at {tmp_path / 'no-mirror'}" in message
    assert "kaggle.json" in message and "datasets.mafa.enabled=false" in message
    assert [a["source"] for a in err.value.attempts] == [
        f"mirror:{tmp_path / 'no-mirror'}",
        "kaggle:someone/mafa",
        f"{base}/gone.zip (sha256 aaaaaaaaaaaa...)",
    ]
    assert [p.name for p in out.iterdir()] == ["kept.txt"]  # a failed run never damages the output
    assert leftovers(out.parent) == []


def _run_stage(repo: Path, *args: str, env_extra: dict | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, **(env_extra or {})}
    return subprocess.run(
        [sys.executable, str(repo / "stages/download.py"), *args],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_stage_cli_exits_1_with_one_message_and_no_traceback(repo, tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(
        yaml.safe_dump(
            {
                "datasets": {
                    "lfw": {
                        "enabled": True,
                        "format": "lfw",
                        "sources": [f"mirror:{tmp_path / 'absent'}", "kaggle:a/b"],
                    },
                }
            }
        )
    )
    home = tmp_path / "home"
    result = _run_stage(
        repo,
        "lfw",
        "--params",
        str(params),
        "--out",
        str(tmp_path / "out"),
        env_extra={
            "HOME": str(home),
            "KAGGLE_CONFIG_DIR": str(home / ".kaggle"),
            "KAGGLE_USERNAME": "",
            "KAGGLE_KEY": "",
        },
    )
    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert "dataset 'lfw': no source could provide it" in result.stderr
    assert f"mirror:{tmp_path / 'absent'}" in result.stderr and "kaggle:a/b" in result.stderr
    assert not (tmp_path / "out").exists()

    unknown = _run_stage(repo, "nope", "--params", str(params))
    assert (
        unknown.returncode == 2
        and "no dataset 'nope'" in unknown.stderr
        and "Traceback" not in unknown.stderr
    )


def test_stage_cli_success_prints_summary(repo, tmp_path):
    src = tmp_path / "m"
    make_tree(src)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump({"datasets": {"tiny": {"enabled": True, "sources": [str(src)]}}}))
    result = _run_stage(repo, "tiny", "--params", str(params), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert "tiny: 4 files" in result.stdout
    assert json.loads((tmp_path / "out/source.json").read_text())["files"] == 4


# ----------------------------------------------------------------- the real mirror


@pytest.mark.shared
def test_real_mirror_kaggle_face_mask_detection(shared, repo, tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(repo))  # params' relative mirror paths resolve from the repo
    cfg = yaml.safe_load((repo / "params.yaml").read_text())["datasets"]["kaggle_face_mask_detection"]
    out = tmp_path / "raw" / "kaggle_face_mask_detection"
    info = fetch_dataset("kaggle_face_mask_detection", cfg, out)
    assert len(list((out / "annotations").glob("*.xml"))) == 853
    assert len(list((out / "images").glob("*.png"))) == 200
    assert info["files"] == 1053 and info["source"]["kind"] == "mirror"
    mirror = shared / "kaggle-face-mask-detection"
    assert info["checksum"] == tree_checksum(mirror)["checksum"]
    assert (out / "annotations/maksssksksss0.xml").read_bytes() == (
        mirror / "annotations/maksssksksss0.xml"
    ).read_bytes()


# ----------------------------------------------------------------- links and special files (issue 13)


def _cve_2025_4517_tar(path: Path, extract_dir_len: int, escape_ups: int, payload: str) -> None:
    """A tar built like CPython's test_realpath_limit_attack (CVE-2025-4517).

    Nested dir + symlink pairs make the *resolved* path of ``a/b/.../p/lll..`` pass PATH_MAX,
    so ``os.path.realpath`` stops expanding there and the tarfile ``data`` filter checks names
    lexically. ``escape`` then points ``escape_ups`` folders above the extraction folder while
    looking inside it by name, and ``escape/<payload>`` is written through it.
    """
    steps = "abcdefghijklmnop"
    max_path = os.pathconf(path.parent, "PC_PATH_MAX")
    component = "d" * ((max_path - extract_dir_len - 1) // (len(steps) + 1))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:

        def add(name, kind, target="", data=b""):
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = kind, target, 0o777 if kind != tarfile.REGTYPE else 0o644
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data) if data else None)

        prefix = ""
        for step in steps:
            add(os.path.join(prefix, component), tarfile.DIRTYPE)
            add(os.path.join(prefix, step), tarfile.SYMTYPE, component)
            prefix = os.path.join(prefix, component)
        linkpath = os.path.join(*steps, "l" * 254)  # physically: the extraction folder itself
        add(linkpath, tarfile.SYMTYPE, os.path.join(*[".."] * len(steps)))
        add("escape", tarfile.SYMTYPE, os.path.join(linkpath, *[".."] * escape_ups, "outside"))
        add(f"escape/{payload}", tarfile.REGTYPE, data=b"escaped")
    path.write_bytes(buf.getvalue())


def test_cve_2025_4517_tar_mirror_is_refused_and_writes_nothing_outside(tmp_path):
    repo = tmp_path / "repo"
    out = repo / "data" / "raw" / "ds"
    out.parent.mkdir(parents=True)
    beside = tmp_path / "outside"  # the folder beside the repository the archive aims at
    beside.mkdir()
    # fetch_dataset extracts into <raw>/.ds.download-XXXXXXXX/staging: 5 levels below tmp_path.
    staging_len = len(str(out.parent / ".ds.download-XXXXXXXX" / "staging"))
    evil = tmp_path / "mirror" / "evil.tar"
    evil.parent.mkdir()
    _cve_2025_4517_tar(evil, staging_len, escape_ups=5, payload="pwned.txt")
    with pytest.raises(DatasetUnavailable) as err:
        fetch_dataset("ds", {"sources": [f"mirror:{evil}"]}, out)
    assert "evil.tar" in str(err.value) and "symlink" in str(err.value)
    assert list(beside.iterdir()) == []
    assert not list(tmp_path.rglob("pwned.txt"))
    assert not out.exists() and leftovers(out.parent) == []


def test_unknown_key_in_a_dataset_entry_names_the_nearest(tmp_path):
    with pytest.raises(
        DatasetConfigError,
        match=r"^params\.yaml: datasets\.ds\.sourcs: unknown key "
        r"\(did you mean 'sources'\?\)$",
    ):
        fetch_dataset("ds", {"enabled": True, "sourcs": ["x"]}, tmp_path / "out")
    with pytest.raises(DatasetConfigError, match=r"datasets\.ds\.timeout: must be > 0"):
        fetch_dataset("ds", {"sources": ["x"], "timeout": 0}, tmp_path / "out")
