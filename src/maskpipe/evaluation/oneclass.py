"""One-class (anomaly) evaluation of the autoencoder trained on masked faces only.

Two scores, both "higher = more anomalous = more likely unmasked":
- reconstruction error: per-image mean squared error of the autoencoder's output;
- latent Mahalanobis distance: the encoder's output, average-pooled to a small vector, is
  modelled as one Gaussian fitted on the *training* (masked) latents with Ledoit-Wolf
  shrinkage (the sample covariance of ~10^2 images in ~10^2 dimensions is singular or
  close to it); the score is the Mahalanobis distance to that Gaussian.

Each score becomes a classifier by a threshold at a percentile of the training scores
(the model's ``threshold_percentile``, default 75: a quarter of the training faces would be
flagged). The positive class of the ROC is the anomaly (``without_mask``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from maskpipe.evaluation.metrics import ClassificationResult, _r, classification_metrics


def percentile_threshold(train_scores: Sequence[float], percentile: float) -> float:
    """The ``percentile``-th percentile (0-100) of the training scores."""
    scores = np.asarray(train_scores, dtype=float)
    if scores.size == 0:
        raise ValueError("no training scores to set a threshold from")
    if not 0 <= float(percentile) <= 100:
        raise ValueError(f"threshold percentile must be within 0..100, got {percentile}")
    return float(np.percentile(scores, float(percentile)))


@dataclass
class MahalanobisScorer:
    """A Gaussian fitted on normal-class features; ``score`` is the Mahalanobis distance."""

    mean: np.ndarray
    precision: np.ndarray  # inverse of the shrunk covariance
    shrinkage: float

    @classmethod
    def fit(cls, features: np.ndarray) -> MahalanobisScorer:
        from sklearn.covariance import LedoitWolf

        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"need at least 2 training feature vectors, got shape {x.shape}")
        lw = LedoitWolf().fit(x)
        return cls(mean=lw.location_, precision=lw.precision_, shrinkage=float(lw.shrinkage_))

    def score(self, features: np.ndarray) -> np.ndarray:
        d = np.asarray(features, dtype=np.float64) - self.mean
        sq = np.einsum("ij,jk,ik->i", d, self.precision, d)
        return np.sqrt(np.maximum(sq, 0.0))

    def train_scores(self, features: np.ndarray) -> np.ndarray:
        """Scores of the training features (for the percentile threshold)."""
        return self.score(features)


@dataclass
class KnnScorer:
    """Distance to the ``k`` nearest normal-class training features: the mean squared euclidean
    distance between L2-normalised vectors (2 - 2 cos), over the k nearest.

    No distribution is assumed. On pretrained MobileNetV2 features of the mouth box the masked
    faces do not form one ellipsoid (masks differ in type, colour and fold), and a Gaussian spreads
    its mass over the gaps between them, where an unmasked face can land. Grouped 5-fold CV over
    train + val (928 real faces, fold seeds 42 / 1), block 16 at 128 px, k = 5: ROC-AUC 0.956 / 0.955
    against the Gaussian's 0.945 / 0.946 on the ``mouth`` box, 0.983 / 0.982 against 0.961 / 0.961 on
    ``nose_mouth``; better in every fold."""

    bank: np.ndarray  # (M, F) L2-normalised training features
    k: int

    @staticmethod
    def _unit(features: np.ndarray) -> np.ndarray:
        x = np.asarray(features, dtype=np.float64)
        return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)

    @classmethod
    def fit(cls, features: np.ndarray, k: int = 5) -> KnnScorer:
        x = np.asarray(features, dtype=np.float64)
        if x.ndim != 2 or x.shape[0] < 2:
            raise ValueError(f"need at least 2 training feature vectors, got shape {x.shape}")
        if not 1 <= int(k) < x.shape[0]:
            raise ValueError(f"k must be within 1..{x.shape[0] - 1} (training vectors - 1), got {k}")
        return cls(bank=cls._unit(x), k=int(k))

    def _distances(self, features: np.ndarray) -> np.ndarray:
        return np.maximum(2.0 - 2.0 * self._unit(features) @ self.bank.T, 0.0)

    def score(self, features: np.ndarray) -> np.ndarray:
        d = self._distances(features)
        return np.partition(d, self.k - 1, axis=1)[:, : self.k].mean(axis=1)

    def train_scores(self, features: np.ndarray) -> np.ndarray:
        """Leave-one-out scores of the bank's own vectors (``features`` is the training set): each
        vector's own zero distance is left out, as a new face has no copy of itself in the bank."""
        d = self._distances(features)
        np.fill_diagonal(d, np.inf)
        return np.partition(d, self.k - 1, axis=1)[:, : self.k].mean(axis=1)


