"""Grouped k-fold cross-validation of one classifier, trained by the one training engine.

A test split of a few dozen photos gives one number with a wide interval; k folds give k
numbers and their spread. The folds:

- pool: the model's train + val images (the test split stays untouched: nothing is tuned on it);
- unit: the source photo (``dataset`` + ``source_image`` of the crop index), so the faces of
  one photo are never on both sides; a synthetic face goes with the photo of its source face;
- stratified like the crop stage's split: each photo is filed under (dataset, its rarest label)
  and each stratum is dealt round-robin over the folds after a seeded shuffle.

Fold f: its photos are the held-out set ("test"), fold f+1 (k >= 3) is the validation set that
picks the epoch, the rest train. With k = 2 there is no fold to spare: no validation set, the
engine then stops on the training loss. Each fold writes a crop index and a synthetic index with
the new ``split`` column and calls ``train_model`` on them (``track=False``: no MLflow run per
fold), then scores the held-out photos with ``classification_metrics``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from maskpipe.evaluation.metrics import _r, classification_metrics

POOL_SPLITS = ("train", "val")
UNUSED = "cv_unused"  # the original test split: outside every fold


class CrossValidationError(ValueError):
    """Cross-validation cannot run; the message names the param or the data."""


def photo_keys(crops: pd.DataFrame) -> pd.Series:
    return crops["dataset"].astype(str) + ":" + crops["source_image"].astype(str)


def assign_folds(crops: pd.DataFrame, k: int, seed: int) -> pd.Series:
    """Fold number (0..k-1) per crop row of the train / val pool, -1 for the test split."""
    if k < 2:
        raise CrossValidationError(f"crossval.folds must be >= 2 (or 0 = off), got {k}")
    if "source_image" not in crops.columns:
        raise CrossValidationError("the crop index has no source_image column (rerun the crop stage)")
    pool = crops["split"].isin(POOL_SPLITS).to_numpy()
    photo = photo_keys(crops)
    counts = crops[pool].groupby(["dataset", "label"]).size().to_dict()
    labels_of: dict[str, set[str]] = defaultdict(set)
    dataset_of: dict[str, str] = {}
    for g, d, lab in zip(photo[pool], crops["dataset"][pool], crops["label"][pool], strict=True):
        labels_of[g].add(lab)
        dataset_of[g] = d
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for g in sorted(labels_of):
        d = dataset_of[g]
        rarest = min(labels_of[g], key=lambda lab: (counts.get((d, lab), 0), lab))
        strata[(d, rarest)].append(g)
    rng = np.random.default_rng(seed)
    fold_of: dict[str, int] = {}
    offset = 0
    for key in sorted(strata):
        groups = strata[key]
        for i, j in enumerate(rng.permutation(len(groups))):
            fold_of[groups[j]] = (offset + i) % k
        offset += len(groups)  # the next stratum starts where this one ended: folds stay even
    return pd.Series(
        [fold_of.get(g, -1) if ok else -1 for g, ok in zip(photo, pool, strict=True)], index=crops.index
    )


def fold_indexes(
    crops: pd.DataFrame, synth: pd.DataFrame, folds: pd.Series, fold: int, k: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The crop and synthetic indexes of one fold: split = test / val / train / cv_unused."""
    val_fold = (fold + 1) % k if k >= 3 else None
    split = np.where(folds == fold, "test", np.where(folds == val_fold, "val", "train"))
    split = np.where(folds < 0, UNUSED, split)
    c = crops.assign(split=split)
    s = synth.copy()
    if not s.empty:
        of_face = dict(zip(c["face_id"], c["split"], strict=True))
        s["split"] = [of_face.get(f, UNUSED) for f in s["source_face_id"]]
    return c, s


@dataclass
class CrossValidation:
    metrics: dict[str, Any]  # cv/... keys for metrics/cv.json
    folds: pd.DataFrame  # one row per fold: n, accuracy, macro_f1, recall per class


