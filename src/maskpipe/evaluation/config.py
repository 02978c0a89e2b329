"""params.yaml `evaluate:` as a typed section, and the part of it one model's evaluation reads.

``evaluate_inputs`` is what resolve@<model> writes to data/resolved/<model>.evaluate.json, the file
evaluate@<model> depends on instead of the whole `evaluate:` section: adding an extra set for one
model, or changing a one-class baseline's option, then re-evaluates the models that read it only.
Kept apart from evaluate.py so that the resolve stage imports no torch, pandas or plotting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from maskpipe.params import ParamsError
from maskpipe.settings import Section, option


@dataclass(frozen=True)
class EvaluateConfig(Section):
    """params.yaml `evaluate:`."""

    moved_keys = {
        "threshold_percentile": "models.<model>.threshold_percentile (the model's operating point, "
        "saved in its artifact)"
    }
    latent_pool: int = option(
        1, ge=1, doc="one-class: encoder output average-pooled to pool x pool (Mahalanobis)"
    )
    batch_size: int = option(64, ge=1)
    num_threads: int = option(2, ge=1)
    grid_size: int = option(16, ge=0, doc="images in the right/wrong prediction grid")
    extra_sets: dict[str, dict[str, list[str]]] = option(
        {}, doc="per model: <set name>: [datasets]; their test split, the model's classes"
    )
    bootstrap_resamples: int = option(1000, ge=0, doc="95 % intervals resampled by source photo; 0 = none")
    bootstrap_seed: int = 42
    pretrained_baseline: bool = option(
        True, doc="one-class: also a Gaussian on ImageNet MobileNetV2 features"
    )
    pretrained_layer: int = option(16, ge=1, le=18, doc="MobileNetV2 features[:layer + 1]")
    pretrained_size: int = option(128, ge=32, le=512, doc="pixels the face is resized to for the features")
    pretrained_region: str = option(
        "nose_mouth",
        choices=("nose_mouth", "mouth", "lower", "full"),
        doc="feature map averaged over (oneclass.REGIONS)",
    )
    pretrained_power: float = option(
        0.5, gt=0, le=1, doc="each averaged feature -> sign(x) |x|^power before the Gaussian; 1 = as is"
    )
    pretrained_knn: int = option(
        5, ge=0, doc="one-class: also the k-nearest-neighbour distance of the same features; 0 = off"
    )
    pretrained_knn_size: int = option(128, ge=32, le=512, doc="pixels the face is resized to for the kNN")


# read by one-class models only (the latent and pretrained-feature baselines); no other model's
# evaluation depends on them
ONECLASS_KEYS = (
    "latent_pool",
    "pretrained_baseline",
    "pretrained_layer",
    "pretrained_size",
    "pretrained_region",
    "pretrained_power",
    "pretrained_knn",
    "pretrained_knn_size",
)


def evaluate_config(all_params: Mapping[str, Any]) -> EvaluateConfig:
    """params.yaml `evaluate:`, checked (unknown keys, types, ranges)."""
    if "evaluate" not in all_params:
        raise ParamsError("params.yaml: missing section 'evaluate'")
    return EvaluateConfig.from_mapping(all_params["evaluate"], "evaluate")


def evaluate_inputs(all_params: Mapping[str, Any], model_name: str) -> dict[str, Any]:
    """Everything of `evaluate:` that evaluating ``model_name`` reads, resolved: the shared options,
    the model's own ``extra_sets`` entry (``{}`` when it has none), and the one-class options only
    for a one-class model. The model's own config comes from its artifact (model.pt, a dependency
    of its own)."""
    from maskpipe.training.config import resolve_model_config

    config = evaluate_config(all_params)
    task = resolve_model_config(all_params, model_name).task
    inputs = config.to_dict()
    inputs["extra_sets"] = {model_name: config.extra_sets.get(model_name) or {}}
    if task != "oneclass":
        for key in ONECLASS_KEYS:
            del inputs[key]
    return inputs
