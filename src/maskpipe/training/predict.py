"""Model outputs as probabilities (or anomaly scores) and labels, through the task registry."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from maskpipe.training.models import Ensemble
from maskpipe.training.tasks import get_task


@torch.no_grad()
def model_scores(model: nn.Module, meta: dict, batch: torch.Tensor) -> torch.Tensor:
    """Torch version of predict_proba (stays on the model's device)."""
    params = meta.get("params") or {}
    region, scale = params.get("score_region", "full"), params.get("score_scale", "none")
    grid = params.get("score_grid")
    task = get_task(meta["task"])
    nets = list(model.members) if isinstance(model, Ensemble) else [model]
    views = [batch]
    if params.get("tta_hflip"):  # a face and its mirror are the same face: average the two scores
        views.append(batch.flip(-1))
    scores = [task.scores(net(view), view, region, scale, grid) for net in nets for view in views]
    return scores[0] if len(scores) == 1 else sum(scores) / len(scores)


def predict_proba(model: nn.Module, meta: dict, batch_tensor: torch.Tensor) -> np.ndarray:
    """(N, len(classes)) float array for a preprocessed batch (see transforms.preprocess).

    multiclass: softmax; binary: [p(classes[0]), p(classes[1])] from the single logit;
    oneclass: (N, 1) per-image reconstruction MSE (higher = less like the training class;
    ``tasks.get_task("oneclass").threshold(meta)`` is the model's operating point).
    """
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        scores = model_scores(model, meta, batch_tensor.to(device))
    finally:
        model.train(was_training)
    return scores.cpu().numpy().astype(np.float64)


def predict_labels(model: nn.Module, meta: dict, batch_tensor: torch.Tensor) -> list[str]:
    """Class names; oneclass: classes[0] when the error is at most the model's threshold, else 'anomaly'."""
    task = get_task(meta["task"])
    return task.labels(predict_proba(model, meta, batch_tensor), meta["classes"], task.threshold(meta))