def summarise(rows: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """Mean, standard deviation (ddof 1), min and max of each per-fold metric."""
    out: dict[str, Any] = {"cv/folds": k}
    frame = pd.DataFrame(rows)
    for col in frame.columns:
        if col in ("fold", "n", "train_seconds"):
            continue
        v = pd.to_numeric(frame[col], errors="coerce").to_numpy(dtype=float)
        v = v[np.isfinite(v)]
        if not v.size:
            continue
        out[f"cv/{col}_mean"] = _r(v.mean())
        out[f"cv/{col}_std"] = _r(v.std(ddof=1)) if v.size > 1 else None
        out[f"cv/{col}_min"] = _r(v.min())
        out[f"cv/{col}_max"] = _r(v.max())
    out["cv/n_mean"] = _r(frame["n"].mean())
    return out


def cross_validate(
    model_name: str,
    all_params: dict,
    k: int,
    *,
    crops_index: Path,
    synth_index: Path,
    work_dir: Path,
    base: Path = Path("."),
    log: Callable[[str], None] = print,
) -> CrossValidation:
    """Train ``model_name`` k times through ``train_model`` and score each held-out fold."""
    from maskpipe.evaluation.evaluate import score_samples
    from maskpipe.training.artifact import load_model, model_config
    from maskpipe.training.config import resolve_model_config
    from maskpipe.training.data import read_crops, read_synthetic, select_samples
    from maskpipe.training.run import TrainPaths, train_model

    config = resolve_model_config(all_params, model_name)
    if config.task == "oneclass":
        raise CrossValidationError(
            f"crossval.model: {model_name} is a one-class model; cross-validate a classifier"
        )
    crops = read_crops(crops_index)
    synth = read_synthetic(synth_index)
    folds = assign_folds(crops, k, int(all_params.get("seed", 0)))
    work_dir = Path(work_dir)
    rows: list[dict[str, Any]] = []
    classes = list(config.classes)
    for f in range(k):
        c, s = fold_indexes(crops, synth, folds, f, k)
        fold_dir = work_dir / f"fold{f + 1}"
        fold_dir.mkdir(parents=True, exist_ok=True)
        c.to_csv(fold_dir / "crops.csv", index=False)
        s.to_csv(fold_dir / "synthetic.csv", index=False)
        paths = TrainPaths(
            crops_index=fold_dir / "crops.csv",
            synth_index=fold_dir / "synthetic.csv",
            models_dir=fold_dir / "models",
            plots_dir=fold_dir / "plots",
            cache_dir=work_dir / "cache",
        )
        log(f"crossval {model_name}: fold {f + 1}/{k}")
        summary = train_model(model_name, all_params, paths, track=False, log=log)
        model, meta = load_model(paths.model_dir(model_name) / "model.pt")
        # every held-out face is scored (max_samples limits what a profile trains on, not this)
        held_out = select_samples(c, s, model_config(meta).replace(max_samples=None), "test")
        if held_out.empty:
            raise CrossValidationError(f"crossval: fold {f + 1} holds no images of {model_name}'s classes")
        scored = score_samples(model, meta, held_out, 64, base, desc=f"{model_name} fold {f + 1}")
        m = classification_metrics(scored.samples["label_idx"].to_numpy(), scored.scores, classes).metrics
        row = {
            "fold": f + 1,
            "n": m["test/n"],
            "accuracy": m["test/accuracy"],
            "macro_f1": m["test/macro_f1"],
            "train_seconds": summary.get("train_seconds"),
        }
        for cls in classes:
            row[f"recall/{cls}"] = m[f"test/recall/{cls}"] if m[f"test/support/{cls}"] else None
        rows.append(row)
        log(
            f"crossval {model_name}: fold {f + 1}: n {row['n']}, macro_f1 {row['macro_f1']}, "
            + ", ".join(f"{key} {row[key]}" for key in row if key.startswith("recall/"))
        )
    return CrossValidation(summarise(rows, k), pd.DataFrame(rows))
