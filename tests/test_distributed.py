"""train.nproc_per_node: the train stage under torchrun with DistributedDataParallel (gloo on CPU).

The 2-process run goes through the real stage script: it relaunches itself as
`torchrun --standalone --nproc_per_node 2`, and both processes train on their shard of the tensor
cache. Checked: the stage finishes, only rank 0 wrote (one MLflow run, one model.pt, one history),
and the validation accuracy is within TOLERANCE of the same training in one process.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from training_fakes import REPO, make_crops, make_synthetic, tiny_params

from maskpipe.training.distributed import ShardedBatchLoader, nproc_per_node, should_relaunch
from maskpipe.training.run import TrainPaths, train_model

MODEL = "mask_cnn"
EPOCHS = 4
# 2 processes see the same images but take half as many optimizer steps per epoch (DDP averages
# the gradients of 2 x batch_size images), so the curves differ a little. With 16 validation images
# one image is 0.0625 of accuracy: up to 3 images' difference is accepted.
TOLERANCE = 0.19


def _fake_repo(root, params):
    crops = make_crops(
        root, {"mask_folders": ["with_mask", "without_mask"]}, {"train": 24, "val": 8, "test": 2}, size=40
    )
    make_synthetic(root, crops, size=40)
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def _params(nproc: int) -> dict:
    params = tiny_params(epochs=EPOCHS)
    params["models"] = {MODEL: params["models"][MODEL]}
    params["train"]["nproc_per_node"] = nproc
    return params


def test_nproc_per_node_setting():
    assert nproc_per_node({}) == 1 and nproc_per_node({"nproc_per_node": 2}) == 2
    with pytest.raises(ValueError, match="nproc_per_node"):
        nproc_per_node({"nproc_per_node": 0})
    assert not should_relaunch({"nproc_per_node": 1})


def test_shards_cover_every_image_once_per_epoch_with_equal_batch_counts():
    class Images:  # the two things the loader reads from an ImageSet
        def __init__(self, n):
            self.n, self.labels = n, np.arange(n)

        def __len__(self):
            return self.n

        def gather(self, idx):
            return np.repeat(np.asarray(idx, dtype=np.uint8)[:, None, None, None], 3, axis=1)

    def augment(x, generator=None, train=False):
        return x

    images = Images(21)
    seen = []
    loaders = [
        ShardedBatchLoader(images, 4, augment, train=True, seed=3, rank=r, world_size=2) for r in (0, 1)
    ]
    for loader in loaders:
        loader.set_epoch(2)
        seen.append([int(v) for _, y in loader for v in y])
    assert len(loaders[0]) == len(loaders[1])  # DDP deadlocks when one rank has a batch more
    assert set(seen[0]) | set(seen[1]) == set(range(21))
    assert len(set(seen[0]) & set(seen[1])) <= 1  # the sampler pads 21 to 22 with one repeat
    loaders[0].set_epoch(3)
    assert [int(v) for _, y in loaders[0] for v in y] != seen[0]  # a new order every epoch
    assert len(loaders[0].plain()) == len(list(loaders[0].plain())) and len(loaders[0].plain().images) == 21


@pytest.mark.slow
def test_balanced_sampler_is_refused_under_several_processes():
    """DistributedSampler's order would silently replace the class-balanced draw: say so instead."""
    from maskpipe.settings import ConfigError
    from maskpipe.training.data import BatchLoader, InMemoryImages
    from maskpipe.training.distributed import DistContext
    from maskpipe.training.transforms import BatchAugmenter

    images = InMemoryImages(np.zeros((6, 3, 4, 4), dtype=np.uint8), np.array([0, 0, 0, 0, 1, 2]))
    loader = BatchLoader(
        images, 2, BatchAugmenter.normalize_only([0] * 3, [1] * 3), train=True, balanced=True
    )
    with pytest.raises(ConfigError, match="class_balance: sampler is not supported"):
        ShardedBatchLoader.from_loader(loader, DistContext(rank=0, world_size=2))


def test_two_gloo_processes_train_like_one(tmp_path, monkeypatch):
    one, two = tmp_path / "one", tmp_path / "two"
    _fake_repo(one, _params(1))
    _fake_repo(two, _params(2))

    # 1 process, in this process (no MLflow: only the metrics are compared)
    monkeypatch.chdir(one)
    single = train_model(MODEL, _params(1), TrainPaths(), track=False, progress=False, log=lambda m: None)

    # 2 processes: the real stage, which relaunches itself under torchrun
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_TRACKING", "DVC_"))}
    env.update(MLFLOW_DISABLE_TELEMETRY="true")
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / "train.py"), MODEL],
        cwd=two,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    out = proc.stdout + proc.stderr

    # only rank 0 wrote: one model, one history, one finished MLflow run tagged with 2 processes
    # (mlartifacts/ holds the logged pyfunc model's own copy: one logged model, see the run count below)
    assert [p.relative_to(two).as_posix() for p in (two / "data").rglob("model.pt")] == [
        f"data/models/{MODEL}/model.pt"
    ]
    history = pd.read_csv(two / f"metrics/plots/{MODEL}/history.csv")
    assert list(history["epoch"]) == list(range(1, EPOCHS + 1))
    assert out.count(f"{MODEL} epoch 1/{EPOCHS}") == 1, out  # rank 1 logs nothing
    with sqlite3.connect(two / "mlflow.db") as db:
        runs = db.execute("select run_uuid, status from runs").fetchall()
        assert [r[1] for r in runs] == ["FINISHED"], runs
        tags = dict(db.execute("select key, value from tags where run_uuid=?", (runs[0][0],)).fetchall())
    assert tags["maskpipe.processes"] == "2"
    ckpt = torch.load(two / f"data/models/{MODEL}/checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["complete"] and ckpt["epoch"] == EPOCHS

    # the best epoch by the monitored val_loss, as train_model reports it
    best_two = float(history.loc[history["val_loss"].idxmin(), "val_accuracy"])
    best_one = float(single["best_val_accuracy"])
    print(f"\nval accuracy: 1 process {best_one:.3f}, 2 processes {best_two:.3f}")
    assert abs(best_two - best_one) <= TOLERANCE, (best_one, best_two)
    assert best_two > 0.5  # it learned something (chance is 0.5)
