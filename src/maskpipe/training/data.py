"""Which images a model uses, and the fast path that feeds them to the engine.

Selection (``select_samples``) works on the two data contracts, data/crops/index.csv and
data/synthetic/index.csv:
- a real dataset name (kaggle_face_mask_detection, mask_folders, ...) selects its crops;
- the pseudo-dataset ``synthetic`` selects the synthetic masked faces (label with_mask) and,
  as negatives, the unmasked source crops they were made from (label without_mask). Synthetic
  ``mask_weared_incorrect`` images only enter a model whose ``classes`` list that label, so the
  binary with/without model leaves them out (a mask below the nose is neither class);
- rows whose label is not in ``classes`` are dropped; ``max_samples`` keeps at most that many
  rows per split (stratified by label, seeded).

Fast path: each dataset / split / image size is decoded and resized once into a uint8 array
(N, 3, S, S) saved as .npy under the cache folder (default data/cache, git-ignored, shared by
every model and by `dvc exp run --temp/--queue` runs because it lives under the repo root),
keyed by a hash of the file list and file contents, and memory-mapped afterwards.
``BatchLoader`` gathers batches from those arrays and augments them as tensors.
"""

from __future__ import annotations

import hashlib
import json
import os
import queue
import signal
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from multiprocessing import Pool
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from maskpipe.imaging import ImageReadError, open_rgb
from maskpipe.io import atomic_path, write_json
from maskpipe.labels import SYNTHETIC
from maskpipe.training.transforms import BatchAugmenter, Box, to_uint8_chw

if TYPE_CHECKING:
    from maskpipe.training.config import ModelConfig

SAMPLE_COLUMNS = ["path", "label", "label_idx", "dataset"]
CROP_COLUMNS = ["face_id", "crop_path", "dataset", "label", "split"]
SYNTH_COLUMNS = ["synth_id", "path", "source_face_id", "label", "split"]
NEGATIVE_LABEL = "without_mask"


class DataError(ValueError):
    """Missing or unusable training data; the message names the file or the selection."""


# ------------------------------------------------------------------------------ indexes
def read_index(path: str | os.PathLike, required: Sequence[str], optional: bool = False) -> pd.DataFrame:
    """Read an index CSV, checking its columns. ``optional``: a missing file gives an empty frame."""
    path = Path(path)
    if not path.exists():
        if optional:
            return pd.DataFrame(columns=list(required))
        raise DataError(f"{path}: index not found (run the stage that makes it first)")
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except Exception as exc:
        raise DataError(f"{path}: cannot read CSV ({exc})") from exc
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: missing column(s) {', '.join(missing)}")
    return df


def read_crops(path="data/crops/index.csv") -> pd.DataFrame:
    return read_index(path, CROP_COLUMNS)


def read_synthetic(path="data/synthetic/index.csv") -> pd.DataFrame:
    return read_index(path, SYNTH_COLUMNS, optional=True)


# ------------------------------------------------------------------------------ selection
def _synthetic_rows(
    crops_df: pd.DataFrame,
    synth_df: pd.DataFrame | None,
    split: str,
    variants: int | None = None,
    relabel: Mapping[str, str] | None = None,
) -> pd.DataFrame:
    if synth_df is None or synth_df.empty:
        return pd.DataFrame(columns=["path", "label", "dataset"])
    synth = synth_df[synth_df["split"] == split]
    if variants is not None and "variant" in synth.columns:  # an index from before `variants`: all are 0
        synth = synth[pd.to_numeric(synth["variant"], errors="coerce").fillna(0) < variants]
    labels = synth["label"].replace(dict(relabel)) if relabel else synth["label"]
    positives = pd.DataFrame({"path": synth["path"], "label": labels, "dataset": SYNTHETIC})
    # negatives: the unmasked faces the synthetic ones were made from (same split, same people)
    sources = set(synth["source_face_id"])
    neg = crops_df[crops_df["face_id"].isin(sources) & (crops_df["label"] == NEGATIVE_LABEL)]
    negatives = pd.DataFrame({"path": neg["crop_path"], "label": neg["label"], "dataset": neg["dataset"]})
    return pd.concat([positives, negatives], ignore_index=True)