def anomaly_metrics(
    scores: Sequence[float],
    is_anomaly: Sequence[bool],
    threshold: float,
    prefix: str,
    normal_class: str,
    anomaly_class: str,
    groups: Sequence | None = None,
    n_resamples: int = 1000,
    seed: int = 0,
) -> ClassificationResult:
    """Metrics of "score > threshold means anomaly" with ROC-AUC of the raw score.

    Classes are ``[normal_class, anomaly_class]`` so the ROC is that of the anomaly.
    """
    s = np.asarray(scores, dtype=float)
    y = np.asarray(is_anomaly, dtype=bool).astype(int)
    proba = np.stack([-s, s], axis=1)  # column 1 is the anomaly score; column 0 is unused by the ROC
    y_pred = (s > threshold).astype(int)
    result = classification_metrics(
        y,
        proba,
        [normal_class, anomaly_class],
        prefix=prefix,
        y_pred=y_pred,
        groups=groups,
        n_resamples=n_resamples,
        seed=seed,
    )
    result.metrics[f"{prefix}/threshold"] = _r(threshold)
    for label, mask in ((normal_class, y == 0), (anomaly_class, y == 1)):
        result.metrics[f"{prefix}/mean_score/{label}"] = _r(s[mask].mean()) if mask.any() else None
    return result


def latent_vectors(encoded, pool: int = 1) -> np.ndarray:
    """Encoder output (N, C, H, W) average-pooled to (N, C * pool * pool) float64."""
    import torch.nn.functional as F

    if encoded.ndim == 4:
        encoded = F.adaptive_avg_pool2d(encoded, pool)
    return encoded.reshape(encoded.shape[0], -1).double().cpu().numpy()


# feature-map region -> (first row, end row, first column, end column) as fractions of its size
# nose_mouth: the upper half of the mouth box, the band from the nose tip to the lips (at 128 px, row 2 of
# block 16's 4 x 4 map): the chin row below it varies with pose, beard and collar more than with a mask.
# Grouped CV (928 faces, fold seeds 42 / 1), 128 px: Gaussian 0.945 / 0.946 (mouth) -> 0.961 / 0.961,
# 5 nearest neighbours 0.956 / 0.955 -> 0.983 / 0.982, better in 10 of 10 folds; val 0.979 -> 0.984 / 0.994
REGIONS = {
    "nose_mouth": (0.5, 0.75, 0.2, 0.8),
    "mouth": (0.5, 1.0, 0.2, 0.8),
    "lower": (0.5, 1.0, 0.0, 1.0),
    "full": (0.0, 1.0, 0.0, 1.0),
}


def signed_power(features, power: float):
    """sign(x) |x|^power per feature (power normalisation): block outputs of MobileNetV2 are linear
    bottlenecks, about half negative, and their region means are heavy-tailed; the Gaussian fits the
    square root better. Val AUC, block 16, mouth box, 128 px: power 1 .967, .5 .979, .33 .981, .25 .980."""
    if power == 1:
        return features
    return features.sign() * features.abs().pow(power)


