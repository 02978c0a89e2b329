"""Model outputs as probabilities (or anomaly scores), the one place that knows each task's head."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from maskpipe.training.losses import per_sample_reconstruction_error


@torch.no_grad()
def model_scores(model: nn.Module, meta: dict, batch: torch.Tensor) -> torch.Tensor:
    """Torch version of predict_proba (stays on the model's device)."""
    out = model(batch)
    task = meta["task"]
    if task == "multiclass":
        return torch.softmax(out.float(), dim=1)
    if task == "binary":
        p = torch.sigmoid(out.float().view(-1))
        return torch.stack([1.0 - p, p], dim=1)
    if task == "oneclass":
        region = (meta.get("params") or {}).get("score_region", "full")
        return per_sample_reconstruction_error(out, batch, region).view(-1, 1)
    raise ValueError(f"unknown task {task!r}")


def predict_proba(model: nn.Module, meta: dict, batch_tensor: torch.Tensor) -> np.ndarray:
    """(N, len(classes)) float array for a preprocessed batch (see transforms.preprocess).

    multiclass: softmax; binary: [p(classes[0]), p(classes[1])] from the single logit;
    oneclass: (N, 1) per-image reconstruction MSE (higher = less like the training class;
    compare with meta["error_percentiles"][q] to threshold).
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        scores = model_scores(model, meta, batch_tensor.to(device))
    finally:
        model.train(was_training)
    return scores.cpu().numpy().astype(np.float64)


def predict_labels(model: nn.Module, meta: dict, batch_tensor: torch.Tensor,
                   threshold_percentile: int = 75) -> list[str]:
    """Class names; oneclass: classes[0] when the error is at most the threshold, else 'anomaly'."""
    scores = predict_proba(model, meta, batch_tensor)
    classes = meta["classes"]
    if meta["task"] == "oneclass":
        threshold = meta["error_percentiles"][int(threshold_percentile)]
        return [classes[0] if s <= threshold else "anomaly" for s in scores[:, 0]]
    return [classes[i] for i in scores.argmax(axis=1)]