def _stratified_head(df: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    """At most n rows, each label keeping about its share (seeded, interleaved by label)."""
    if len(df) <= n:
        return df
    shuffled = df.sample(frac=1.0, random_state=seed).copy()
    sizes = shuffled.groupby("label")["label"].transform("size")
    shuffled["_rank"] = shuffled.groupby("label").cumcount() / sizes
    picked = shuffled.sort_values(["_rank"], kind="stable").head(n)
    return picked.drop(columns="_rank")


def select_samples(
    crops_df: pd.DataFrame,
    synth_df: pd.DataFrame | None,
    config: ModelConfig,
    split: str,
    *,
    datasets: Sequence[str] | None = None,
    labels: Sequence[str] | None = None,
) -> pd.DataFrame:
    """The images a model uses for ``split``: DataFrame[path, label, label_idx, dataset].

    ``datasets`` overrides config.datasets (evaluation passes eval_datasets); without
    it, the val and test splits leave out config.train_only_datasets;
    ``labels`` overrides which labels are kept (default: the model's classes; evaluation of the
    oneclass model passes all labels). label_idx is the index in config.classes, or -1
    for a label the model has no class for. Paths are relative to the repo root, as in the
    indexes. Sorted by path, so the result does not depend on index row order.
    """
    classes = list(config.classes)
    keep = list(labels) if labels is not None else classes
    wanted = list(datasets) if datasets is not None else list(config.datasets)
    if datasets is None and split != "train":  # val / test measure real faces only
        wanted = [d for d in wanted if d not in config.train_only_datasets]
    parts = []
    for name in wanted:
        if name == SYNTHETIC:
            parts.append(
                _synthetic_rows(crops_df, synth_df, split, config.synthetic_variants, config.synthetic_labels)
            )
        else:
            rows = crops_df[(crops_df["dataset"] == name) & (crops_df["split"] == split)]
            parts.append(pd.DataFrame({"path": rows["crop_path"], "label": rows["label"], "dataset": name}))
    df = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["path", "label", "dataset"])
    df = df[df["label"].isin(keep)].drop_duplicates("path")
    if config.max_samples:
        df = _stratified_head(df, config.max_samples, config.seed)
    df = df.sort_values("path", kind="stable").reset_index(drop=True)
    df["label_idx"] = [classes.index(lbl) if lbl in classes else -1 for lbl in df["label"]]
    return df[SAMPLE_COLUMNS]


def dataset_paths(
    crops_df: pd.DataFrame, synth_df: pd.DataFrame | None, dataset: str, split: str
) -> list[str]:
    """Every image of one dataset and split (the unit the tensor cache is built for)."""
    if dataset == SYNTHETIC:
        if synth_df is None or synth_df.empty:
            return []
        return sorted(synth_df.loc[synth_df["split"] == split, "path"])
    return sorted(crops_df.loc[(crops_df["dataset"] == dataset) & (crops_df["split"] == split), "crop_path"])


# ------------------------------------------------------------------------------ tensor cache
def _worker_signals() -> None:
    """Cache workers die on SIGTERM at the kernel level and leave Ctrl-C to the parent.

    Forked workers inherit the stage's Python SIGTERM handler; Pool.terminate() at the end of
    every build sends them SIGTERM, and a Python-level handler can miss it while the worker
    blocks waiting for a task (seen here: a stage hung after building its cache).
    """
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decode(args: tuple[str, int, Box | None]) -> np.ndarray:
    path, size, box = args
    return to_uint8_chw(open_rgb(path), size, box)


