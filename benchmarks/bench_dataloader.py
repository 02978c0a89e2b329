"""Images/s of training fed by (a) the engine's tensor-cache loader, (b) a plain torchvision
ImageFolder + PIL-transform DataLoader, (c) in-memory random tensors (the ceiling), for the same
model, image size, augmentation and number of steps, measured in one run.

    python benchmarks/bench_dataloader.py [--model mask_cnn] [--size 128] [--images 256]

Images: the train split of data/crops (mask_folders) when it exists, else the face-mask-folders
mirror resized to 256 px PNG in a temp folder (what the crop stage writes). Prints a/c and a/b.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from maskpipe.params import load_params  # noqa: E402
from maskpipe.training.config import normalization, resolve_model_config  # noqa: E402
from maskpipe.training.data import BatchLoader, InMemoryImages, TensorCache  # noqa: E402
from maskpipe.training.engine import make_optimizer, train_one_epoch  # noqa: E402
from maskpipe.training.losses import build_loss  # noqa: E402
from maskpipe.training.models import build_model  # noqa: E402
from maskpipe.training.transforms import BatchAugmenter  # noqa: E402


def image_folder(tmp: Path, n: int) -> tuple[Path, list[str], list[int]]:
    """<tmp>/imagefolder/<label>/*.png (256 px crops); returns its root, relative paths and labels."""
    from PIL import Image

    root = tmp / "imagefolder"
    crops = REPO / "data" / "crops" / "mask_folders"
    mirror = REPO.parent / "shared" / "datasets" / "face-mask-folders"
    paths, labels = [], []
    for idx, label in enumerate(("with_mask", "without_mask")):
        (root / label).mkdir(parents=True)
        if (crops / label).is_dir():
            files = sorted((crops / label).glob("*.png"))[: n // 2]
            for f in files:
                os.symlink(f, root / label / f.name)
        else:
            files = sorted((mirror / label).iterdir())[: n // 2]
            for f in files:
                Image.open(f).convert("RGB").resize((256, 256), Image.BILINEAR).save(
                    root / label / f"{f.stem}.png"
                )
        for f in sorted((root / label).iterdir()):
            paths.append(str(f.relative_to(tmp)))
            labels.append(idx)
    if len(paths) < 8:
        sys.exit("bench_dataloader: no images (need data/crops or ../shared/datasets/face-mask-folders)")
    return root, paths, labels


class Trainer:
    """One model + optimizer per loader kind, warmed up, timed one epoch at a time."""

    def __init__(self, model_params, loader, n_images: int):
        torch.manual_seed(0)
        self.p, self.loader, self.n = model_params, loader, n_images
        self.model = build_model(model_params)
        self.loss_fn = build_loss(model_params)
        self.opt = make_optimizer(self.model, model_params)
        self.epoch = 0
        self.rates: list[float] = []
        self.run_epoch()  # warm-up (allocator, worker start-up), not counted
        self.rates.clear()

    def run_epoch(self) -> None:
        self.epoch += 1
        if hasattr(self.loader, "set_epoch"):
            self.loader.set_epoch(self.epoch)
        t0 = time.perf_counter()
        train_one_epoch(
            self.model,
            self.loader,
            self.loss_fn,
            self.opt,
            task=self.p.task,
            epoch=self.epoch,
            progress=False,
        )
        self.rates.append(self.n / (time.perf_counter() - t0))

    @property
    def best(self) -> float:
        # the best epoch: the machine is shared, and other load only ever slows an epoch down
        return max(self.rates)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="mask_cnn")
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per loader (best counts)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    params = load_params(REPO / "params.yaml")
    p = resolve_model_config(params, args.model, profile="seed")
    p = p.replace(image_size=args.size, pretrained=None, augment=["hflip", "rotation"], batch_size=32)
    mean, std = normalization(p)
    bs = p.batch_size

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        folder, paths, labels = image_folder(tmp, args.images)
        n = len(paths)

        # (a) engine: uint8 tensor cache (built once, outside the timing) + tensor augmentation
        cache = TensorCache(tmp / "cache", base=tmp, workers=args.threads, progress=False)
        t0 = time.perf_counter()
        arr = cache.get("bench", "train", args.size, paths)
        build_s = time.perf_counter() - t0
        images = InMemoryImages(arr, np.asarray(labels))  # backed by the memmap, as in training
        aug = BatchAugmenter.from_config(p, mean, std)
        loader_a = BatchLoader(images, bs, aug, train=True, seed=0)
        steps = len(loader_a)

        # (b) torchvision ImageFolder + PIL transforms, DataLoader with 0 and 2 worker processes
        from torchvision import datasets
        from torchvision import transforms as T

        tf = T.Compose(
            [
                T.Resize((args.size, args.size)),
                T.RandomHorizontalFlip(),
                T.RandomRotation(15),
                T.ToTensor(),
                T.Normalize(mean, std),
            ]
        )
        ds = datasets.ImageFolder(str(folder), transform=tf)
        loaders_b = {
            w: torch.utils.data.DataLoader(
                ds, batch_size=bs, shuffle=True, num_workers=w, drop_last=True, persistent_workers=w > 0
            )
            for w in (0, 2)
        }

        # (c) the ceiling: the same steps on random tensors already in memory
        xs = torch.randn(steps, bs, 3, args.size, args.size)
        ys = torch.randint(0, 2, (steps, bs))

        class Fixed:
            def __len__(self):
                return steps

            def __iter__(self):
                return iter(zip(xs, ys, strict=True))

        trainers = {
            "a": Trainer(p, loader_a, steps * bs),
            "b0": Trainer(p, loaders_b[0], len(loaders_b[0]) * bs),
            "b2": Trainer(p, loaders_b[2], len(loaders_b[2]) * bs),
            "c": Trainer(p, Fixed(), steps * bs),
        }
        for _ in range(args.epochs):  # interleaved, so a burst of other load hits all kinds alike
            for t in trainers.values():
                t.run_epoch()
        a, c = trainers["a"].best, trainers["c"].best
        b = {0: trainers["b0"].best, 2: trainers["b2"].best}

    best_b = max(b.values())
    print(
        f"bench_dataloader: model {args.model} ({p['arch']}), {args.size}px, batch {bs}, {n} images, "
        f"{args.epochs} epochs, {args.threads} threads, augment {p['augment']}"
    )
    print(f"  tensor cache build (once): {build_s:.2f} s ({n / build_s:.0f} img/s)")
    print(f"  (a) engine loader            {a:8.1f} img/s")
    print(f"  (b) ImageFolder+PIL, 0 wkrs  {b[0]:8.1f} img/s")
    print(f"  (b) ImageFolder+PIL, 2 wkrs  {b[2]:8.1f} img/s")
    print(f"  (c) in-memory tensors        {c:8.1f} img/s")
    print(f"  a/c = {a / c:.2f}   a/b = {a / best_b:.2f} (vs the faster b)   a/b0 = {a / b[0]:.2f}")


if __name__ == "__main__":
    main()
