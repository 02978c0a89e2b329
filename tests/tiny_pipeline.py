"""One `dvc repro` of the whole pipeline on the tiny profile, in a temp git repo copy of this repo.

Several slow tests need the same reproduced pipeline (test_pipeline_e2e checks its outputs,
test_dvc_remote pushes it to a folder remote and pulls it into a second clone). The run takes
most of a minute on 2 cores, so conftest.py wraps `build_tiny_repo` in one session-scoped
fixture (`tiny_repo`) and every such test shares it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import yaml


def copy_repo(repo: Path, dest: Path) -> None:
    """The files git knows about (tracked or not ignored), without data/ and metrics/ outputs."""
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=repo,
        capture_output=True,
        check=True,
        text=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = repo / rel
        if not src.is_file() or rel.startswith(("data/", "metrics/")):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def tiny_params(path: Path, shared: Path) -> None:
    params = yaml.safe_load(path.read_text())
    # The temp copy has no ../shared beside it: point mirrors at the real folder.
    for cfg in params["datasets"].values():
        cfg["sources"] = [
            f"mirror:{shared / s.split('/datasets/', 1)[1]}"
            if isinstance(s, str) and s.startswith("mirror:") and "/datasets/" in s
            else s
            for s in cfg["sources"]
        ]
    params["train"]["profile"] = "tiny"
    params["crop"]["max_images_per_dataset"] = 40
    params["synthesize"]["max_faces"] = 24
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def clean_env() -> dict[str, str]:
    """This interpreter's tools first on PATH, a git identity, no MLflow / DVC overrides."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MLFLOW_TRACKING", "DVC_", "GIT_")) or k == "DVC_NO_ANALYTICS"
    }
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    env.update(
        GIT_AUTHOR_NAME="ci",
        GIT_AUTHOR_EMAIL="ci@example.invalid",
        GIT_COMMITTER_NAME="ci",
        GIT_COMMITTER_EMAIL="ci@example.invalid",
        DVC_NO_ANALYTICS="1",
        MLFLOW_DISABLE_TELEMETRY="true",
    )
    return env


def run(cmd: list[str], cwd: Path, env: dict, timeout: float | None = None) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@dataclass
class TinyRepo:
    path: Path
    env: dict
    repro: subprocess.CompletedProcess  # the first `dvc repro` (its output)


def build_tiny_repo(repo: Path, shared: Path, dest: Path) -> TinyRepo:
    """Copy, switch to the tiny profile, commit, `dvc repro`, commit the lock and metrics."""
    dest.mkdir(parents=True, exist_ok=True)
    copy_repo(repo, dest)
    tiny_params(dest / "params.yaml", shared)
    env = clean_env()
    run(["git", "init", "-q"], dest, env)
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-q", "-m", "tiny profile"], dest, env)
    proc = run(["dvc", "repro"], dest, env)
    # what a team member commits after a run: dvc.lock, the git-tracked metrics, .gitignore files
    run(["git", "add", "-A"], dest, env)
    run(["git", "commit", "-q", "-m", "dvc repro (tiny)"], dest, env)
    return TinyRepo(dest, env, proc)