def files_key(paths: Sequence[str], size: int, base: Path, box: Box | None = None) -> str:
    """Hash of the file list, their contents, the size and the input box: the cache key."""
    h = hashlib.blake2b(digest_size=12)
    h.update(f"size={size};n={len(paths)}\n".encode())
    if box is not None:  # (keys of whole-image arrays stay as they were)
        h.update(f"box={[float(v) for v in box]}\n".encode())
    for rel in paths:
        h.update(rel.encode() + b"\0")
        full = base / rel
        try:
            with open(full, "rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
        except OSError as exc:
            raise DataError(f"{full}: cannot read ({exc.strerror or exc})") from exc
    return h.hexdigest()


class TensorCache:
    """uint8 (N, 3, S, S) arrays on disk, one per dataset / split / size / file-set."""

    def __init__(
        self,
        root: str | os.PathLike,
        base: str | os.PathLike = ".",
        workers: int = 2,
        progress: bool | None = None,
    ):
        self.root = Path(root)
        self.base = Path(base)  # image paths in the indexes are relative to this (the workspace)
        self.workers = max(1, int(workers))
        self.progress = progress

    def file_for(self, dataset: str, split: str, size: int, key: str, box: Box | None = None) -> Path:
        return self.root / dataset / split / f"{size}px{'box' if box is not None else ''}-{key}.npy"

    def get(
        self, dataset: str, split: str, size: int, paths: Sequence[str], box: Box | None = None
    ) -> np.ndarray:
        """The memory-mapped array for ``paths`` (in that order), built on first use; ``box``: the
        part of each image kept (models.<m>.input_box)."""
        return self.get_keyed(dataset, split, size, paths, box)[0]

    def get_keyed(
        self, dataset: str, split: str, size: int, paths: Sequence[str], box: Box | None = None
    ) -> tuple[np.ndarray, str]:
        """(array, content key) — the key changes whenever a file or the file list changes."""
        paths = list(paths)
        key = files_key(paths, size, self.base, box)
        target = self.file_for(dataset, split, size, key, box)
        if not target.exists():
            self._build(target, paths, size, f"{dataset}/{split}@{size}px", box)
        arr = np.load(target, mmap_mode="r")
        if arr.shape != (len(paths), 3, size, size) or arr.dtype != np.uint8:
            raise DataError(f"{target}: unexpected cache array {arr.shape} {arr.dtype}; delete it")
        return arr, key

    def _build(self, target: Path, paths: list[str], size: int, what: str, box: Box | None = None) -> None:
        target.parent.mkdir(parents=True, exist_ok=True)
        gitignore = self.root / ".gitignore"
        if not gitignore.exists():
            gitignore.write_text("# tensor cache of maskpipe.training.data, rebuilt on demand\n*\n")
        jobs = [(str(self.base / p), size, box) for p in paths]
        with atomic_path(target, suffix=".npy") as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(len(paths), 3, size, size))
            bar = tqdm(
                total=len(paths), desc=f"cache {what}", unit="img", disable=self.progress is False or None
            )
            try:
                if self.workers > 1 and len(paths) > 64:
                    with Pool(self.workers, initializer=_worker_signals) as pool:
                        for i, arr in enumerate(pool.imap(_decode, jobs, chunksize=16)):
                            out[i] = arr
                            bar.update()
                else:
                    for i, job in enumerate(jobs):
                        out[i] = _decode(job)
                        bar.update()
            except ImageReadError as exc:
                raise DataError(f"cannot build the tensor cache for {what}: {exc}") from exc
            finally:
                bar.close()
            out.flush()
            del out
        info = {"dataset_split_size": what, "box": box, "n": len(paths), "paths": paths}
        write_json(target.with_suffix(".json"), info)
        self._prune(target)

    def _prune(self, newest: Path, keep: int = 3) -> None:
        """Keep the ``keep`` most recent arrays of this dataset / split / size (older data versions).

        A process still reading a removed array keeps its memory map (the file lives until closed).
        """
        size_prefix = newest.name.split("-", 1)[0]
        arrays = sorted(
            newest.parent.glob(f"{size_prefix}-*.npy"), key=lambda f: f.stat().st_mtime, reverse=True
        )
        for old in arrays[keep:]:
            old.unlink(missing_ok=True)
            old.with_suffix(".json").unlink(missing_ok=True)


