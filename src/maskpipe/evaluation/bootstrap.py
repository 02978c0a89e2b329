"""95 % bootstrap intervals of the classification metrics, resampled by source image.

The faces of one photo are not independent (same light, same camera, often the same label),
so the unit of resampling is the *group* (the crop index's ``dataset`` + ``source_image``):
each resample draws as many groups as there are, with replacement, and keeps all their faces.
A test split of 140 faces from ~40 photos is then honestly as uncertain as ~40 draws.

Vectorised: every image becomes a row of per-group counts, a resample is a vector of group
multiplicities (a multinomial draw), so all ``n`` confusion matrices are one matrix product
and the ROC-AUCs one cumulative sum over the score-sorted images.

Keys (flat, so `dvc metrics diff` shows them beside the value): ``<metric>_lo`` and
``<metric>_hi`` for every metric ``classification_metrics`` computes except counts,
e.g. ``test/macro_f1_lo``, ``test/recall/mask_weared_incorrect_hi``. Intervals are percentile
intervals over the resamples in which the metric is defined (a class absent from a resample
has no recall there); when fewer than half of the resamples define it the interval is null.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from maskpipe.evaluation.numbers import _r

LEVEL = 0.95


def group_codes(groups: Sequence) -> np.ndarray:
    """Dense integer code per image (0..G-1) from any hashable group labels."""
    _, codes = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
    return codes.ravel()


def resample_weights(codes: np.ndarray, n_resamples: int, seed: int) -> np.ndarray:
    """(n_resamples, N) image weights: how often each image's group was drawn."""
    n_groups = int(codes.max()) + 1 if codes.size else 0
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_groups, np.full(n_groups, 1.0 / n_groups), size=n_resamples)
    return counts[:, codes].astype(np.float64)


def _div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    out = np.full(np.broadcast(num, den).shape, np.nan)
    np.divide(num, den, out=out, where=den > 0)
    return out


def confusion_stack(
    y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray, n_classes: int
) -> np.ndarray:
    """(n_resamples, C, C) weighted confusion matrices (rows actual, columns predicted)."""
    cell = y_true * n_classes + y_pred
    onehot = np.zeros((y_true.size, n_classes * n_classes))
    onehot[np.arange(y_true.size), cell] = 1.0
    return (weights @ onehot).reshape(-1, n_classes, n_classes)


def weighted_auc(is_pos: np.ndarray, score: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC-AUC per resample (NaN where a class is absent); ties count one half, as in roc_curve."""
    order = np.argsort(score, kind="mergesort")
    s, pos = score[order], is_pos[order].astype(bool)
    w = weights[:, order]
    w_pos = w * pos
    w_neg = w * ~pos
    cum_neg = np.concatenate([np.zeros((w.shape[0], 1)), np.cumsum(w_neg, axis=1)], axis=1)
    # for each image, the first and one-past-last sorted index of its tied score level
    starts = np.searchsorted(s, s, side="left")
    ends = np.searchsorted(s, s, side="right")
    below = cum_neg[:, starts]
    tied = cum_neg[:, ends] - below
    num = (w_pos * (below + 0.5 * tied)).sum(axis=1)
    return _div(num, w_pos.sum(axis=1) * w_neg.sum(axis=1))


def _interval(values: np.ndarray, level: float) -> tuple[float | None, float | None]:
    ok = values[np.isfinite(values)]
    if ok.size < max(2, values.size // 2):
        return None, None
    a = (1.0 - level) / 2.0 * 100.0
    lo, hi = np.percentile(ok, [a, 100.0 - a])
    return float(lo), float(hi)


def bootstrap_metrics(
    y_true: Sequence[int],
    proba: np.ndarray,
    y_pred: Sequence[int],
    classes: Sequence[str],
    groups: Sequence,
    prefix: str = "test",
    n_resamples: int = 1000,
    seed: int = 0,
    level: float = LEVEL,
) -> dict[str, float | None]:
    """``{<prefix>/<metric>_lo: .., <prefix>/<metric>_hi: ..}`` for accuracy, the macro averages,
    per-class precision / recall / F1 and ROC-AUC (same definitions as classification_metrics)."""
    classes = list(classes)
    c = len(classes)
    y = np.asarray(y_true, dtype=int)
    pred = np.asarray(y_pred, dtype=int)
    proba = np.asarray(proba, dtype=float)
    codes = group_codes(groups)
    if codes.size != y.size:
        raise ValueError(f"{prefix}: {codes.size} group labels for {y.size} images")
    if n_resamples < 1 or y.size == 0:
        return {}
    w = resample_weights(codes, int(n_resamples), int(seed))
    cm = confusion_stack(y, pred, w, c)
    tp = np.diagonal(cm, axis1=1, axis2=2)
    support = cm.sum(axis=2)
    predicted = cm.sum(axis=1)
    precision = np.where(predicted > 0, _div(tp, predicted), 0.0)
    recall = _div(tp, support)  # NaN: class absent from this resample
    f1 = np.where(precision + recall > 0, _div(2 * precision * recall, precision + recall), 0.0)
    present = support > 0
    n_present = present.sum(axis=1)

    def macro(x: np.ndarray) -> np.ndarray:
        return _div(np.where(present, np.nan_to_num(x), 0.0).sum(axis=1), n_present)

    series: dict[str, np.ndarray] = {
        "accuracy": _div(np.trace(cm, axis1=1, axis2=2), cm.sum(axis=(1, 2))),
        "macro_precision": macro(precision),
        "macro_recall": macro(recall),
        "macro_f1": macro(f1),
    }
    for i, name in enumerate(classes):
        absent = ~present[:, i]
        # per-class precision / F1 are only meaningful in resamples that hold the class
        series[f"precision/{name}"] = np.where(absent, np.nan, precision[:, i])
        series[f"recall/{name}"] = recall[:, i]
        series[f"f1/{name}"] = np.where(absent, np.nan, f1[:, i])
    if c == 2:
        series["roc_auc"] = weighted_auc(y == 1, proba[:, 1], w)
    else:
        per_class = [weighted_auc(y == i, proba[:, i], w) for i in range(c)]
        for i, name in enumerate(classes):
            series[f"roc_auc/{name}"] = per_class[i]
        series["roc_auc"] = np.mean(per_class, axis=0)  # NaN when any class is absent, as in the point value

    out: dict[str, float | None] = {}
    for key, values in series.items():
        lo, hi = _interval(values, level)
        out[f"{prefix}/{key}_lo"] = _r(lo)
        out[f"{prefix}/{key}_hi"] = _r(hi)
    out[f"{prefix}/n_groups"] = int(codes.max()) + 1
    return out
