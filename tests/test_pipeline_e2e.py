"""End-to-end: the whole DVC pipeline on the tiny profile, in a temp copy of the repo.

This is what CI relies on to prove that dvc.yaml, params.yaml, the stage scripts
and the library agree with each other.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml


def _copy_repo(repo: Path, dest: Path) -> None:
    files = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=repo, capture_output=True, check=True, text=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = repo / rel
        if not src.is_file() or rel.startswith(("data/", "metrics/")):
            continue
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(src, target)


def _tiny_params(path: Path, shared: Path) -> None:
    params = yaml.safe_load(path.read_text())
    # The temp copy has no ../shared beside it: point mirrors at the real folder.
    for cfg in params["datasets"].values():
        cfg["sources"] = [
            f"mirror:{shared / s.split('/datasets/', 1)[1]}"
            if isinstance(s, str) and s.startswith("mirror:") and "/datasets/" in s else s
            for s in cfg["sources"]
        ]
    params["train"]["profile"] = "tiny"
    params["crop"]["max_images_per_dataset"] = 40
    params["synthesize"]["max_faces"] = 24
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def _run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}"
    return proc


@pytest.mark.slow
def test_dvc_repro_tiny_profile(tmp_path, repo, shared):
    work = tmp_path / "maskpipe"
    _copy_repo(repo, work)
    _tiny_params(work / "params.yaml", shared)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("DVC_ROOT", None)
    env.pop("MLFLOW_TRACKING_URI", None)
    env.update(GIT_AUTHOR_NAME="ci", GIT_AUTHOR_EMAIL="ci@example.invalid",
               GIT_COMMITTER_NAME="ci", GIT_COMMITTER_EMAIL="ci@example.invalid")
    _run(["git", "init", "-q"], work, env)

    _run(["dvc", "repro"], work, env)

    index = pd.read_csv(work / "data/crops/index.csv")
    assert set(index["split"]) == {"train", "val", "test"}
    synthetic = pd.read_csv(work / "data/synthetic/index.csv")
    assert len(synthetic) > 0
    models = yaml.safe_load((work / "params.yaml").read_text())["models"]
    for name in models:
        assert (work / f"data/models/{name}/model.pt").exists(), name
        metrics = json.loads((work / f"metrics/models/{name}.json").read_text())
        assert any(k.startswith("test/") for k in metrics), (name, metrics)
        # stage-level plots: one folder per kind (dvc.yaml declares each once per model)
        assert any((work / f"metrics/plots/{name}/confusion").iterdir()), name
        assert (work / f"metrics/eval/{name}/summary.json").exists(), name
    report = (work / "metrics/report.md").read_text()
    for name in models:
        assert name in report
    # the MLflow store lands in the repo the pipeline ran in
    assert (work / "mlflow.db").exists()

    again = _run(["dvc", "repro"], work, env)
    assert "up to date" in again.stdout.lower(), again.stdout