@dataclass
class ImageSet:
    """Images of a sample selection gathered from several cache arrays, plus their labels."""

    segments: list[np.ndarray]  # one memmap per dataset
    seg_index: np.ndarray  # (N,) which segment each sample is in
    row_index: np.ndarray  # (N,) row in that segment
    labels: np.ndarray  # (N,) label_idx
    size: int
    keys: tuple[str, ...] = ()  # content keys of the cache arrays (for the resume check)

    def __len__(self) -> int:
        return len(self.labels)

    def gather(self, idx: np.ndarray) -> np.ndarray:
        """uint8 (len(idx), 3, S, S) for sample indices ``idx`` (reads only those rows)."""
        out = np.empty((len(idx), 3, self.size, self.size), dtype=np.uint8)
        segs = self.seg_index[idx]
        for s in np.unique(segs):
            where = np.nonzero(segs == s)[0]
            rows = self.row_index[idx[where]]
            order = np.argsort(rows, kind="stable")  # sorted reads are sequential on disk
            out[where[order]] = self.segments[s][rows[order]]
        return out


def load_images(
    samples: pd.DataFrame,
    crops_df: pd.DataFrame,
    synth_df: pd.DataFrame | None,
    split: str,
    size: int,
    cache: TensorCache,
    box: Box | None = None,
) -> ImageSet:
    """Cache-backed images for ``samples`` (from select_samples), cut to ``box`` when given."""
    segments: list[np.ndarray] = []
    keys: list[str] = []
    seg_index = np.zeros(len(samples), dtype=np.int64)
    row_index = np.zeros(len(samples), dtype=np.int64)
    for dataset, group in samples.groupby("dataset", sort=True):
        full = dataset_paths(crops_df, synth_df, str(dataset), split)
        pos = {p: i for i, p in enumerate(full)}
        if not all(p in pos for p in group["path"]):  # a hand-made selection: cache just these
            full = sorted(group["path"])
            pos = {p: i for i, p in enumerate(full)}
        arr, key = cache.get_keyed(str(dataset), split, size, full, box)
        segments.append(arr)
        keys.append(key)
        seg_index[group.index.to_numpy()] = len(segments) - 1
        row_index[group.index.to_numpy()] = [pos[p] for p in group["path"]]
    return ImageSet(
        segments, seg_index, row_index, samples["label_idx"].to_numpy(dtype=np.int64), size, tuple(keys)
    )