def region_mean(fmap, region: str):
    """(N, C, H, W) -> (N, C): the mean over one REGIONS box (at least one row and column)."""
    from maskpipe.training.transforms import box_bounds

    top, bottom, left, right = box_bounds(REGIONS[region], *fmap.shape[-2:])
    return fmap[..., top:bottom, left:right].mean(dim=(-2, -1))


class PretrainedFeatures:
    """Mid-level ImageNet MobileNetV2 features of a face: a one-class baseline that needs no training.

    The image is resized to ``size``, run through ``mobilenet_v2.features[:layer + 1]`` with the
    offline ImageNet weights (training/weights.py), and the feature map is averaged over the
    ``region`` (REGIONS): ``mouth`` = its lower half without the outer fifth on each side (nose,
    mouth, chin: where a mask is; the sides of a padded crop are cheek, hair and background),
    ``lower`` = the whole lower half, ``full`` = all of it.
    Measured on the validation split (masked train faces -> Gaussian, masked vs unmasked val faces):
    the 1280- and 320-channel last layers separate worst (AUC 0.55-0.69: they encode the object,
    "a face", not the texture over the mouth); the 160-channel block 16 the best. Block 16 at
    128 px: full 0.90, lower 0.94, mouth 0.967 (Kaggle faces 0.955, folder faces 0.992); mouth at
    160 px 0.957, at 192 px 0.943. Power / L2 normalisation, a 2-4 component mixture, k-nearest
    neighbours and flip averaging moved the lower-half AUC by at most 0.007 (later, on the mouth box with
    power 0.5, grouped CV preferred the k-nearest neighbours to the Gaussian: KnnScorer). ``power``: each averaged
    feature is mapped to sign(x) |x|^power (signed_power) before the Gaussian.
    """

    def __init__(self, layer: int = 16, size: int = 128, region: str = "mouth", power: float = 1.0):
        import torchvision

        from maskpipe.training.config import IMAGENET_MEAN, IMAGENET_STD
        from maskpipe.training.models import channels_last
        from maskpipe.training.weights import load_pretrained_state

        if region not in REGIONS:
            raise ValueError(
                f"evaluate.pretrained_region must be one of {', '.join(REGIONS)}, got {region!r}"
            )
        if not 0 < float(power) <= 1:
            raise ValueError(f"evaluate.pretrained_power must be within (0, 1], got {power}")
        net = torchvision.models.mobilenet_v2(weights=None)
        if not 0 <= int(layer) < len(net.features):
            raise ValueError(
                f"evaluate.pretrained_layer must be within 0..{len(net.features) - 1}, got {layer}"
            )
        net.load_state_dict(load_pretrained_state("mobilenet_v2", "imagenet", "evaluate.pretrained_baseline"))
        self.net = channels_last(net.features[: int(layer) + 1]).eval()  # NHWC: ~1.6x faster on CPU
        self.size, self.region, self.power = int(size), region, float(power)
        self.mean, self.std = list(IMAGENET_MEAN), list(IMAGENET_STD)

    def __call__(self, images: list, size: int | None = None) -> np.ndarray:
        """(N, C) float64 features of PIL images, resized to ``size`` (default: the extractor's)."""
        import torch

        from maskpipe.training.transforms import preprocess

        with torch.no_grad():
            fmap = self.net(preprocess(images, int(size or self.size), self.mean, self.std))
            return signed_power(region_mean(fmap, self.region), self.power).double().numpy()


class PretrainedFeatureSet:
    """One network, the features at several input sizes: a call returns them side by side, and
    ``columns(size)`` says which columns came from which size (each size is computed once)."""

    def __init__(self, extractor: PretrainedFeatures, sizes: Sequence[int]):
        self.extractor = extractor
        self.sizes = [int(s) for s in dict.fromkeys(int(s) for s in sizes)]

    def __call__(self, images: list) -> np.ndarray:
        return np.concatenate([self.extractor(images, s) for s in self.sizes], axis=1)

    def columns(self, size: int) -> slice:
        width = self.extractor.net[-1].out_channels
        i = self.sizes.index(int(size))
        return slice(i * width, (i + 1) * width)
