"""Evaluation plots: data files for `dvc plots` and matplotlib PNGs for MLflow and the README.

DVC plot data (declared in dvc.yaml `plots:`):
- ``roc_<positive>.csv``  fpr, tpr, threshold - one file per curve, so `dvc plots show`
  draws one line per class (DVC's templates colour by revision and dash by file);
- ``confusion.csv``       actual, predicted - one row per image (DVC's confusion template
  counts the pairs).

Figures are drawn on ``matplotlib.figure.Figure`` objects without pyplot, so no GUI backend
or global state is involved.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from maskpipe.evaluation.metrics import RocCurve, significant
from maskpipe.io import atomic_path, write_csv


def write_roc_data(rocs: Sequence[RocCurve], folder: Path, names: dict[str, str] | None = None) -> list[Path]:
    """One ``<name>.csv`` (fpr, tpr, threshold) per curve; name defaults to ``roc_<positive>``."""
    paths = []
    for roc in rocs:
        path = Path(folder) / f"{(names or {}).get(roc.positive, f'roc_{roc.positive}')}.csv"
        write_csv(
            path,
            pd.DataFrame(
                {
                    "fpr": significant(roc.fpr),
                    "tpr": significant(roc.tpr),
                    "threshold": significant(roc.thresholds),
                }
            ),
        )
        paths.append(path)
    return paths


def write_confusion_data(actual: Sequence[str], predicted: Sequence[str], path: Path) -> Path:
    write_csv(path, pd.DataFrame({"actual": list(actual), "predicted": list(predicted)}))
    return Path(path)


def _save(fig: Figure, path: Path) -> Path:
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    return Path(path)


def confusion_png(cm: np.ndarray, classes: Sequence[str], path: Path, title: str) -> Path:
    n = len(classes)
    fig = Figure(figsize=(1.6 + 1.3 * n, 1.2 + 1.2 * n))
    ax = fig.subplots()
    row_sums = cm.sum(axis=1, keepdims=True)
    share = np.divide(cm, row_sums, out=np.zeros(cm.shape, dtype=float), where=row_sums > 0)
    ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    for i in range(n):
        for j in range(n):
            ax.text(
                j,
                i,
                f"{cm[i, j]}\n{share[i, j]:.0%}",
                ha="center",
                va="center",
                color="white" if share[i, j] > 0.6 else "black",
                fontsize=9,
            )
    ax.set_xticks(range(n), [c.replace("_", "\n") for c in classes], fontsize=8)
    ax.set_yticks(range(n), [c.replace("_", "\n") for c in classes], fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title, fontsize=10)
    return _save(fig, path)


def roc_png(rocs: Sequence[RocCurve], path: Path, title: str, label_prefix: str = "") -> Path:
    fig = Figure(figsize=(4.6, 4.2))
    ax = fig.subplots()
    for roc in rocs:
        auc = "n/a" if roc.auc is None else f"{roc.auc:.3f}"
        ax.plot(roc.fpr, roc.tpr, drawstyle="default", label=f"{label_prefix}{roc.positive} (AUC {auc})")
    ax.plot([0, 1], [0, 1], linestyle=":", color="grey", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=10)
    if rocs:
        ax.legend(loc="lower right", fontsize=8)
    else:
        ax.text(0.5, 0.5, "ROC undefined: one class only", ha="center", va="center")
    return _save(fig, path)


def score_histogram_png(
    scores_by_label: dict[str, np.ndarray], threshold: float | None, path: Path, title: str, xlabel: str
) -> Path:
    """Overlaid histograms of an anomaly score per true label, with the decision threshold."""
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.subplots()
    values = [np.asarray(v, dtype=float) for v in scores_by_label.values() if len(v)]
    if values:
        lo = min(v.min() for v in values)
        hi = max(v.max() for v in values)
        bins = np.linspace(lo, hi if hi > lo else lo + 1e-9, 31)
        for label, v in scores_by_label.items():
            if len(v):
                ax.hist(v, bins=bins, alpha=0.55, label=f"{label} (n={len(v)})", density=True)
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.4g}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8)
    return _save(fig, path)


def pick_grid_samples(correct: Sequence[bool], confidence: Sequence[float], size: int) -> list[int]:
    """Indices for a grid of right and wrong predictions: up to half wrong, the most
    confident mistakes first (the instructive ones), the rest right ones spread over the
    confidence range. Deterministic."""
    correct = np.asarray(correct, dtype=bool)
    conf = np.asarray(confidence, dtype=float)
    wrong_idx = np.where(~correct)[0]
    right_idx = np.where(correct)[0]
    wrong_idx = wrong_idx[np.argsort(-conf[wrong_idx], kind="mergesort")]
    right_idx = right_idx[np.argsort(conf[right_idx], kind="mergesort")]
    n_wrong = min(len(wrong_idx), size // 2)
    n_right = min(len(right_idx), size - n_wrong)
    n_wrong = min(len(wrong_idx), size - n_right)  # fill with mistakes when right ones run out
    if n_right:
        right_pick = right_idx[np.linspace(0, len(right_idx) - 1, n_right).round().astype(int)]
    else:
        right_pick = right_idx[:0]
    return [int(i) for i in np.r_[wrong_idx[:n_wrong], right_pick]]


def prediction_grid_png(items: Sequence[dict], path: Path, title: str) -> Path:
    """items: dicts with image (PIL), actual, predicted, confidence, correct [, score_name]."""
    n = max(len(items), 1)
    cols = min(4, n)
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(2.3 * cols, 2.6 * rows + 0.4))
    fig.suptitle(title, fontsize=10)
    axes = np.atleast_1d(fig.subplots(rows, cols)).ravel()
    for ax in axes:
        ax.axis("off")
    for ax, item in zip(axes, items, strict=False):  # more axes than items: the rest stay blank
        ax.imshow(item["image"])
        ok = item["correct"]
        colour = "#1a7f37" if ok else "#c62828"
        ax.set_title(
            f"{'right' if ok else 'WRONG'}  {item.get('score_name', 'p')}={item['confidence']:.2f}\n"
            f"true: {item['actual']}\npred: {item['predicted']}",
            fontsize=7,
            color=colour,
        )
        for spine in ax.spines.values():
            spine.set_visible(True)
            spine.set_color(colour)
            spine.set_linewidth(3)
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
    if not items:
        axes[0].text(0.5, 0.5, "no samples", ha="center", va="center")
    return _save(fig, path)
