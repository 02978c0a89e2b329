"""Soak test of `maskpipe serve`: does its memory level off under load? (issue 13)

    python benchmarks/bench_serve_soak.py [--rounds 3] [--requests 200] [--clients 8] [--workers 2]
                                          [--model data/models/mask_cnn/model.pt] [--src src]

Starts the real server (`python -m maskpipe.cli serve`, uvicorn on a free 127.0.0.1 port) on a
trained model when ``--model`` is given, else on a small randomly initialised artifact built
like the tests build theirs (tests/model_factory.py; speed and memory do not depend on the
weights). ``--clients`` threads post the real Kaggle photos of ../shared/datasets (raw PNG
bodies, cycling) until each round's ``--requests`` are answered. Prints the server's RSS
(VmRSS from /proc) and thread count at start, after every round and at the end, requests/s
per round, and whether RSS levelled off: the ratio of the last round's RSS growth to the
first round's (the first round includes warm-up: allocator pools, PyTorch caches); "levelled
off" when the last round grew by at most 10 % of the first and at most 50 MB.
``--src`` runs another checkout's code (e.g. the code before a fix) against the same load.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
IMAGES = REPO.parent / "shared" / "datasets" / "kaggle-face-mask-detection" / "images"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def proc_status(pid: int) -> tuple[float, int]:
    """(RSS in MB, threads) of a process, from /proc/<pid>/status."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        fields[key] = value.strip()
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["Threads"])


def small_model(folder: Path) -> Path:
    sys.path.insert(0, str(REPO / "tests"))
    from model_factory import make_model

    return make_model(folder, "multiclass", image_size=64)


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before answering /health")
        try:
            with urllib.request.urlopen(f"{base}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise SystemExit(f"server did not answer /health within {timeout:g} s")


def run_round(base: str, images: list[bytes], requests: int, clients: int) -> tuple[float, dict[int, int]]:
    """Post ``requests`` images with ``clients`` threads; (seconds, count per HTTP status)."""
    lock = threading.Lock()
    counter = iter(range(requests))
    statuses: dict[int, int] = {}

    def client() -> None:
        while True:
            with lock:
                i = next(counter, None)
            if i is None:
                return
            req = urllib.request.Request(
                f"{base}/predict",
                data=images[i % len(images)],
                method="POST",
                headers={"Content-Type": "image/png"},
            )
            try:
                with urllib.request.urlopen(req, timeout=300) as r:
                    r.read()
                    status = r.status
            except urllib.error.HTTPError as exc:
                status = exc.code
            with lock:
                statuses[status] = statuses.get(status, 0) + 1

    threads = [threading.Thread(target=client) for _ in range(clients)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return time.perf_counter() - t0, statuses


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--requests", type=int, default=200, help="requests per round")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--workers", type=int, default=None, help="predict.serve.workers for the server")
    ap.add_argument("--model", default=None, help="model.pt to serve (default: a small random one)")
    ap.add_argument("--src", default=str(REPO / "src"), help="the maskpipe source folder to run")
    args = ap.parse_args()
    images = [p.read_bytes() for p in sorted(IMAGES.glob("*.png"))]
    if not images:
        raise SystemExit(f"no Kaggle images under {IMAGES}")

    with tempfile.TemporaryDirectory() as tmp:
        model = Path(args.model) if args.model else small_model(Path(tmp))
        port = free_port()
        env = {**os.environ, "PYTHONPATH": args.src, "MLFLOW_DISABLE_TELEMETRY": "true"}
        cmd = [sys.executable, "-m", "maskpipe.cli", "serve", "--model", str(model), "--port", str(port)]
        if args.workers is not None:
            cmd += ["--workers", str(args.workers)]
        proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        base = f"http://127.0.0.1:{port}"
        try:
            wait_ready(base, proc)
            rss0, threads0 = proc_status(proc.pid)
            print(
                f"code {args.src}; model {model.name if args.model else 'small random (64 px small_cnn)'}; "
                f"{len(images)} Kaggle images; {args.rounds} rounds x {args.requests} requests, "
                f"{args.clients} clients"
            )
            print(f"start   RSS {rss0:7.1f} MB  threads {threads0}")
            rss = [rss0]
            total_s = 0.0
            for r in range(1, args.rounds + 1):
                seconds, statuses = run_round(base, images, args.requests, args.clients)
                total_s += seconds
                now, threads = proc_status(proc.pid)
                rss.append(now)
                print(
                    f"round {r} RSS {now:7.1f} MB  (+{now - rss[-2]:6.1f})  threads {threads:3d}  "
                    f"{args.requests / seconds:5.1f} req/s  statuses {dict(sorted(statuses.items()))}"
                )
            first, last = rss[1] - rss[0], rss[-1] - rss[-2]
            print(f"end     RSS {rss[-1]:7.1f} MB  overall {args.rounds * args.requests / total_s:.1f} req/s")
            ratio = last / first if first > 0 else float("nan")
            verdict = (
                "levelled off" if args.rounds > 1 and last <= min(0.1 * first, 50.0) else "still growing"
            )
            print(
                f"last-round growth / first-round growth = {last:.1f} / {first:.1f} MB = {ratio:.2f} -> {verdict}"
            )
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    main()
