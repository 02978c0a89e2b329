"""Multi-process training on torch.distributed: `train.nproc_per_node: N` in params.yaml.

With N > 1 the train stage re-executes itself under `torchrun --standalone --nproc_per_node N`
(``relaunch``). Each of the N processes then (``setup``):
- joins the process group: NCCL on CUDA (one GPU per process, ``cuda:<LOCAL_RANK>``), gloo on CPU;
- builds the tensor cache on rank 0 first, the others read it afterwards (``rank0_first``);
- trains a DistributedDataParallel copy of the model on its shard of every epoch's permutation:
  ``ShardedBatchLoader`` draws indices from torch's DistributedSampler over the cached arrays
  (seeded from (seed, epoch), so resuming at epoch e gives every rank the batches it would have had);
- validates on the whole validation split, so every rank takes the same early-stopping,
  LR-schedule and best-epoch decisions (the weights are identical after every step);
- averages its training loss over the ranks (``all_reduce_mean``) for the history.
Only rank 0 writes outputs, checkpoints and MLflow records (maskpipe.training.run).

The effective batch is N x batch_size (DDP averages gradients over the ranks), as in
torchvision's reference scripts; scale `lr` yourself if you want to keep lr per sample.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from maskpipe.training.config import ConfigError
from maskpipe.training.data import BatchLoader

RELAUNCHED = "MASKPIPE_DISTRIBUTED_CHILD"  # set by relaunch(): never relaunch twice


def nproc_per_node(train_cfg: dict | None) -> int:
    value = (train_cfg or {}).get("nproc_per_node", 1)
    try:
        n = int(value if value is not None else 1)
    except (TypeError, ValueError):
        raise ConfigError(f"train.nproc_per_node: expected a whole number >= 1, got {value!r}") from None
    if n < 1:
        raise ConfigError(f"train.nproc_per_node: expected a whole number >= 1, got {value!r}")
    return n


def under_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def should_relaunch(train_cfg: dict | None) -> bool:
    """True in the stage's first process when more than one process is asked for."""
    return nproc_per_node(train_cfg) > 1 and not under_torchrun() and not os.environ.get(RELAUNCHED)


def torchrun_command(nproc: int, argv: Sequence[str]) -> list[str]:
    """`torchrun --standalone --nproc_per_node N <script> <args>` with this interpreter."""
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={int(nproc)}",
        *argv,
    ]


def relaunch(nproc: int, argv: Sequence[str]) -> None:
    """Replace this process with torchrun running the same command N times (does not return).

    exec, not a child: DVC's SIGTERM (`dvc queue kill`) reaches torchrun, which forwards it.
    """
    os.environ[RELAUNCHED] = "1"
    # torchrun's default of 1 OpenMP thread per worker would silently ignore train.num_threads
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    cmd = torchrun_command(nproc, argv)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(cmd[0], cmd)


@dataclass
class DistContext:
    """Where this process stands; a world of 1 (no torchrun) makes every method a no-op."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    backend: str | None = None
    device: torch.device | None = None

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()

    @contextlib.contextmanager
    def rank0_first(self) -> Iterator[None]:
        """Rank 0 runs the block first (e.g. builds the tensor cache), then the others."""
        if self.active and not self.is_main:
            self.barrier()
        yield
        if self.active and self.is_main:
            self.barrier()

    def wrap(self, model: nn.Module, device: torch.device) -> nn.Module:
        """The model to train: DistributedDataParallel over the ranks (the model itself when alone)."""
        if not self.active:
            return model
        model.to(device)
        ids = [device.index] if device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=ids)

    def train_loader(self, loader: BatchLoader) -> BatchLoader:
        return ShardedBatchLoader.from_loader(loader, self) if self.active else loader

    def close(self) -> None:
        if self.active and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()


def setup(device: torch.device, num_threads: int = 0) -> DistContext:
    """Join the process group when torchrun started us; returns the context (and the device to use)."""
    if not under_torchrun() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return DistContext(device=device)
    rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        backend = "nccl"
    else:
        backend = "gloo"
        # N processes share the cores train.num_threads was set for (measured: 2 processes x 2
        # threads on 2 cores ran slower than 2 x 1)
        if num_threads > 0:
            torch.set_num_threads(max(1, num_threads // world))
    if not torch.distributed.is_initialized():
        torch.distributed.init_process_group(backend=backend)
    return DistContext(rank=rank, world_size=world, local_rank=local_rank, backend=backend, device=device)


def unwrap(model: nn.Module) -> nn.Module:
    """The plain model inside a DistributedDataParallel wrapper (state_dict keys without `module.`)."""
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


class ShardedBatchLoader(BatchLoader):
    """BatchLoader over this rank's share of each epoch: torch's DistributedSampler over the cache.

    Every rank gets the same number of batches (the sampler pads by repeating indices), which
    DDP needs: a rank with one batch more would wait forever for the others' gradients.
    """

    def __init__(self, *args, rank: int = 0, world_size: int = 1, **kwargs):
        super().__init__(*args, **kwargs)
        self.rank, self.world_size = int(rank), int(world_size)
        self.sampler = torch.utils.data.distributed.DistributedSampler(
            range(len(self.images)),
            num_replicas=self.world_size,
            rank=self.rank,
            shuffle=self.train,
            seed=self.seed,
            drop_last=False,
        )

    @classmethod
    def from_loader(cls, loader: BatchLoader, ctx: DistContext) -> ShardedBatchLoader:
        if loader.balanced:  # DistributedSampler's order would silently replace the balanced draw
            raise ConfigError(
                "class_balance: sampler is not supported with train.nproc_per_node > 1 yet; "
                "use class_balance: weights, or one process"
            )
        return cls(
            loader.images,
            loader.batch_size,
            loader.augmenter,
            train=loader.train,
            seed=loader.seed,
            device=loader.device,
            prefetch=loader.prefetch,
            rank=ctx.rank,
            world_size=ctx.world_size,
        )

    # plain() is BatchLoader's: all images in order on every rank, so BatchNorm recalibration
    # gives identical statistics on every rank

    def __len__(self) -> int:
        full, rest = divmod(len(self.sampler), self.batch_size)
        return full + (1 if rest > (1 if self.train else 0) else 0)

    def _batches(self):
        self.sampler.set_epoch(self.epoch)
        order = np.fromiter(iter(self.sampler), dtype=np.int64)
        # augmentation differs per rank (else both ranks would flip the same way in step)
        g = torch.Generator().manual_seed((self.seed * 100_003 + self.epoch) * 1_009 + self.rank)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = torch.from_numpy(self.images.gather(idx)).to(self.device, non_blocking=True)
            y = torch.from_numpy(self.images.labels[idx]).to(self.device)
            yield self.augmenter(x, generator=g, train=self.train), y

    def all_reduce_mean(self, value: float) -> float:
        """The mean of ``value`` over the ranks (equal shard sizes: the mean training loss)."""
        t = torch.tensor([float(value)], dtype=torch.float64)
        if torch.distributed.get_backend() == "nccl":
            t = t.to(self.device)
        torch.distributed.all_reduce(t)
        return float(t.item()) / self.world_size
