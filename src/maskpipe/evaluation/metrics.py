"""Classification metrics as pure functions of labels and scores (numpy only).

Written out rather than called from scikit-learn so the edge cases are ours and explicit
(tests check every number against scikit-learn on hand-made predictions):

- a class absent from the evaluated set gets precision / recall / F1 = 0 and support 0
  (scikit-learn's ``zero_division=0``) and is left out of the macro averages, which then
  equal scikit-learn's ``average="macro"`` over the classes that are present;
- ROC-AUC is ``None`` (JSON null) with a note when it is undefined: one class only, or
  (for one-vs-rest over 3+ classes) any class absent, because a macro AUC over fewer
  classes would not be comparable with other runs. Per-class AUCs stay defined where
  their class is present.

Metric names are flat strings ``<set>/<metric>[/<class>]`` (``test/macro_f1``,
``test/recall/mask_weared_incorrect``): the same keys go to metrics/<model>.json,
MLflow and the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from maskpipe.evaluation.bootstrap import bootstrap_metrics
from maskpipe.evaluation.numbers import DIGITS, _r, significant  # noqa: F401  (re-exported)


@dataclass
class RocCurve:
    """One ROC curve: ``positive`` against the rest, scored by ``score_name``."""

    positive: str
    fpr: np.ndarray
    tpr: np.ndarray
    thresholds: np.ndarray
    auc: float | None


@dataclass
class ClassificationResult:
    metrics: dict[str, float | int | None]
    confusion: np.ndarray  # rows: actual, columns: predicted
    classes: list[str]
    rocs: list[RocCurve] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def confusion_matrix(y_true: Sequence[int], y_pred: Sequence[int], n_classes: int) -> np.ndarray:
    """(n_classes, n_classes) counts; rows are the actual class, columns the predicted one."""
    y_true = np.asarray(y_true, dtype=int)
    y_pred = np.asarray(y_pred, dtype=int)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true has {y_true.shape[0]} labels but y_pred has {y_pred.shape[0]}")
    for name, arr in (("y_true", y_true), ("y_pred", y_pred)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise ValueError(f"{name} holds a class index outside 0..{n_classes - 1}")
    cm = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(cm, (y_true, y_pred), 1)
    return cm


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """num / den with 0 where den == 0 (scikit-learn's zero_division=0)."""
    num = num.astype(float)
    den = den.astype(float)
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def precision_recall_f1(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Per-class precision, recall, F1 and support from a confusion matrix (zero_division=0)."""
    tp = np.diag(cm)
    predicted = cm.sum(axis=0)
    support = cm.sum(axis=1)
    precision = _safe_div(tp, predicted)
    recall = _safe_div(tp, support)
    f1 = _safe_div(2 * precision * recall, precision + recall)
    return precision, recall, f1, support


def roc_curve(
    y_true: Sequence[int], score: Sequence[float], drop_intermediate: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) for binary labels (1 = positive), like sklearn.metrics.roc_curve.

    Tied scores form one point; the curve starts at (0, 0) with threshold +inf.
    ``drop_intermediate`` removes points on straight segments (fewer plot rows, same curve).
    Raises ValueError when one of the two classes is absent (the curve is undefined).
    """
    y = np.asarray(y_true, dtype=int)
    s = np.asarray(score, dtype=float)
    if y.shape != s.shape:
        raise ValueError("labels and scores differ in length")
    n_pos = int((y == 1).sum())
    n_neg = int((y == 0).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("ROC needs both positive and negative samples")
    order = np.argsort(-s, kind="mergesort")
    s, y = s[order], y[order]
    # last index of each run of equal scores
    distinct = np.where(np.diff(s))[0]
    ends = np.r_[distinct, y.size - 1]
    tps = np.cumsum(y)[ends]
    fps = (ends + 1) - tps
    thresholds = s[ends]
    if drop_intermediate and fps.size > 2:
        keep = np.where(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])[0]
        fps, tps, thresholds = fps[keep], tps[keep], thresholds[keep]
    tps = np.r_[0, tps]
    fps = np.r_[0, fps]
    thresholds = np.r_[np.inf, thresholds]
    return fps / n_neg, tps / n_pos, thresholds


def auc(x: np.ndarray, y: np.ndarray) -> float:
    """Area under a curve by the trapezoidal rule (x non-decreasing)."""
    return float(np.trapezoid(y, x))


def binary_roc(y_true: Sequence[int], score: Sequence[float], positive: str) -> RocCurve | None:
    """The ROC curve of ``positive`` (label 1) or None when a class is missing."""
    try:
        fpr, tpr, thr = roc_curve(y_true, score)
    except ValueError:
        return None
    return RocCurve(positive, fpr, tpr, thr, auc(fpr, tpr))


def classification_metrics(
    y_true: Sequence[int],
    proba: np.ndarray,
    classes: Sequence[str],
    prefix: str = "test",
    y_pred: Sequence[int] | None = None,
    groups: Sequence | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> ClassificationResult:
    """Accuracy, macro and per-class precision / recall / F1, ROC-AUC, confusion matrix.

    ``proba`` is (N, C) class scores in the order of ``classes``; the prediction is the
    arg-max unless ``y_pred`` is given (e.g. a thresholded one-class score). With two
    classes the ROC is that of ``classes[1]`` scored by ``proba[:, 1]``; with three or more
    it is one-vs-rest per class and ``<prefix>/roc_auc`` is their unweighted mean (what
    scikit-learn's ``roc_auc_score(multi_class="ovr", average="macro")`` computes).

    ``groups`` (one source-image label per sample) adds 95 % bootstrap intervals resampled by
    group, ``<metric>_lo`` / ``<metric>_hi`` (see bootstrap.py), and ``<prefix>/n_groups``.
    """
    classes = list(classes)
    n_classes = len(classes)
    y_true = np.asarray(y_true, dtype=int)
    proba = np.asarray(proba, dtype=float)
    if proba.ndim != 2 or proba.shape != (y_true.size, n_classes):
        raise ValueError(
            f"scores have shape {proba.shape}, expected ({y_true.size}, {n_classes}) for classes {classes}"
        )
    if y_true.size == 0:
        raise ValueError(f"{prefix}: no samples to evaluate")
    y_pred = np.asarray(y_pred if y_pred is not None else proba.argmax(axis=1), dtype=int)

    cm = confusion_matrix(y_true, y_pred, n_classes)
    precision, recall, f1, support = precision_recall_f1(cm)
    present = support > 0
    notes: list[str] = []
    missing = [c for c, ok in zip(classes, present, strict=True) if not ok]
    if missing:
        notes.append(
            f"{prefix}: no samples of {', '.join(missing)}; per-class metrics for it are 0 with "
            "support 0 and it is left out of the macro averages"
        )

    m: dict[str, float | int | None] = {
        f"{prefix}/n": int(y_true.size),
        f"{prefix}/accuracy": _r(np.trace(cm) / cm.sum()),
        f"{prefix}/macro_precision": _r(precision[present].mean()),
        f"{prefix}/macro_recall": _r(recall[present].mean()),
        f"{prefix}/macro_f1": _r(f1[present].mean()),
    }
    for i, c in enumerate(classes):
        m[f"{prefix}/precision/{c}"] = _r(precision[i])
        m[f"{prefix}/recall/{c}"] = _r(recall[i])
        m[f"{prefix}/f1/{c}"] = _r(f1[i])
        m[f"{prefix}/support/{c}"] = int(support[i])

    rocs: list[RocCurve] = []
    if n_classes == 2:
        roc = binary_roc(y_true == 1, proba[:, 1], classes[1])
        if roc is None:
            notes.append(f"{prefix}: ROC-AUC undefined (only one class present)")
        else:
            rocs.append(roc)
        m[f"{prefix}/roc_auc"] = _r(roc.auc) if roc else None
    else:
        per_class: list[float | None] = []
        for i, c in enumerate(classes):
            roc = binary_roc(y_true == i, proba[:, i], c)
            if roc is not None:
                rocs.append(roc)
            per_class.append(roc.auc if roc else None)
            m[f"{prefix}/roc_auc/{c}"] = _r(roc.auc) if roc else None
        if any(a is None for a in per_class):
            m[f"{prefix}/roc_auc"] = None
            notes.append(
                f"{prefix}: one-vs-rest ROC-AUC undefined because a class is missing; "
                "per-class AUCs are given where defined"
            )
        else:
            m[f"{prefix}/roc_auc"] = _r(float(np.mean(per_class)))
    if groups is not None and n_resamples > 0:
        m.update(bootstrap_metrics(y_true, proba, y_pred, classes, groups, prefix, n_resamples, seed))
    return ClassificationResult(m, cm, classes, rocs, notes)


def numeric_metrics(metrics: dict) -> dict[str, float]:
    """The defined numbers only (MLflow cannot log null)."""
    return {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float)) and v is not None}
