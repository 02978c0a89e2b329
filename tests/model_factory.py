"""Tiny, untrained model artifacts in the real data/models/<model>/model.pt format, for tests.

Built with the training engine's own build_model / save_model, so predict, serve and the
pyfunc model load them through the same torch.load(weights_only=True) path as trained ones.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

KINDS = {
    # name: (arch, task, classes)
    "binary": ("small_cnn", "binary", ["without_mask", "with_mask"]),
    "multiclass": ("small_cnn", "multiclass", ["with_mask", "without_mask", "mask_weared_incorrect"]),
    "oneclass": ("conv_autoencoder", "oneclass", ["with_mask"]),
}


def make_model(
    folder: Path, kind: str = "multiclass", image_size: int = 32, seed: int = 0, name: str | None = None
) -> Path:
    from maskpipe.training.artifact import save_model
    from maskpipe.training.config import ModelConfig
    from maskpipe.training.models import build_model

    arch, task, classes = KINDS[kind]
    config = ModelConfig(
        name=name or f"tiny_{kind}",
        arch=arch,
        task=task,
        classes=list(classes),
        datasets=["test"],
        image_size=image_size,
        profile="test",
        seed=seed,
    )
    torch.manual_seed(seed)
    model = build_model(config, load_weights=False).eval()
    extra = {}
    if task == "oneclass":
        # a real artifact stores percentiles of its training errors; any increasing list works here
        extra["error_percentiles"] = [float(v) for v in np.linspace(0.01, 0.2, 101)]
    path = Path(folder) / config.name / "model.pt"
    save_model(
        path,
        model,
        config,
        mean=[0.5, 0.5, 0.5],
        std=[0.25, 0.25, 0.25],
        epoch=1,
        best_metric=None,
        extra=extra,
    )
    return path
