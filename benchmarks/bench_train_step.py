"""Seconds per training step and per inference batch of each model as build_model makes it
(weights in channels_last, NHWC) against the same network with plain NCHW weights, in one run.

    python benchmarks/bench_train_step.py [--profile cpu] [--steps 8] [--models mask_cnn ...]

Each model's resolved config (architecture, image size, batch size, frozen blocks) under the profile;
random inputs, so no data is needed. Prints the median step time of both layouts and their ratio
(NCHW / NHWC: above 1 means channels_last is faster), for training and for inference at batch 64.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from maskpipe.params import load_params  # noqa: E402
from maskpipe.training.config import resolve_model_config  # noqa: E402
from maskpipe.training.engine import make_optimizer, seed_everything  # noqa: E402
from maskpipe.training.losses import build_loss  # noqa: E402
from maskpipe.training.models import build_model  # noqa: E402
from maskpipe.training.tasks import get_task  # noqa: E402


def median_seconds(fn, steps: int) -> float:
    fn()  # warm-up: oneDNN picks its kernels on the first call
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def timings(config, nchw: bool, steps: int) -> tuple[float, float]:
    """(train step s, inference batch s) for one network (one ensemble member)."""
    seed_everything(0)
    model = build_model(replace(config, ensemble=1), load_weights=False)
    if nchw:
        model = model.to(memory_format=torch.contiguous_format)
    size, n = config.image_size, config.batch_size
    x = torch.rand(n, 3, size, size)
    y = torch.randint(0, max(len(config.classes), 1), (n,))
    loss_fn = build_loss(config, class_counts=[n] * max(len(config.classes), 1))
    optimizer = make_optimizer(model, config)
    task = get_task(config.task)

    def train_step() -> None:
        model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), task.target(x, y))
        loss.backward()
        optimizer.step()

    batch = torch.rand(64, 3, size, size)

    def infer() -> None:
        model.eval()
        with torch.no_grad():
            model(batch)

    return median_seconds(train_step, steps), median_seconds(infer, steps)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", default="cpu")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models", nargs="*", default=None, help="default: every model in params.yaml")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(REPO / "params.yaml")
    names = args.models or list(params["models"])
    print(f"profile {args.profile}, {args.threads} threads, median of {args.steps} steps")
    print(
        f"{'model':28} {'arch':20} {'px':>4} {'train NCHW':>11} {'NHWC':>7} {'ratio':>6}"
        f" {'infer NCHW':>11} {'NHWC':>7} {'ratio':>6}"
    )
    for name in names:
        config = resolve_model_config(params, name, args.profile)
        train_a, infer_a = timings(config, nchw=True, steps=args.steps)
        train_b, infer_b = timings(config, nchw=False, steps=args.steps)
        print(
            f"{name:28} {config.arch:20} {config.image_size:4d} {train_a:10.3f}s {train_b:6.3f}s"
            f" {train_a / train_b:6.2f} {infer_a:10.3f}s {infer_b:6.3f}s {infer_a / infer_b:6.2f}"
        )


if __name__ == "__main__":
    main()
