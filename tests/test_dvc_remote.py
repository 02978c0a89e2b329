"""Sharing data and models through a DVC remote (README "Working as a team").

Clone A is the session's tiny `dvc repro` (conftest.py `tiny_repo`): it adds a folder remote and
pushes. Clone B is a fresh `git clone` of A that only pulls: its workspace must be complete
(`dvc status` clean, `dvc repro` trains nothing) and `maskpipe predict` must work on the pulled
model. Machine-local training state (checkpoints, the tensor cache) must not reach the remote.
"""

from __future__ import annotations

import hashlib
import json
import sys
import time
from pathlib import Path

import pytest
import yaml
from tiny_pipeline import run

pytestmark = pytest.mark.slow


def _md5(path: Path) -> str:
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _remote_hashes(remote: Path) -> set[str]:
    """DVC 3 stores an object as <remote>/files/md5/<first 2 hex>/<other 30 hex>[.dir]."""
    return {p.parent.name + p.name.split(".")[0] for p in (remote / "files" / "md5").glob("*/*")}


def test_push_in_one_clone_pull_in_another(tiny_repo, tmp_path, shared):
    a, env = tiny_repo.path, tiny_repo.env
    remote = tmp_path / "dvc-remote"
    models = list(yaml.safe_load((a / "params.yaml").read_text())["models"])

    # clone A: the README's commands, with a shared folder as the remote
    run(["dvc", "remote", "add", "-d", "storage", str(remote)], a, env)
    run(["git", "add", ".dvc/config"], a, env)
    run(["git", "commit", "-q", "-m", "DVC remote: a shared folder"], a, env)
    t0 = time.perf_counter()
    run(["dvc", "push"], a, env)
    push_s = time.perf_counter() - t0

    pushed = _remote_hashes(remote)
    for name in models:
        assert _md5(a / f"data/models/{name}/model.pt") in pushed, f"{name}/model.pt not pushed"
    # local training state exists in A but stays out of the remote (and out of git)
    local_only = [*a.glob("data/models/*/checkpoint.pt"), *a.glob("data/cache/**/*.npy")]
    assert any(p.name == "checkpoint.pt" for p in local_only) and any(p.suffix == ".npy" for p in local_only)
    leaked = [str(p.relative_to(a)) for p in local_only if _md5(p) in pushed]
    assert not leaked, f"pushed to the remote: {leaked}"
    tracked = run(["git", "ls-files"], a, env).stdout.splitlines()
    assert not [f for f in tracked if f.startswith("data/cache/") or f.endswith("checkpoint.pt")], tracked

    # clone B: a fresh clone that only pulls
    b = tmp_path / "clone-b"
    run(["git", "clone", "-q", str(a), str(b)], tmp_path, env)
    t0 = time.perf_counter()
    run(["dvc", "pull"], b, env)
    pull_s = time.perf_counter() - t0
    print(f"\ndvc push {push_s:.1f} s, dvc pull {pull_s:.1f} s ({len(pushed)} objects)")

    for name in models:
        assert _md5(b / f"data/models/{name}/model.pt") == _md5(a / f"data/models/{name}/model.pt")
    assert not list(b.glob("data/models/*/checkpoint.pt")) and not (b / "data/cache").exists()
    status = run(["dvc", "status"], b, env).stdout
    assert "up to date" in status.lower(), status
    again = run(["dvc", "repro"], b, env).stdout
    assert "up to date" in again.lower() and "Running stage" not in again, again
    assert not (b / "data/cache").exists(), "dvc repro in clone B rebuilt the tensor cache (it trained)"

    image = sorted((shared / "kaggle-face-mask-detection" / "images").glob("*.png"))[0]
    out = b / "predictions.json"
    run(
        [sys.executable, "-m", "maskpipe.cli", "predict", str(image), "-m", "mask_cnn", "-o", str(out), "-q"],
        b,
        env,
    )
    report = json.loads(out.read_text())
    assert report["summary"]["inputs"] == 1 and report["summary"]["errors"] == 0, report["summary"]
    assert report["summary"]["faces"] >= 1, report  # the pulled classifier labelled a face
