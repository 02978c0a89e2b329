"""The scores a one-class model is evaluated by, named once for evaluation, the stage and the report.

Kept apart from evaluation/evaluate.py so the report (no torch) can read the list without importing it.
"""

from __future__ import annotations

# metric prefix <set>/<kind>/... -> what the score is (the ROC axis label)
SCORE_AXIS = {
    "reconstruction": "reconstruction error (MSE)",
    "mahalanobis": "latent Mahalanobis distance",
    "pretrained": "Mahalanobis distance of ImageNet MobileNetV2 features",
    "pretrained_knn": "distance of ImageNet MobileNetV2 features to the k nearest masked training faces",
}
# the model's own score is <set>/...; the baselines next to it are <set>/<kind>/...
BASELINES = tuple(kind for kind in SCORE_AXIS if kind != "reconstruction")
