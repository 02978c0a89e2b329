"""Wall time of 4 queued `mask_cnn` experiments run one at a time (`dvc queue start -j 1`) vs two
at a time (`-j 2`), measured in the same run.

    python benchmarks/bench_queue.py [--variants 4] [--profile cpu]

Setup: a temp git + DVC repo holding the real train stage of dvc.yaml, stages/train.py and the
code it depends on, params.yaml (only mask_cnn, the chosen profile) and the face-mask-folders
mirror (../shared/datasets) as 256 px crops in data/crops (85 % train, 15 % val), `dvc add`-ed.
One `dvc repro` first builds the tensor cache and the baseline. Each round queues the same
variants (learning rate / batch size) with `dvc exp run --queue -S ...`, then times
`dvc queue start -j J` until every task has finished. Runs log to the temp repo's mlflow.db.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_ddp import make_repo  # noqa: E402  (the mirror as crops + index.csv)

MODEL = "mask_cnn"
VARIANTS = [
    f"models.{MODEL}.lr=0.0005",
    f"models.{MODEL}.lr=0.002",
    f"models.{MODEL}.batch_size=16",
    f"models.{MODEL}.batch_size=64",
    f"models.{MODEL}.lr=0.003",
    f"models.{MODEL}.weight_decay=0.0001",
]


def sh(cmd: list[str], cwd: Path, env: dict) -> str:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"bench_queue: {' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc.stdout


def setup(root: Path, profile: str, env: dict) -> None:
    stage = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]["train"]
    for dep in stage["do"]["deps"]:
        src = REPO / dep
        if src.is_dir():
            shutil.copytree(src, root / dep, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.is_file():
            (root / dep).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, root / dep)
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"]["profile"] = profile
    params["models"] = {MODEL: params["models"][MODEL]}
    params["models"][MODEL]["datasets"] = ["mask_folders"]
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": {"train": stage}}, sort_keys=False))
    make_repo(root)
    (root / "data/synthetic").mkdir(parents=True)
    (root / "data/synthetic/index.csv").write_text("synth_id,path,source_face_id,label,split\n")
    (root / ".gitignore").write_text(
        "/mlflow.db\n/mlartifacts/\n/data/cache/\n/data/models/*/checkpoint.pt\n"
    )
    sh(["git", "init", "-q"], root, env)
    sh(["dvc", "init", "-q"], root, env)
    sh(["dvc", "add", "-q", "data/crops", "data/synthetic"], root, env)
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-q", "-m", "queue benchmark repo"], root, env)
    sh(["dvc", "repro"], root, env)  # baseline + tensor cache (shared by the queued runs)
    sh(["git", "add", "-A"], root, env)
    sh(["git", "commit", "-q", "-m", "baseline"], root, env)


def queue_round(root: Path, env: dict, variants: list[str], jobs: int) -> float:
    for v in variants:
        sh(["dvc", "exp", "run", "--queue", "-S", v], root, env)
    t0 = time.perf_counter()
    sh(["dvc", "queue", "start", "-j", str(jobs)], root, env)
    while True:
        status = sh(["dvc", "queue", "status"], root, env)
        lines = [ln for ln in status.splitlines() if ln.strip()]
        if not any(w in ln for ln in lines for w in ("Queued", "Running")):
            break
        time.sleep(1)
    elapsed = time.perf_counter() - t0
    failed = [ln for ln in lines if "Failed" in ln]
    if failed:
        sys.exit("bench_queue: failed experiments:\n" + "\n".join(failed))
    sh(["dvc", "queue", "stop"], root, env)
    sh(["dvc", "queue", "remove", "--success"], root, env)
    return elapsed


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--variants", type=int, default=4)
    ap.add_argument("--profile", default="cpu")
    args = ap.parse_args()
    variants = VARIANTS[: args.variants]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "DVC_"))}
    env.update(
        PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}",
        DVC_NO_ANALYTICS="1",
        MLFLOW_DISABLE_TELEMETRY="true",
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@example.invalid",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@example.invalid",
    )
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        root = Path(tmp)
        t0 = time.perf_counter()
        setup(root, args.profile, env)
        print(f"setup + baseline dvc repro: {time.perf_counter() - t0:.1f} s", flush=True)
        times = {}
        for jobs in (1, 2):
            times[jobs] = queue_round(root, env, variants, jobs)
            print(f"-j {jobs}: {len(variants)} queued {MODEL} experiments in {times[jobs]:.1f} s", flush=True)
    print(
        f"\n{len(variants)} x {MODEL} ({args.profile} profile), {os.cpu_count()} cores: "
        f"-j 1 {times[1]:.1f} s, -j 2 {times[2]:.1f} s, ratio -j2/-j1 {times[2] / times[1]:.2f}"
    )


if __name__ == "__main__":
    main()
