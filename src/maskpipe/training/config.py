"""Resolved model parameters: the seed settings in `models:` plus the active profile.

    resolved = models.<m>  <-  profiles[train.profile].all  <-  profiles[train.profile].<m>
               + name, seed, and defaults for keys a model does not set

Everything a training needs is in that one dict; it is stored in the checkpoint and the
model artifact, logged to MLflow, and compared on resume.
"""

from __future__ import annotations

from typing import Any

from maskpipe.labels import LABELS
from maskpipe.params import deep_merge

TASKS = ("multiclass", "binary", "oneclass")
LOSSES_BY_TASK = {
    "multiclass": ("cross_entropy", "focal"),
    "binary": ("bce", "focal"),
    "oneclass": ("mse",),
}
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "plateau")
AUGMENTS = ("hflip", "rotation", "brightness_contrast", "scale", "downscale")
MONITORS = ("val_loss", "val_accuracy", "val_macro_f1")
CLASS_BALANCE = ("none", "sampler", "weights")
PSEUDO_DATASETS = ("synthetic",)

# Keys a model may leave out. Seed settings in params.yaml always win.
DEFAULTS: dict[str, Any] = {
    "pretrained": None,
    "freeze_backbone": False,
    "batch_size": 32,
    "epochs": 10,
    "optimizer": "adam",
    "lr": 0.001,
    "weight_decay": 0.0,
    "momentum": 0.9,            # sgd only
    "scheduler": "none",
    "lr_patience": 3,           # ReduceLROnPlateau: epochs without improvement before lowering lr
    "lr_factor": 0.1,
    "min_lr": 1.0e-6,
    "patience": 5,              # early stopping on val loss
    "min_delta": 0.0,           # an improvement smaller than this does not count
    "monitor": "val_loss",      # what early stopping, the plateau scheduler and the kept epoch watch: val_loss | val_accuracy | val_macro_f1
    "backbone_lr_mult": 1.0,    # backbone lr = lr x this (fine-tuning: keep the pretrained features close)
    "unfreeze_blocks": None,    # with freeze_backbone false: train only the last N backbone blocks (null = all)
    "class_balance": "none",    # none | sampler (draw classes equally often) | weights (inverse-frequency loss weights)
    "train_only_datasets": [],  # used for training only; left out of the val (epoch choice) and test splits
    "augment": [],
    "amp": False,               # mixed precision; only ever used on CUDA
    "max_samples": None,        # per split; null = all
    "dropout": 0.5,
    "bn_recalibrate": False,    # recompute BatchNorm statistics on the train images before each validation
    "focal_alpha": 1.0,
    "focal_gamma": 2.0,
    "eval_datasets": None,      # extra datasets for evaluation only (cross-dataset test)
    "rotation_degrees": 15.0,
    "scale_range": [0.85, 1.15],
    "brightness": 0.2,
    "contrast": 0.2,
    "downscale_range": [0.25, 0.75],  # augment downscale: shrunk side / image side
}

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


class ConfigError(ValueError):
    """A params.yaml problem; the message names the key."""


def active_profile(all_params: dict) -> str:
    return str((all_params.get("train") or {}).get("profile") or "seed")


def model_names(all_params: dict) -> list[str]:
    return list((all_params.get("models") or {}).keys())


def resolve_model_params(all_params: dict, model_name: str, profile: str | None = None) -> dict:
    """models.<model_name> merged with the active profile (train.profile, or ``profile``)."""
    models = all_params.get("models") or {}
    if model_name not in models:
        known = ", ".join(models) or "none"
        raise ConfigError(f"params.yaml: no model '{model_name}' under `models:` (known: {known})")
    profile = profile or active_profile(all_params)
    profiles = all_params.get("profiles") or {}
    if profile != "seed" and profile not in profiles:
        raise ConfigError(
            f"params.yaml: train.profile is '{profile}' but `profiles:` has only "
            f"{', '.join(profiles) or 'nothing'}"
        )
    prof = profiles.get(profile) or {}
    resolved = deep_merge(DEFAULTS, models[model_name] or {})
    resolved = deep_merge(resolved, prof.get("all") or {})
    resolved = deep_merge(resolved, prof.get(model_name) or {})
    resolved["name"] = model_name
    resolved["profile"] = profile
    resolved.setdefault("seed", all_params.get("seed", 0))
    resolved.setdefault("loss", _default_loss(resolved.get("task")))
    validate(resolved)
    return resolved


def _default_loss(task: str | None) -> str:
    return {"multiclass": "cross_entropy", "binary": "bce", "oneclass": "mse"}.get(task or "", "")


