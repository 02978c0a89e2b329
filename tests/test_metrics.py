"""Our metric functions against scikit-learn on hand-made predictions."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from maskpipe.evaluation.metrics import (
    classification_metrics,
    confusion_matrix,
    numeric_metrics,
    roc_curve,
)
from maskpipe.evaluation.oneclass import (
    REGIONS,
    MahalanobisScorer,
    anomaly_metrics,
    percentile_threshold,
    region_mean,
    signed_power,
)

CLASSES3 = ["with_mask", "without_mask", "mask_weared_incorrect"]

# 12 hand-made predictions over 3 classes: some right, some wrong, one tie in scores
Y3 = np.array([0, 0, 0, 0, 1, 1, 1, 2, 2, 0, 1, 2])
P3 = np.array(
    [
        [0.80, 0.15, 0.05],
        [0.60, 0.30, 0.10],
        [0.30, 0.60, 0.10],  # wrong: with_mask -> without_mask
        [0.50, 0.10, 0.40],
        [0.20, 0.70, 0.10],
        [0.10, 0.85, 0.05],
        [0.45, 0.45, 0.10],  # tie broken by arg-max to class 0: wrong
        [0.20, 0.20, 0.60],
        [0.50, 0.10, 0.40],  # wrong: incorrect -> with_mask
        [0.90, 0.05, 0.05],
        [0.30, 0.40, 0.30],
        [0.10, 0.30, 0.60],
    ]
)


def assert_matches_sklearn(y, proba, classes, m, labels_present):
    pred = proba.argmax(axis=1)
    idx = list(range(len(classes)))
    p, r, f, s = skm.precision_recall_fscore_support(y, pred, labels=idx, zero_division=0)
    for i, c in enumerate(classes):
        assert m[f"test/precision/{c}"] == pytest.approx(p[i], abs=1e-6)
        assert m[f"test/recall/{c}"] == pytest.approx(r[i], abs=1e-6)
        assert m[f"test/f1/{c}"] == pytest.approx(f[i], abs=1e-6)
        assert m[f"test/support/{c}"] == s[i]
    assert m["test/accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-6)
    macro = skm.f1_score(y, pred, labels=labels_present, average="macro", zero_division=0)
    assert m["test/macro_f1"] == pytest.approx(macro, abs=1e-6)
    assert m["test/macro_precision"] == pytest.approx(
        skm.precision_score(y, pred, labels=labels_present, average="macro", zero_division=0), abs=1e-6
    )
    assert m["test/macro_recall"] == pytest.approx(
        skm.recall_score(y, pred, labels=labels_present, average="macro", zero_division=0), abs=1e-6
    )
    assert m["test/n"] == len(y)


def test_three_classes_equal_sklearn():
    res = classification_metrics(Y3, P3, CLASSES3)
    assert_matches_sklearn(Y3, P3, CLASSES3, res.metrics, [0, 1, 2])
    np.testing.assert_array_equal(res.confusion, skm.confusion_matrix(Y3, P3.argmax(1), labels=[0, 1, 2]))
    expected_auc = skm.roc_auc_score(Y3, P3, multi_class="ovr", average="macro", labels=[0, 1, 2])
    assert res.metrics["test/roc_auc"] == pytest.approx(expected_auc, abs=1e-6)
    for i, c in enumerate(CLASSES3):
        assert res.metrics[f"test/roc_auc/{c}"] == pytest.approx(
            skm.roc_auc_score(i == Y3, P3[:, i]), abs=1e-6
        )
    assert [r.positive for r in res.rocs] == CLASSES3
    assert res.notes == []


def test_binary_equal_sklearn():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 40)
    p1 = np.clip(y * 0.3 + rng.random(40) * 0.7, 0, 1).round(1)  # rounded: many ties
    proba = np.stack([1 - p1, p1], axis=1)
    res = classification_metrics(y, proba, ["without_mask", "with_mask"])
    assert_matches_sklearn(y, proba, ["without_mask", "with_mask"], res.metrics, [0, 1])
    assert res.metrics["test/roc_auc"] == pytest.approx(skm.roc_auc_score(y, p1), abs=1e-6)
    assert len(res.rocs) == 1 and res.rocs[0].positive == "with_mask"


@pytest.mark.parametrize("drop", [True, False])
def test_roc_curve_equals_sklearn(drop):
    rng = np.random.default_rng(1)
    y = rng.integers(0, 2, 60)
    s = (rng.random(60) + y * 0.4).round(2)
    fpr, tpr, thr = roc_curve(y, s, drop_intermediate=drop)
    efpr, etpr, ethr = skm.roc_curve(y, s, drop_intermediate=drop)
    np.testing.assert_allclose(fpr, efpr)
    np.testing.assert_allclose(tpr, etpr)
    np.testing.assert_allclose(thr[1:], ethr[1:])
    assert np.isinf(thr[0]) and np.isinf(ethr[0])


def test_missing_class_is_defined_not_a_crash():
    # the test split has no mask_weared_incorrect (a real situation with small Kaggle subsets)
    keep = Y3 != 2
    y, proba = Y3[keep], P3[keep]
    res = classification_metrics(y, proba, CLASSES3)
    m = res.metrics
    assert m["test/support/mask_weared_incorrect"] == 0
    assert m["test/recall/mask_weared_incorrect"] == 0
    assert m["test/f1/mask_weared_incorrect"] == 0
    assert m["test/roc_auc"] is None
    assert m["test/roc_auc/mask_weared_incorrect"] is None
    assert m["test/roc_auc/with_mask"] == pytest.approx(skm.roc_auc_score(y == 0, proba[:, 0]), abs=1e-6)
    assert any("mask_weared_incorrect" in n for n in res.notes)
    assert any("ROC-AUC undefined" in n for n in res.notes)
    # macro over the classes present equals scikit-learn's with those labels
    assert_matches_sklearn(y, proba, CLASSES3, m, [0, 1])
    assert "test/roc_auc" not in numeric_metrics(m)


def test_single_class_binary_has_null_auc():
    y = np.ones(5, dtype=int)
    proba = np.tile([0.2, 0.8], (5, 1))
    res = classification_metrics(y, proba, ["without_mask", "with_mask"], prefix="real")
    assert res.metrics["real/roc_auc"] is None
    assert res.metrics["real/accuracy"] == 1.0
    assert res.metrics["real/macro_f1"] == 1.0  # only the present class counts
    assert res.metrics["real/support/without_mask"] == 0
    assert res.rocs == []


def test_bad_shapes_raise_clear_errors():
    with pytest.raises(ValueError, match="expected"):
        classification_metrics([0, 1], np.zeros((2, 3)), ["a", "b"])
    with pytest.raises(ValueError, match="no samples"):
        classification_metrics([], np.zeros((0, 2)), ["a", "b"])
    with pytest.raises(ValueError, match="outside"):
        confusion_matrix([0, 3], [0, 1], 3)


def test_anomaly_metrics_and_threshold():
    train = np.arange(1, 101, dtype=float)  # 1..100
    thr = percentile_threshold(train, 75)
    assert thr == pytest.approx(np.percentile(train, 75))
    scores = np.array([10, 20, 30, 80, 90, 95, 60, 85])
    anomalous = np.array([0, 0, 0, 1, 1, 1, 0, 1], dtype=bool)
    res = anomaly_metrics(scores, anomalous, thr, "test", "with_mask", "without_mask")
    m = res.metrics
    assert m["test/threshold"] == pytest.approx(thr)
    assert m["test/roc_auc"] == pytest.approx(skm.roc_auc_score(anomalous, scores))
    pred = scores > thr
    assert m["test/accuracy"] == pytest.approx(skm.accuracy_score(anomalous, pred))
    assert m["test/recall/without_mask"] == pytest.approx(skm.recall_score(anomalous, pred))
    assert m["test/mean_score/without_mask"] == pytest.approx(scores[anomalous].mean())
    with pytest.raises(ValueError, match="percentile"):
        percentile_threshold(train, 120)


def test_mahalanobis_matches_scipy_and_separates_a_shifted_cluster():
    from scipy.spatial.distance import mahalanobis

    rng = np.random.default_rng(2)
    cov = np.array(
        [[4, 1.5, 0, 0, 0], [1.5, 1, 0, 0, 0], [0, 0, 1, 0.8, 0], [0, 0, 0.8, 1, 0], [0, 0, 0, 0, 0.1]]
    )
    normal = rng.multivariate_normal(np.zeros(5), cov, size=400)
    scorer = MahalanobisScorer.fit(normal)
    # correlated features, many samples: little shrinkage; the distance is scipy's with our precision
    q = rng.normal(size=(3, 5))
    expected = [mahalanobis(v, scorer.mean, scorer.precision) for v in q]
    np.testing.assert_allclose(scorer.score(q), expected, rtol=1e-9)
    assert 0 <= scorer.shrinkage < 0.2
    shifted = rng.normal(loc=3.0, size=(50, 5))
    s = np.r_[scorer.score(rng.multivariate_normal(np.zeros(5), cov, size=50)), scorer.score(shifted)]
    assert skm.roc_auc_score(np.r_[np.zeros(50), np.ones(50)], s) > 0.95
    # more dimensions than samples: shrinkage keeps the covariance invertible
    wide = MahalanobisScorer.fit(rng.normal(size=(20, 64)))
    assert np.all(np.isfinite(wide.score(rng.normal(size=(4, 64)))))


def test_knn_scorer_is_the_mean_distance_to_the_k_nearest_and_leaves_a_training_face_out():
    from maskpipe.evaluation.oneclass import KnnScorer

    rng = np.random.default_rng(3)
    normal = rng.normal(loc=1.0, size=(40, 6))
    scorer = KnnScorer.fit(normal, k=3)
    unit = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    q = rng.normal(size=(5, 6))
    brute = ((unit(q)[:, None] - unit(normal)[None]) ** 2).sum(-1)  # squared euclidean of unit vectors
    np.testing.assert_allclose(scorer.score(q), np.sort(brute, 1)[:, :3].mean(1), rtol=1e-9, atol=1e-12)
    # a training face's own zero distance is not one of its neighbours
    own = ((unit(normal)[:, None] - unit(normal)[None]) ** 2).sum(-1)
    np.fill_diagonal(own, np.inf)
    np.testing.assert_allclose(scorer.train_scores(normal), np.sort(own, 1)[:, :3].mean(1), atol=1e-12)
    assert np.all(scorer.score(normal) < scorer.train_scores(normal) + 1e-12)
    # a direction the normal faces do not point in scores higher
    away = rng.normal(loc=-1.0, size=(40, 6))
    s = np.r_[scorer.score(rng.normal(loc=1.0, size=(40, 6))), scorer.score(away)]
    assert skm.roc_auc_score(np.r_[np.zeros(40), np.ones(40)], s) > 0.95
    with pytest.raises(ValueError, match="k must be within 1..39"):
        KnnScorer.fit(normal, k=40)


@pytest.mark.parametrize("size", [4, 5, 7])
def test_region_mean_averages_only_its_box(size):
    """`mouth` is the lower half without the outer fifths; at 4x4 that is rows 2-3, columns 1-2."""
    import torch

    fmap = torch.zeros(1, 2, size, size)
    r0, r1, c0, c1 = REGIONS["mouth"]
    top, bottom = round(r0 * size), round(r1 * size)
    left, right = round(c0 * size), round(c1 * size)
    fmap[:, 0, top:bottom, left:right] = 1.0  # channel 0: 1 inside the mouth box, 0 elsewhere
    fmap[:, 1] = 3.0
    assert region_mean(fmap, "mouth").tolist() == [[1.0, 3.0]]
    assert region_mean(fmap, "full")[0, 0].item() == pytest.approx((bottom - top) * (right - left) / size**2)
    assert region_mean(fmap, "lower")[0, 0].item() < 1.0  # the lower half also holds the sides
    if size == 4:
        assert (top, bottom, left, right) == (2, 4, 1, 3)
        # nose_mouth is the upper half of that box: row 2 only
        assert region_mean(fmap, "nose_mouth").tolist() == [[1.0, 3.0]]
        fmap[:, 0, 3] = 5.0  # the chin row is not part of it
        assert region_mean(fmap, "nose_mouth").tolist() == [[1.0, 3.0]]


def test_signed_power_keeps_the_sign_and_compresses_the_tails():
    import torch

    x = torch.tensor([[-4.0, -0.25, 0.0, 0.25, 9.0]])
    assert signed_power(x, 0.5).tolist() == [[-2.0, -0.5, 0.0, 0.5, 3.0]]
    assert signed_power(x, 1.0) is x


def test_pretrained_power_is_checked():
    from maskpipe.evaluation.oneclass import PretrainedFeatures

    with pytest.raises(ValueError, match="pretrained_power"):
        PretrainedFeatures(power=0.0)
