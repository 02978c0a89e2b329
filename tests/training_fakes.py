"""Small fake data in the real formats (data/crops/index.csv, data/synthetic/index.csv) for training tests.

Images are drawn so the classes are learnable: a face-coloured disc, with a coloured band over
its lower half for masked faces (and a band too low for mask_weared_incorrect).
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from PIL import Image

from maskpipe.schemas import CROP_INDEX_COLUMNS, SYNTH_INDEX_COLUMNS

REPO = Path(__file__).resolve().parents[1]

CROP_COLS = list(CROP_INDEX_COLUMNS)
SYNTH_COLS = list(SYNTH_INDEX_COLUMNS)


def face_image(label: str, size: int, rng: np.random.Generator) -> Image.Image:
    yy, xx = np.mgrid[0:size, 0:size] / size
    img = np.empty((size, size, 3), dtype=np.float32)
    img[:] = rng.uniform(40, 200, size=3)  # background
    disc = (xx - 0.5) ** 2 + (yy - 0.5) ** 2 < 0.16
    img[disc] = np.array([224, 172, 140]) * rng.uniform(0.7, 1.1)
    if label == "with_mask":
        band = disc & (yy > 0.55)
        img[band] = rng.choice([[60, 110, 200], [220, 220, 220], [60, 60, 60]])
    elif label == "mask_weared_incorrect":
        band = disc & (yy > 0.75)
        img[band] = [60, 110, 200]
    img += rng.normal(0, 8, img.shape)
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def make_crops(
    root: Path,
    datasets: dict[str, list[str]],
    per_label_split: dict[str, int] | int = 8,
    size: int = 48,
    seed: int = 0,
) -> pd.DataFrame:
    """data/crops/<dataset>/<label>/<id>.png + data/crops/index.csv under ``root``."""
    rng = np.random.default_rng(seed)
    counts = (
        per_label_split
        if isinstance(per_label_split, dict)
        else {
            "train": per_label_split,
            "val": max(2, per_label_split // 2),
            "test": max(2, per_label_split // 2),
        }
    )
    rows = []
    for dataset, labels in datasets.items():
        for label in labels:
            for split, n in counts.items():
                for i in range(n):
                    face_id = f"{dataset}-{label}-{split}-{i}"
                    rel = f"data/crops/{dataset}/{label}/{face_id}.png"
                    (root / rel).parent.mkdir(parents=True, exist_ok=True)
                    face_image(label, size, rng).save(root / rel)
                    rows.append(
                        [
                            face_id,
                            rel,
                            dataset,
                            f"src/{face_id}.png",
                            label,
                            0,
                            0,
                            size,
                            size,
                            0,
                            0,
                            size,
                            size,
                            split,
                        ]
                    )
    df = pd.DataFrame(rows, columns=CROP_COLS)
    df.to_csv(root / "data/crops/index.csv", index=False)
    return df


def make_synthetic(
    root: Path, crops: pd.DataFrame, size: int = 48, seed: int = 1, incorrect_every: int = 4
) -> pd.DataFrame:
    """One synthetic masked face per unmasked crop (every n-th one worn incorrectly)."""
    rng = np.random.default_rng(seed)
    rows = []
    sources = crops[crops["label"] == "without_mask"].reset_index(drop=True)
    for i, src in sources.iterrows():
        label = "mask_weared_incorrect" if incorrect_every and i % incorrect_every == 3 else "with_mask"
        sid = f"syn{i:05d}"
        rel = f"data/synthetic/{label}/{sid}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        face_image(label, size, rng).save(root / rel)
        rows.append(
            [
                sid,
                rel,
                f"data/synthetic/masks/{sid}.png",
                src["face_id"],
                src["crop_path"],
                src["dataset"],
                label,
                "surgical",
                "",
                "",
                0.0,
                "box",
                "correct" if label == "with_mask" else "chin",
                src["split"],
                0,
            ]
        )
    df = pd.DataFrame(rows, columns=SYNTH_COLS)
    df.to_csv(root / "data/synthetic/index.csv", index=False)
    return df


def make_real_crops(root: Path, shared: Path, n_per_label: int = 12, size: int = 64) -> pd.DataFrame:
    """Crops from the real mask_folders mirror (first n images per class), all in the train split
    (plus a copy of the first few as val)."""
    rows = []
    for label in ("with_mask", "without_mask"):
        files = sorted((shared / "face-mask-folders" / label).iterdir())[:n_per_label]
        for i, f in enumerate(files):
            for split in ["train", "val"] if i < 4 else ["train"]:
                face_id = f"mf-{label}-{i}-{split}"
                rel = f"data/crops/mask_folders/{label}/{face_id}.png"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                Image.open(f).convert("RGB").resize((size, size)).save(root / rel)
                rows.append(
                    [
                        face_id,
                        rel,
                        "mask_folders",
                        f"{label}/{f.name}",
                        label,
                        0,
                        0,
                        size,
                        size,
                        0,
                        0,
                        size,
                        size,
                        split,
                    ]
                )
    df = pd.DataFrame(rows, columns=CROP_COLS)
    df.to_csv(root / "data/crops/index.csv", index=False)
    return df


def repo_params() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def tiny_params(**overrides) -> dict:
    """The repo's params.yaml with train.profile tiny (and optional overrides of profiles.tiny.all)."""
    params = copy.deepcopy(repo_params())
    params["train"]["profile"] = "tiny"
    params["train"]["num_threads"] = 1
    params["train"]["device"] = "cpu"
    params["profiles"]["tiny"]["all"].update(overrides)
    return params


ALL_DATASETS = {
    "kaggle_face_mask_detection": ["with_mask", "without_mask", "mask_weared_incorrect"],
    "mask_folders": ["with_mask", "without_mask"],
    "lfw": ["without_mask"],
}