def validate(p: dict) -> None:
    """Raise ConfigError naming models.<name>.<key> for anything a training cannot use."""
    name = p.get("name", "?")

    def bad(key: str, problem: str) -> ConfigError:
        return ConfigError(f"params.yaml: models.{name}.{key}: {problem}")

    from maskpipe.training.models import ARCHS  # registry; late import keeps config light

    if p.get("arch") not in ARCHS:
        raise bad("arch", f"unknown architecture {p.get('arch')!r} (known: {', '.join(sorted(ARCHS))})")
    task = p.get("task")
    if task not in TASKS:
        raise bad("task", f"{task!r} is not one of {', '.join(TASKS)}")
    classes = p.get("classes")
    if not isinstance(classes, list) or not classes:
        raise bad("classes", "must be a non-empty list of labels")
    for c in classes:
        if c not in LABELS:
            raise bad("classes", f"unknown label {c!r} (known: {', '.join(LABELS)})")
    if len(set(classes)) != len(classes):
        raise bad("classes", "labels repeat")
    if task == "binary" and len(classes) != 2:
        raise bad("classes", "a binary model needs exactly two classes [negative, positive]")
    if task == "multiclass" and len(classes) < 2:
        raise bad("classes", "a multiclass model needs at least two classes")
    if task == "oneclass" and len(classes) != 1:
        raise bad("classes", "a oneclass model is trained on exactly one class")
    if (task == "oneclass") != (ARCHS[p["arch"]].kind == "autoencoder"):
        raise bad("arch", f"{p['arch']} cannot do task {task!r}")
    if p.get("loss") not in LOSSES_BY_TASK[task]:
        raise bad("loss", f"{p.get('loss')!r} does not fit task {task!r} "
                          f"(use {' or '.join(LOSSES_BY_TASK[task])})")
    datasets = p.get("datasets")
    if not isinstance(datasets, list) or not datasets:
        raise bad("datasets", "must be a non-empty list of dataset names")
    size = p.get("image_size")
    if not isinstance(size, int) or size < 16:
        raise bad("image_size", f"must be an integer >= 16, got {size!r}")
    if ARCHS[p["arch"]].kind == "autoencoder" and size % 8:
        raise bad("image_size", f"the autoencoder needs a multiple of 8, got {size}")
    for key in ("batch_size", "epochs", "patience", "lr_patience"):
        if not isinstance(p.get(key), int) or p[key] < 1:
            raise bad(key, f"must be a positive integer, got {p.get(key)!r}")
    for key in ("lr", "weight_decay", "momentum", "lr_factor", "min_lr", "dropout", "min_delta"):
        if not isinstance(p.get(key), (int, float)) or p[key] < 0:
            raise bad(key, f"must be a number >= 0, got {p.get(key)!r}")
    if p["lr"] <= 0:
        raise bad("lr", "must be > 0")
    if p.get("optimizer") not in OPTIMIZERS:
        raise bad("optimizer", f"{p.get('optimizer')!r} is not one of {', '.join(OPTIMIZERS)}")
    if p.get("scheduler") not in SCHEDULERS:
        raise bad("scheduler", f"{p.get('scheduler')!r} is not one of {', '.join(SCHEDULERS)}")
    aug = p.get("augment") or []
    if not isinstance(aug, list) or any(a not in AUGMENTS for a in aug):
        raise bad("augment", f"{aug!r}: allowed items are {', '.join(AUGMENTS)}")
    if p.get("monitor") not in MONITORS:
        raise bad("monitor", f"{p.get('monitor')!r} is not one of {', '.join(MONITORS)}")
    if task == "oneclass" and p["monitor"] != "val_loss":
        raise bad("monitor", "a oneclass model has no accuracy during training; use val_loss")
    mult = p.get("backbone_lr_mult")
    if not isinstance(mult, (int, float)) or not 0 < mult <= 1:
        raise bad("backbone_lr_mult", f"must be a number in (0, 1], got {mult!r}")
    blocks = p.get("unfreeze_blocks")
    if blocks is not None and (not isinstance(blocks, int) or blocks < 1):
        raise bad("unfreeze_blocks", f"must be null or a positive integer, got {blocks!r}")
    if blocks is not None and p.get("freeze_backbone"):
        raise bad("unfreeze_blocks", "set freeze_backbone: false to unfreeze blocks")
    if p.get("class_balance") not in CLASS_BALANCE:
        raise bad("class_balance", f"{p.get('class_balance')!r} is not one of {', '.join(CLASS_BALANCE)}")
    if p["class_balance"] != "none" and task == "oneclass":
        raise bad("class_balance", "a oneclass model has one class; use none")
    if p["class_balance"] == "weights" and p["loss"] != "cross_entropy":
        raise bad("class_balance", "weights works with loss cross_entropy; use sampler")
    only = p.get("train_only_datasets") or []
    if not isinstance(only, list) or any(d not in datasets for d in only):
        raise bad("train_only_datasets", f"{only!r}: must be a list of names from datasets")
    if only and set(only) >= set(datasets):
        raise bad("train_only_datasets", "leaves no dataset for validation and test")
    dr = p.get("downscale_range")
    if not (isinstance(dr, list) and len(dr) == 2 and all(isinstance(v, (int, float)) for v in dr)
            and 0 < dr[0] <= dr[1] <= 1):
        raise bad("downscale_range", f"must be [low, high] with 0 < low <= high <= 1, got {dr!r}")
    ms = p.get("max_samples")
    if ms is not None and (not isinstance(ms, int) or ms < 1):
        raise bad("max_samples", f"must be null or a positive integer, got {ms!r}")


def normalization(params: dict) -> tuple[list[float], list[float]]:
    """Mean/std the model expects: ImageNet statistics, except [0,1] pixels for autoencoders."""
    from maskpipe.training.models import ARCHS

    if ARCHS[params["arch"]].kind == "autoencoder":
        return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    return list(IMAGENET_MEAN), list(IMAGENET_STD)

