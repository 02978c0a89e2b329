"""Training time of 1 vs 2 processes (`train.nproc_per_node`: torchrun + DistributedDataParallel).

    python benchmarks/bench_ddp.py [--model mask_cnn] [--epochs 3] [--repeats 2] [--threads 2]

Data: the face-mask-folders mirror (../shared/datasets) as 256 px crops in a temp repo (85 % train,
15 % val), the CPU profile of the model. The tensor cache is built once before any timing. Each
configuration runs `torchrun --standalone --nproc_per_node N` on this file's worker, which calls
maskpipe.training.run.train_model (MLflow off: only training is timed) with train.num_threads
divided between the processes as the stage does. Reported: wall time of the torchrun command and
the training seconds of the history (sum of the epochs), median of --repeats, and the 2/1 ratios.
On a CPU-only machine both processes share the same cores, so no speed-up is expected there:
DDP pays off with one GPU (or one machine's worth of cores) per process.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))
MIRROR = REPO.parent / "shared" / "datasets" / "face-mask-folders"


def make_repo(root: Path, size: int = 256) -> None:
    import pandas as pd
    from PIL import Image

    rows = []
    for label in ("with_mask", "without_mask"):
        files = sorted(p for p in (MIRROR / label).iterdir() if p.is_file())
        if not files:
            sys.exit(f"bench_ddp: no images in {MIRROR / label}")
        for i, f in enumerate(files):
            rel = f"data/crops/mask_folders/{label}/{f.stem}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.open(f).convert("RGB").resize((size, size), Image.BILINEAR).save(
                root / rel, compress_level=1
            )
            split = "val" if i % 7 == 0 else "train"
            rows.append([f"{label}-{i}", rel, "mask_folders", f"{label}/{f.name}", label, split])
    pd.DataFrame(rows, columns=["face_id", "crop_path", "dataset", "source_image", "label", "split"]).to_csv(
        root / "data/crops/index.csv", index=False
    )


def params_for(model: str, epochs: int, threads: int, nproc: int) -> dict:
    import yaml

    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["train"].update(
        profile="cpu", device="cpu", num_threads=threads, nproc_per_node=nproc, cache_dir="data/cache"
    )
    params["profiles"]["cpu"].setdefault(model, {})["epochs"] = epochs
    params["profiles"]["cpu"][model]["patience"] = epochs + 1  # no early stop: equal work in every run
    params["models"] = {model: params["models"][model]}
    params["models"][model]["datasets"] = ["mask_folders"]
    return params


def worker(args) -> None:
    """One torchrun process: train, and rank 0 writes its summary to --out."""
    import yaml

    from maskpipe.training.run import TrainPaths, train_model

    params = yaml.safe_load(Path("params.yaml").read_text())
    summary = train_model(args.model, params, TrainPaths(), track=False, progress=False, log=lambda m: None)
    if os.environ.get("RANK", "0") == "0":
        Path(args.out).write_text(json.dumps(summary))


def warm_cache(root: Path, params: dict, model: str) -> None:
    from maskpipe.training.config import resolve_model_params
    from maskpipe.training.data import TensorCache, prepare_split, read_crops, read_synthetic

    cwd = os.getcwd()
    os.chdir(root)
    try:
        p = resolve_model_params(params, model)
        crops, synth = read_crops("data/crops/index.csv"), read_synthetic("data/synthetic/index.csv")
        cache = TensorCache(root / "data/cache", base=root, workers=2, progress=False)
        for split in ("train", "val"):
            prepare_split(crops, synth, p, split, cache)
    finally:
        os.chdir(cwd)


def timed_run(root: Path, model: str, nproc: int) -> tuple[float, float, dict]:
    out = root / f"summary-{nproc}.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "DVC_"))}
    env.update(
        PYTHONPATH=str(REPO / "src"), MLFLOW_DISABLE_TELEMETRY="true", MASKPIPE_DISTRIBUTED_CHILD="1"
    )  # the worker must not relaunch itself
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        str(Path(__file__).resolve()),
        "--worker",
        "--model",
        model,
        "--out",
        str(out),
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=root, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        sys.exit(f"bench_ddp: {nproc} process(es) failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    summary = json.loads(out.read_text())
    return wall, float(summary["train_seconds"]), summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="mask_cnn")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2, help="train.num_threads (divided among the processes)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        return worker(args)
    import yaml

    results: dict[int, list[tuple[float, float]]] = {1: [], 2: []}
    with tempfile.TemporaryDirectory(prefix="bench-ddp-") as tmp:
        root = Path(tmp)
        make_repo(root)
        warm_cache(root, params_for(args.model, args.epochs, args.threads, 1), args.model)
        summary = {}
        for _ in range(args.repeats):
            for nproc in (1, 2):  # interleaved, so a change in machine load hits both
                (root / "params.yaml").write_text(
                    yaml.safe_dump(params_for(args.model, args.epochs, args.threads, nproc), sort_keys=False)
                )
                wall, train_s, summary[nproc] = timed_run(root, args.model, nproc)
                results[nproc].append((wall, train_s))
                print(
                    f"  {nproc} process(es): wall {wall:6.1f} s, training {train_s:6.1f} s, "
                    f"val_accuracy {summary[nproc].get('best_val_accuracy')}",
                    flush=True,
                )
    n_train = summary[1]["n_train"]
    print(
        f"\n{args.model}, cpu profile, {args.epochs} epochs x {n_train} train images, "
        f"{os.cpu_count()} cores, train.num_threads {args.threads} (split between processes)"
    )
    med = {
        n: (statistics.median(w for w, _ in r), statistics.median(t for _, t in r))
        for n, r in results.items()
    }
    for n in (1, 2):
        print(
            f"{n} process(es): wall {med[n][0]:.1f} s, training {med[n][1]:.1f} s "
            f"({n_train * args.epochs / med[n][1]:.0f} img/s)"
        )
    print(
        f"ratio 2/1: wall {med[2][0] / med[1][0]:.2f}x, training {med[2][1] / med[1][1]:.2f}x "
        "(> 1 = slower with 2 processes)"
    )


if __name__ == "__main__":
    main()
