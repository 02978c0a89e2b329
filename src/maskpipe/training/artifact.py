"""The model artifact data/models/<model>/model.pt: a plain dict, loadable with weights_only=True.

    {"format": "maskpipe-model/1", "model_name", "arch", "task", "classes", "image_size",
     "mean", "std", "state_dict", "params" (the resolved ModelConfig as a plain dict), "epoch", "best_metric",
     "best_metric_name", "weights_source", "torch_version",
     # oneclass (autoencoder) only:
     "error_percentiles": [p0, p1, ..., p100]  # per-image reconstruction MSE on the training
                                               # images (no augmentation); a threshold at the
                                               # q-th percentile is error_percentiles[q]
     "val_error_percentiles": [...]}           # same on the validation images

Loading fills keys an older artifact's params lack with today's ModelConfig defaults (the
format stays maskpipe-model/1: ``params`` is still a plain dict), so meta["params"] always has
every key, e.g. ``threshold_percentile`` (75, the value older artifacts were used with).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from maskpipe.io import atomic_path

if TYPE_CHECKING:
    from maskpipe.training.config import ModelConfig

FORMAT = "maskpipe-model/1"
REQUIRED = ("model_name", "arch", "task", "classes", "image_size", "mean", "std", "state_dict", "params")


class ArtifactError(ValueError):
    """A model file that cannot be used; the message names the file."""


def plain(obj: Any) -> Any:
    """numpy scalars/arrays, tuples and paths -> plain Python, so weights_only loading accepts them."""
    if isinstance(obj, torch.Tensor):
        return obj
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [plain(v) for v in obj]
    if hasattr(obj, "tolist") and not isinstance(obj, (str, bytes)):  # numpy scalar or array
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return str(obj)
    return obj


def save_model(
    path: str | os.PathLike,
    model: nn.Module,
    config: ModelConfig,
    *,
    mean: list[float],
    std: list[float],
    epoch: int,
    best_metric: float | None,
    best_metric_name: str = "val_loss",
    extra: dict[str, Any] | None = None,
) -> None:
    state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    payload = {
        "format": FORMAT,
        "model_name": config.name,
        "arch": config.arch,
        "task": config.task,
        "classes": list(config.classes),
        "image_size": int(config.image_size),
        "input_box": list(config.input_box) if config.input_box else None,
        "mean": [float(m) for m in mean],
        "std": [float(s) for s in std],
        "state_dict": state,
        "params": config.to_plain(),
        "epoch": int(epoch),
        "best_metric": None if best_metric is None else float(best_metric),
        "best_metric_name": best_metric_name,
        "torch_version": str(torch.__version__),
    }
    payload.update(plain(extra or {}))
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(payload, tmp)


def read_artifact(path: str | os.PathLike) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: model file not found (train it first: dvc repro train@<model>)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ArtifactError(f"{path}: cannot load model file ({exc.__class__.__name__}: {exc})") from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a maskpipe model file (expected format {FORMAT})")
    missing = [k for k in REQUIRED if k not in payload]
    if missing:
        raise ArtifactError(f"{path}: model file lacks {', '.join(missing)}")
    payload["params"] = model_config(payload, path).to_plain()
    return payload


def model_config(meta: dict, path: str | os.PathLike | None = None) -> ModelConfig:
    """The ModelConfig of an artifact's meta (or payload)."""
    from maskpipe.settings import ConfigError
    from maskpipe.training.config import ModelConfig

    where = f"{path or meta.get('model_name', 'model')}: params"
    try:
        return ModelConfig.from_artifact(meta["params"], where)
    except ConfigError as exc:
        raise ArtifactError(f"{path or meta.get('model_name')}: stored params do not load: {exc}") from exc


def load_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """(model in eval mode on ``device``, meta) where meta is the artifact without state_dict."""
    from maskpipe.training.models import build_model

    payload = read_artifact(path)
    model = build_model(model_config(payload, path), load_weights=False)
    try:
        model.load_state_dict(payload["state_dict"])
    except RuntimeError as exc:
        raise ArtifactError(f"{path}: weights do not fit arch {payload['arch']}: {exc}") from exc
    model.to(device).eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    return model, meta
