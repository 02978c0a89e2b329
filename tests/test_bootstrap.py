"""Bootstrap intervals by source image: the vectorised code against a plain loop and scikit-learn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from maskpipe.evaluation.bootstrap import bootstrap_metrics, group_codes, resample_weights, weighted_auc
from maskpipe.evaluation.metrics import classification_metrics

CLASSES3 = ["with_mask", "without_mask", "mask_weared_incorrect"]


def _data(n=90, seed=1, c=3):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, c, n)
    logits = rng.normal(size=(n, c)) + 1.5 * np.eye(c)[y]
    proba = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    groups = [f"img{i // 3}" for i in range(n)]  # 3 faces per photo
    return y, proba, groups


def test_weighted_auc_equals_sklearn_with_sample_weights_and_ties():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 60)
    s = np.round(rng.normal(size=60) + y, 1)  # rounded: many ties
    w = rng.integers(0, 4, size=(5, 60)).astype(float)
    got = weighted_auc(y == 1, s, w)
    for k in range(5):
        assert got[k] == pytest.approx(skm.roc_auc_score(y, s, sample_weight=w[k]), abs=1e-12)


def test_intervals_equal_a_plain_loop_over_resampled_images():
    y, proba, groups = _data()
    pred = proba.argmax(1)
    n_res, seed = 200, 7
    ci = bootstrap_metrics(y, proba, pred, CLASSES3, groups, "test", n_res, seed)
    w = resample_weights(group_codes(groups), n_res, seed).astype(int)
    values = {"macro_f1": [], "recall/mask_weared_incorrect": [], "accuracy": [], "roc_auc": []}
    for k in range(n_res):
        idx = np.repeat(np.arange(len(y)), w[k])
        m = classification_metrics(y[idx], proba[idx], CLASSES3).metrics
        for key in values:
            values[key].append(m[f"test/{key}"] if m[f"test/{key}"] is not None else np.nan)
    for key, v in values.items():
        v = np.array(v, dtype=float)
        v = v[np.isfinite(v)]
        lo, hi = np.percentile(v, [2.5, 97.5])
        # the loop's values are rounded to 6 significant digits
        assert ci[f"test/{key}_lo"] == pytest.approx(lo, abs=2e-6), key
        assert ci[f"test/{key}_hi"] == pytest.approx(hi, abs=2e-6), key
    assert ci["test/n_groups"] == 30


def test_interval_contains_the_point_value_and_is_seeded():
    y, proba, groups = _data()
    a = classification_metrics(y, proba, CLASSES3, groups=groups, n_resamples=300, seed=3).metrics
    b = classification_metrics(y, proba, CLASSES3, groups=groups, n_resamples=300, seed=3).metrics
    assert a == b
    for key in ("test/accuracy", "test/macro_f1", "test/roc_auc", "test/recall/with_mask"):
        assert a[f"{key}_lo"] <= a[key] <= a[f"{key}_hi"]
        assert a[f"{key}_lo"] < a[f"{key}_hi"]


def test_grouped_resampling_is_wider_when_faces_of_a_photo_agree():
    # every photo holds 10 faces that are all right or all wrong: 12 independent units, not 120
    n_groups, per = 12, 10
    right = np.repeat(np.arange(n_groups) % 3 != 0, per)
    y = np.tile([0, 1], n_groups * per // 2)
    pred = np.where(right, y, 1 - y)
    proba = np.eye(2)[pred] * 0.8 + 0.1
    by_photo = bootstrap_metrics(
        y, proba, pred, ["a", "b"], np.repeat(np.arange(n_groups), per), n_resamples=500
    )
    by_face = bootstrap_metrics(y, proba, pred, ["a", "b"], np.arange(y.size), n_resamples=500)
    width = lambda ci: ci["test/accuracy_hi"] - ci["test/accuracy_lo"]  # noqa: E731
    assert width(by_photo) > 2 * width(by_face)


def test_a_rare_class_missing_from_most_resamples_gets_no_interval():
    y = np.array([0] * 40 + [1] * 40 + [2])
    proba = np.eye(3)[y] * 0.7 + 0.1
    groups = np.arange(y.size)
    ci = bootstrap_metrics(y, proba, y, CLASSES3, groups, n_resamples=400, seed=0)
    # the single incorrect face is in ~63 % of resamples: its recall is defined there (always 1)
    assert ci["test/recall/mask_weared_incorrect_lo"] == 1.0
    y2 = np.array([0] * 60 + [1] * 60 + [2])
    ci2 = bootstrap_metrics(y2, np.eye(3)[y2], y2, CLASSES3, [0] * 120 + [1], n_resamples=400, seed=0)
    # two groups: the one with the incorrect face is drawn in ~75 % of resamples
    assert ci2["test/recall/mask_weared_incorrect_lo"] == 1.0
    assert ci2["test/accuracy_lo"] == ci2["test/accuracy_hi"] == 1.0


def test_group_labels_must_match_the_images():
    with pytest.raises(ValueError, match="group labels"):
        bootstrap_metrics([0, 1], np.eye(2), [0, 1], ["a", "b"], ["g"], n_resamples=10)
