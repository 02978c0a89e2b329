"""`dvc exp run` end to end on the tiny profile, in a throwaway git + DVC repo.

The temp repo holds the real resolve and train stages of dvc.yaml (copied from this repo), the
real stages/resolve.py, stages/train.py and the code folders they depend on, params.yaml with train.profile: tiny and
only mask_cnn under `models:`, and fake crops. maskpipe itself is imported from the installed
package, like in the real repo.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from training_fakes import REPO, make_crops, make_synthetic, tiny_params

pytestmark = pytest.mark.slow

MODEL = "mask_cnn"


def run(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    if proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture()
def exp_repo(tmp_path):
    if shutil.which("git") is None:
        pytest.skip("git not installed")
    root = tmp_path / "repo"
    root.mkdir()
    bin_dir = Path(sys.executable).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "DVC_", "GIT_"))}
    env.update(
        {
            "PATH": f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
            "GIT_AUTHOR_NAME": "test",
            "GIT_AUTHOR_EMAIL": "test@example.com",
            "GIT_COMMITTER_NAME": "test",
            "GIT_COMMITTER_EMAIL": "test@example.com",
            "DVC_NO_ANALYTICS": "1",
            "MLFLOW_DISABLE_TELEMETRY": "true",
        }
    )
    stages = {k: yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][k] for k in ("resolve", "train")}
    for dep in {d for stage in stages.values() for d in stage["do"]["deps"]}:
        src = REPO / dep
        if src.is_dir():
            shutil.copytree(src, root / dep, ignore=shutil.ignore_patterns("__pycache__"), dirs_exist_ok=True)
        elif src.is_file():
            (root / dep).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / dep)
    params = tiny_params(epochs=2)
    params["models"] = {MODEL: params["models"][MODEL]}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}, sort_keys=False))
    crops = make_crops(
        root, {"mask_folders": ["with_mask", "without_mask"]}, {"train": 8, "val": 4, "test": 2}, size=40
    )
    make_synthetic(root, crops, size=40)
    (root / ".gitignore").write_text("/mlflow.db\n/mlartifacts/\n")
    run(["git", "init", "-q"], root, env)
    run(["dvc", "init", "-q"], root, env)
    run(["dvc", "config", "core.analytics", "false"], root, env)
    run(["dvc", "add", "-q", "data/crops", "data/synthetic"], root, env)
    run(["git", "add", "-A"], root, env)
    run(["git", "commit", "-q", "-m", "tiny training repo"], root, env)
    return root, env


def test_dvc_exp_run_trains_and_logs_to_the_main_store(exp_repo):
    root, env = exp_repo
    run(["dvc", "exp", "run", "-n", "lower-lr", "-S", f"models.{MODEL}.lr=0.0005"], root, env)

    shown = json.loads(run(["dvc", "exp", "show", "--json"], root, env).stdout)
    exps = [e for rev in shown for e in (rev.get("experiments") or [])]
    names = {e.get("name") for e in exps}
    assert "lower-lr" in names, shown
    exp = next(e for e in exps if e.get("name") == "lower-lr")
    data = exp["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["models"][MODEL]["lr"] == 0.0005

    model_dir = root / "data" / "models" / MODEL
    assert (model_dir / "model.pt").exists() and (root / f"metrics/plots/{MODEL}/history.csv").exists()
    info = json.loads((model_dir / "mlflow_run.json").read_text())
    assert info["tracking_uri"] == f"sqlite:///{root.resolve()}/mlflow.db"
    with sqlite3.connect(root / "mlflow.db") as db:
        runs = db.execute("select run_uuid, name, status from runs").fetchall()
        assert [(r[1], r[2]) for r in runs] == [(f"lower-lr/{MODEL}", "FINISHED")]
        tags = dict(db.execute("select key, value from tags where run_uuid=?", (runs[0][0],)).fetchall())
        params = dict(db.execute("select key, value from params where run_uuid=?", (runs[0][0],)).fetchall())
        steps = db.execute(
            "select step from metrics where run_uuid=? and key='train/loss' order by step", (runs[0][0],)
        ).fetchall()
    assert tags["dvc.exp_name"] == "lower-lr" and tags["dvc.stage"] == f"train@{MODEL}"
    assert params["lr"] == "0.0005" and [s[0] for s in steps] == [1, 2]
    assert info["run_id"] == runs[0][0]


def test_queued_experiment_lands_in_the_main_store(exp_repo):
    """`--queue` + `dvc queue start` run in .dvc/tmp/exps/...: the run still reaches <repo>/mlflow.db."""
    import time

    root, env = exp_repo
    run(["dvc", "exp", "run", "--queue", "-S", f"models.{MODEL}.lr=0.002"], root, env)
    run(["dvc", "queue", "start", "-j", "1"], root, env)
    status = ""
    for _ in range(240):
        status = run(["dvc", "queue", "status"], root, env).stdout
        if "Success" in status or "Failed" in status:
            break
        time.sleep(0.5)
    assert "Success" in status, status + run(["dvc", "queue", "logs", "-f", "--", "*"], root, env).stdout
    with sqlite3.connect(root / "mlflow.db") as db:
        runs = db.execute(
            "select r.name, r.status, p.value from runs r join params p on p.run_uuid = r.run_uuid "
            "where p.key = 'lr'"
        ).fetchall()
        location = db.execute("select artifact_location from experiments where name='maskpipe'").fetchone()[0]
    assert [(r[1], r[2]) for r in runs] == [("FINISHED", "0.002")]
    assert runs[0][0].endswith(f"/{MODEL}") and not runs[0][0].startswith("nogit")
    # the artifact root is the main repo's, not the deleted temp copy's
    assert location == (root.resolve() / "mlartifacts").as_uri()
    assert any((root / "mlartifacts").rglob("history.csv"))
    shown = run(["dvc", "exp", "show", "--json"], root, env).stdout
    assert '"lr": 0.002' in shown