class InMemoryImages(ImageSet):
    """An ImageSet over one in-RAM uint8 array (tests, benchmarks)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray):
        n = len(images)
        super().__init__(
            [images],
            np.zeros(n, dtype=np.int64),
            np.arange(n),
            np.asarray(labels, dtype=np.int64),
            images.shape[-1],
        )


class BatchLoader:
    """Batches (normalised float images, labels) from an ImageSet, augmented as tensors.

    The order and the augmentation of epoch e depend only on (seed, e), so a training resumed
    at epoch e sees exactly the batches an uninterrupted one would.

    ``prefetch`` prepares the next batches in a thread while the model trains on the current one.
    Default: on CUDA only. On CPU the thread's torch ops start a second OpenMP team that fights the
    training's threads for the same cores: measured on 2 cores, MobileNetV3 trained at 189 img/s
    with the thread and 234 img/s without (the in-memory ceiling was 235).
    """

    def __init__(
        self,
        images: ImageSet,
        batch_size: int,
        augmenter: BatchAugmenter,
        *,
        train: bool,
        seed: int = 0,
        device: str | torch.device = "cpu",
        prefetch: int | None = None,
        balanced: bool = False,
    ):
        self.images = images
        self.balanced = bool(balanced) and train
        self.batch_size = int(batch_size)
        self.augmenter = augmenter
        self.train = train
        self.seed = int(seed)
        self.device = torch.device(device)
        self.prefetch = (2 if self.device.type == "cuda" else 0) if prefetch is None else int(prefetch)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def plain(self) -> BatchLoader:
        """The same images in order, without augmentation (evaluation, BatchNorm recalibration)."""
        return BatchLoader(
            self.images,
            self.batch_size,
            self.augmenter,
            train=False,
            seed=self.seed,
            device=self.device,
            prefetch=self.prefetch,
        )

    def __len__(self) -> int:
        n = len(self.images)
        full, rest = divmod(n, self.batch_size)
        # training drops a last batch of one image (BatchNorm cannot train on it)
        return full + (1 if rest > (1 if self.train else 0) else 0)

    def _batches(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        n = len(self.images)
        if self.balanced:
            order = self._balanced_order(g)
        else:
            order = torch.randperm(n, generator=g).numpy() if self.train else np.arange(n)
        for b in range(len(self)):
            idx = order[b * self.batch_size : (b + 1) * self.batch_size]
            x = torch.from_numpy(self.images.gather(idx)).to(self.device, non_blocking=True)
            y = torch.from_numpy(self.images.labels[idx]).to(self.device)
            yield self.augmenter(x, generator=g, train=self.train), y

    def _balanced_order(self, g: torch.Generator) -> np.ndarray:
        """``class_balance: sampler``: an epoch of len(images) draws, with replacement, each
        class equally likely (a rare class's images repeat, a common one's are subsampled)."""
        labels = torch.from_numpy(
            np.array(self.images.labels, dtype=np.int64)
        )  # a copy: memmaps are read-only
        _, inverse, counts = torch.unique(labels, return_inverse=True, return_counts=True)
        weights = 1.0 / counts[inverse].double()
        return torch.multinomial(weights, len(labels), replacement=True, generator=g).numpy()

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        if self.prefetch <= 0:
            yield from self._batches()
            return
        q: queue.Queue = queue.Queue(maxsize=self.prefetch)
        stop = threading.Event()
        done = object()

        def produce():
            try:
                for item in self._batches():
                    if stop.is_set():
                        return
                    q.put(item)
                q.put(done)
            except BaseException as exc:  # surface errors in the consumer
                q.put(exc)

        worker = threading.Thread(target=produce, daemon=True)
        worker.start()
        try:
            while True:
                item = q.get()
                if item is done:
                    break
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            stop.set()
            while worker.is_alive():  # unblock a producer waiting on a full queue
                try:
                    q.get_nowait()
                except queue.Empty:
                    worker.join(timeout=0.05)


@dataclass
class SplitData:
    samples: pd.DataFrame
    images: ImageSet


def prepare_split(
    crops_df: pd.DataFrame,
    synth_df: pd.DataFrame | None,
    config: ModelConfig,
    split: str,
    cache: TensorCache,
    *,
    require: bool = True,
) -> SplitData:
    samples = select_samples(crops_df, synth_df, config, split)
    if require and samples.empty:
        raise DataError(
            f"models.{config.name}: no {split} images for datasets {config.datasets} "
            f"and classes {config.classes} (are the datasets enabled and cropped?)"
        )
    images = load_images(samples, crops_df, synth_df, split, config.image_size, cache, config.input_box)
    return SplitData(samples, images)


def class_counts(samples: pd.DataFrame) -> dict[str, int]:
    return {str(k): int(v) for k, v in samples["label"].value_counts().sort_index().items()}


def manifest(samples: pd.DataFrame) -> str:
    """A hash of which images (and labels) a split holds, for the resume check."""
    h = hashlib.blake2b(digest_size=12)
    h.update(json.dumps(samples[["path", "label_idx"]].values.tolist()).encode())
    return h.hexdigest()
