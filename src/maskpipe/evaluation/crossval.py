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

What is scored per fold: the held-out faces of the model's own datasets (as the evaluate stage's
``test`` set), and of each of its ``evaluate.extra_sets`` (e.g. ``real`` for the model trained
on synthetic masks: the held-out photos' real faces, which is what its target is about).
Besides each fold's figures, every held-out face once, pooled over the folds: with a rare class
(18 real incorrectly worn faces over 5 folds, 3-4 per fold) one pooled figure is steadier than
the mean of five, and it gets a 95 % bootstrap interval resampled by source photo.

A learning curve: ``train_fraction`` < 1 keeps that share of each fold's *training* photos (per
stratum, seeded; a dropped photo's synthetic faces go with it) and leaves the validation and
held-out folds whole, so the points of a curve are scored on the same faces. Whether more real
photos would still pay is then a measurement, not a guess.
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


def photo_strata(crops: pd.DataFrame, rows: np.ndarray) -> dict[tuple[str, str], list[str]]:
    """The photos of the selected crop rows, filed under (dataset, the photo's rarest label),
    rarest by the count of that label among the selected rows; each list sorted."""
    photo = photo_keys(crops)
    counts = crops[rows].groupby(["dataset", "label"]).size().to_dict()
    labels_of: dict[str, set[str]] = defaultdict(set)
    dataset_of: dict[str, str] = {}
    for g, d, lab in zip(photo[rows], crops["dataset"][rows], crops["label"][rows], strict=True):
        labels_of[g].add(lab)
        dataset_of[g] = d
    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for g in sorted(labels_of):
        d = dataset_of[g]
        rarest = min(labels_of[g], key=lambda lab: (counts.get((d, lab), 0), lab))
        strata[(d, rarest)].append(g)
    return strata


def assign_folds(crops: pd.DataFrame, k: int, seed: int) -> pd.Series:
    """Fold number (0..k-1) per crop row of the train / val pool, -1 for the test split."""
    if k < 2:
        raise CrossValidationError(f"crossval.folds must be >= 2 (or 0 = off), got {k}")
    if "source_image" not in crops.columns:
        raise CrossValidationError("the crop index has no source_image column (rerun the crop stage)")
    pool = crops["split"].isin(POOL_SPLITS).to_numpy()
    photo = photo_keys(crops)
    strata = photo_strata(crops, pool)
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


def follow_sources(crops: pd.DataFrame, synth: pd.DataFrame) -> pd.DataFrame:
    """The synthetic index with each face in its source face's split (``cv_unused`` when the
    source is not in ``crops``): a synthetic face never crosses from training into scoring."""
    s = synth.copy()
    if not s.empty:
        of_face = dict(zip(crops["face_id"], crops["split"], strict=True))
        s["split"] = [of_face.get(f, UNUSED) for f in s["source_face_id"]]
    return s


def fold_indexes(
    crops: pd.DataFrame, synth: pd.DataFrame, folds: pd.Series, fold: int, k: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The crop and synthetic indexes of one fold: split = test / val / train / cv_unused."""
    val_fold = (fold + 1) % k if k >= 3 else None
    split = np.where(folds == fold, "test", np.where(folds == val_fold, "val", "train"))
    split = np.where(folds < 0, UNUSED, split)
    c = crops.assign(split=split)
    return c, follow_sources(c, synth)


def check_train_fraction(fraction: float) -> None:
    if isinstance(fraction, bool) or not isinstance(fraction, int | float) or not 0 < fraction <= 1:
        raise CrossValidationError(f"crossval.train_fraction must be a number in (0, 1], got {fraction!r}")


def thin_train(
    crops: pd.DataFrame, synth: pd.DataFrame, fraction: float, seed: int
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep ``fraction`` of the training photos of each stratum (at least one), mark the rest
    ``cv_unused`` with their synthetic faces; val and test rows are left as they are."""
    check_train_fraction(fraction)
    if fraction == 1:
        return crops, synth
    train = (crops["split"] == "train").to_numpy()
    rng = np.random.default_rng(seed)
    keep: set[str] = set()
    strata = photo_strata(crops, train)
    for key in sorted(strata):
        groups = strata[key]
        n = max(1, round(fraction * len(groups)))
        keep.update(groups[i] for i in rng.permutation(len(groups))[:n])
    drop = train & ~photo_keys(crops).isin(keep).to_numpy()
    c = crops.assign(split=np.where(drop, UNUSED, crops["split"]))
    return c, follow_sources(c, synth)


@dataclass
class CrossValidation:
    metrics: dict[str, Any]  # cv/... keys for metrics/cv.json
    folds: pd.DataFrame  # one row per fold: n, accuracy, macro_f1, recall per class (and per extra set)
    # every held-out face once per set: fold, set, path, label, dataset, predicted, p_<class>, group
    predictions: pd.DataFrame


def summarise(rows: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """Mean, standard deviation (ddof 1), min and max of each per-fold metric."""
    out: dict[str, Any] = {"cv/folds": k}
    frame = pd.DataFrame(rows)
    for col in frame.columns:
        if col in ("fold", "n", "train_seconds", "train_n") or col.endswith("/n"):
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


POOLED_KEYS = ("n", "n_groups", "accuracy", "macro_f1", "roc_auc")


def summary_lines(metrics: dict[str, Any], model_name: str) -> list[str]:
    """What a person reads after the stage: per set, the folds' mean +- sd and the pooled figure."""
    k = metrics["cv/folds"]
    prefixes = sorted({key[: key.index("pooled/")] for key in metrics if "pooled/" in key}, key=len)
    lines = []
    for prefix in prefixes:
        name = prefix[3:].rstrip("/") or "held-out faces"
        head = f"crossval {model_name}, {k} folds, {name}:"
        parts = []
        for metric in ("accuracy", "macro_f1"):
            mean, sd = metrics.get(f"{prefix}{metric}_mean"), metrics.get(f"{prefix}{metric}_std")
            pooled = metrics.get(f"{prefix}pooled/{metric}")
            lo, hi = metrics.get(f"{prefix}pooled/{metric}_lo"), metrics.get(f"{prefix}pooled/{metric}_hi")
            interval = f" [{lo}, {hi}]" if lo is not None else ""
            parts.append(f"{metric} {mean} +- {sd} over folds, pooled {pooled}{interval}")
        recall = f"{prefix}pooled/recall/"
        recalls = [
            f"{key.removeprefix(recall)} {v} of {metrics.get(key.replace('/recall/', '/support/'))}"
            for key, v in metrics.items()
            if key.startswith(recall) and not key.endswith(("_lo", "_hi"))
        ]
        lines.append(f"{head} {'; '.join(parts)}; pooled recall: {', '.join(recalls)}")
    return lines


def pooled_metrics(
    predictions: pd.DataFrame, classes: list[str], prefix: str, n_resamples: int, seed: int
) -> dict[str, Any]:
    """Accuracy, macro-F1, ROC-AUC and per-class recall (with support) over every held-out face
    of one set, each with its 95 % interval resampled by source photo (``group``)."""
    scores = predictions[[f"p_{c}" for c in classes]].to_numpy(dtype=float)
    y = np.array([classes.index(lab) for lab in predictions["label"]])
    m = classification_metrics(
        y,
        scores,
        classes,
        prefix="pooled",
        groups=predictions["group"].to_numpy(),
        n_resamples=n_resamples,
        seed=seed,
    ).metrics
    wanted = [*POOLED_KEYS, *(f"{kind}/{c}" for c in classes for kind in ("recall", "precision", "support"))]
    out: dict[str, Any] = {}
    for key in wanted:
        for suffix in ("", "_lo", "_hi"):
            if f"pooled/{key}{suffix}" in m:
                out[f"{prefix}pooled/{key}{suffix}"] = m[f"pooled/{key}{suffix}"]
    return out


def evaluate_section(all_params: dict):
    """params.yaml `evaluate:`, checked; its defaults when the file has none (extra sets: none)."""
    from maskpipe.evaluation.config import EvaluateConfig, evaluate_config

    if "evaluate" not in all_params:
        return EvaluateConfig.from_mapping({}, "evaluate")
    return evaluate_config(all_params)


def cross_validate(
    model_name: str,
    all_params: dict,
    k: int,
    *,
    crops_index: Path,
    synth_index: Path,
    work_dir: Path,
    train_fraction: float = 1.0,
    base: Path = Path("."),
    log: Callable[[str], None] = print,
) -> CrossValidation:
    """Train ``model_name`` k times through ``train_model`` and score each held-out fold: the
    model's own datasets (``test``) and its ``evaluate.extra_sets``. ``train_fraction`` < 1:
    each fold trains on that share of its training photos (``thin_train``)."""
    from maskpipe.evaluation.evaluate import evaluation_sets, prediction_frame, score_samples, source_groups
    from maskpipe.training.artifact import model_config
    from maskpipe.training.config import resolve_model_config
    from maskpipe.training.data import read_crops, read_synthetic, select_samples

    config = resolve_model_config(all_params, model_name)
    if config.task == "oneclass":
        raise CrossValidationError(
            f"crossval.model: {model_name} is a one-class model; cross-validate a classifier"
        )
    ev = evaluate_section(all_params)
    extra = evaluation_sets(model_name, config, ev)
    # "test" = None: select_samples' own choice for a test split (the model's datasets without its
    # train_only_datasets), which is the evaluate stage's test set
    del extra["test"]
    sets: dict[str, list[str] | None] = {"test": None, **extra}
    crops = read_crops(crops_index)
    synth = read_synthetic(synth_index)
    seed = int(all_params.get("seed", 0))
    folds = assign_folds(crops, k, seed)
    work_dir = Path(work_dir)
    rows: list[dict[str, Any]] = []
    held: list[pd.DataFrame] = []
    classes = list(config.classes)
    for f in range(k):
        c, s = thin_train(*fold_indexes(crops, synth, folds, f, k), train_fraction, seed + f)
        model, meta, seconds = _train_fold(model_name, all_params, c, s, work_dir / f"fold{f + 1}", log, f, k)
        row: dict[str, Any] = {
            "fold": f + 1,
            "train_seconds": seconds,
            "train_n": int((c["split"] == "train").sum()),
        }
        cfg = model_config(meta).replace(max_samples=None)  # every held-out face is scored
        for name, datasets in sets.items():
            samples = select_samples(c, s, cfg, "test", datasets=datasets)
            if samples.empty:
                if name == "test":
                    raise CrossValidationError(
                        f"crossval: fold {f + 1} holds no images of {model_name}'s classes"
                    )
                log(f"crossval {model_name}: fold {f + 1} holds no images of set '{name}': not scored")
                continue
            scored = score_samples(model, meta, samples, 64, base, desc=f"{model_name} fold {f + 1} {name}")
            y = scored.samples["label_idx"].to_numpy()
            m = classification_metrics(y, scored.scores, classes).metrics
            key = "" if name == "test" else f"{name}/"
            row[f"{key}n"] = m["test/n"]
            row[f"{key}accuracy"] = m["test/accuracy"]
            row[f"{key}macro_f1"] = m["test/macro_f1"]
            for cls in classes:
                row[f"{key}recall/{cls}"] = m[f"test/recall/{cls}"] if m[f"test/support/{cls}"] else None
            frame = prediction_frame(scored.samples, scored.scores, scored.scores.argmax(axis=1), classes)
            frame.insert(0, "set", name)
            frame.insert(0, "fold", f + 1)
            frame["group"] = source_groups(scored.samples, crops, synth)
            held.append(frame)
        rows.append(row)
        log(
            f"crossval {model_name}: fold {f + 1}: "
            + ", ".join(f"{key} {v}" for key, v in row.items() if key not in ("fold", "train_seconds"))
        )
    predictions = pd.concat(held, ignore_index=True)
    metrics = summarise(rows, k)
    metrics["cv/train_fraction"] = train_fraction
    for name in sets:
        part = predictions[predictions["set"] == name]
        if not part.empty:
            prefix = "cv/" if name == "test" else f"cv/{name}/"
            metrics.update(pooled_metrics(part, classes, prefix, ev.bootstrap_resamples, ev.bootstrap_seed))
    return CrossValidation(metrics, pd.DataFrame(rows), predictions)


def _train_fold(model_name, all_params, crops, synth, fold_dir: Path, log, f: int, k: int):
    """One fold's model, trained by the engine on the fold's indexes: (model, meta, train seconds)."""
    from maskpipe.training.artifact import load_model
    from maskpipe.training.run import TrainPaths, train_model

    fold_dir.mkdir(parents=True, exist_ok=True)
    crops.to_csv(fold_dir / "crops.csv", index=False)
    synth.to_csv(fold_dir / "synthetic.csv", index=False)
    paths = TrainPaths(
        crops_index=fold_dir / "crops.csv",
        synth_index=fold_dir / "synthetic.csv",
        models_dir=fold_dir / "models",
        plots_dir=fold_dir / "plots",
        cache_dir=fold_dir.parent / "cache",
    )
    log(f"crossval {model_name}: fold {f + 1}/{k}")
    summary = train_model(model_name, all_params, paths, track=False, log=log)
    model, meta = load_model(paths.model_dir(model_name) / "model.pt")
    return model, meta, summary.get("train_seconds")
