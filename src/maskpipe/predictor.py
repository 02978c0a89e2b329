"""Predictor: detector + crop geometry + classifier, whole pictures in, face dicts out.

    predictor = Predictor.from_model("mask_cnn")              # or a path / models:/ URI
    faces = predictor.predict_image(pil_image)                # face dicts (predict_report.py)

One-class (autoencoder) models have no class probabilities: ``label`` is the trained class when
the reconstruction error is at most the threshold (the ``threshold_percentile``-th percentile
of the training errors stored in the artifact) and ``anomaly`` otherwise.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image

from maskpipe.crop_geometry import crop_face
from maskpipe.detect import get_detector
from maskpipe.imaging import to_rgb
from maskpipe.predict_errors import PredictError
from maskpipe.predict_models import resolve_model
from maskpipe.predict_settings import PredictSettings


class Predictor:
    """Detector + crop geometry + classifier: whole pictures in, face dicts out."""

    def __init__(self, model, meta: dict, settings: PredictSettings | None = None, source: str = ""):
        self.model, self.meta = model, meta
        self.settings = settings or PredictSettings()
        self.source = source
        self.classes = list(meta["classes"])
        from maskpipe.training.tasks import get_task  # the task registry: scores -> labels

        self.task = get_task(meta["task"])
        try:  # one-class: the model's own operating point (models.<m>.threshold_percentile)
            self.threshold: float | None = self.task.threshold(meta)
        except ValueError as exc:
            raise PredictError(f"{source or meta.get('model_name')}: {exc}") from exc
        self.detector = get_detector(self.settings.detector)
        self._crop = self.settings.crop_settings()

    @classmethod
    def from_model(cls, spec: str | os.PathLike, settings: PredictSettings | None = None) -> Predictor:
        path, source = resolve_model(spec)
        return cls.from_path(path, settings, source=source)

    @classmethod
    def from_path(
        cls, path: str | os.PathLike, settings: PredictSettings | None = None, source: str | None = None
    ) -> Predictor:
        from maskpipe.training.artifact import ArtifactError, load_model  # torch.load(weights_only=True)

        try:
            model, meta = load_model(path, device="cpu")
        except ArtifactError as exc:
            raise PredictError(str(exc)) from exc
        return cls(model, meta, settings, source=source or str(path))

    def describe(self) -> dict[str, Any]:
        info = {
            k: self.meta.get(k)
            for k in (
                "model_name",
                "arch",
                "task",
                "classes",
                "image_size",
                "epoch",
                "best_metric",
                "best_metric_name",
            )
        }
        info["source"] = self.source
        if self.threshold is not None:
            info["threshold"] = self.threshold
            info["threshold_percentile"] = self.meta["params"]["threshold_percentile"]
        return info

    # -- core
    def classify(self, crops: Sequence[Image.Image]) -> list[dict[str, Any]]:
        """Label, confidence and probabilities for face crops (already padded and resized)."""
        from maskpipe.training.predict import predict_proba
        from maskpipe.training.transforms import preprocess_for

        out: list[dict[str, Any]] = []
        for start in range(0, len(crops), self.settings.batch_size):
            batch = preprocess_for(list(crops[start : start + self.settings.batch_size]), self.meta)
            scores = predict_proba(self.model, self.meta, batch)
            for row in scores:
                out.append(self._face_fields(row))
        return out

    def _face_fields(self, row: np.ndarray) -> dict[str, Any]:
        label = self.task.labels(row[None, :], self.classes, self.threshold)[0]
        if not self.task.probabilities:
            error = float(row[0])
            return {
                "label": label,
                "confidence": None,
                "probabilities": {},
                "anomaly_score": round(error, 6),
                "threshold": round(self.threshold, 6),
            }
        best = int(np.argmax(row))
        return {
            "label": label,
            "confidence": round(float(row[best]), 4),
            "probabilities": {c: round(float(p), 4) for c, p in zip(self.classes, row, strict=True)},
        }

    def predict_images(self, images: Sequence[Image.Image]) -> list[list[dict[str, Any]]]:
        """Faces per image; the crops of all images are classified in shared batches."""
        per_image: list[list[dict[str, Any]]] = []
        crops: list[Image.Image] = []
        images = [to_rgb(img) for img in images]
        # detection of the batch's images in parallel (settings.detector.workers), then one classifier pass
        detect_many = getattr(self.detector, "detect_many", None)  # a plain callable stands in for tests
        detections = detect_many(images) if detect_many else [self.detector(img) for img in images]
        for img, dets in zip(images, detections, strict=True):
            faces = []
            for det in dets:
                crop, pad = crop_face(img, det.box, self._crop)
                crops.append(crop)
                faces.append(
                    {
                        "box": [int(round(v)) for v in det.box],
                        "padded_box": list(pad),
                        "detector_score": round(det.score, 4),
                    }
                )
            per_image.append(faces)
        labels = iter(self.classify(crops))
        for faces in per_image:
            for face in faces:
                face.update(next(labels))
        return per_image

    def predict_image(self, img: Image.Image) -> list[dict[str, Any]]:
        return self.predict_images([img])[0]
