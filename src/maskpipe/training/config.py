"""Typed model config: the seed settings in `models:` plus the active profile, every default here.

    resolved = ModelConfig defaults  <-  models.<m>  <-  profiles[train.profile].all
               <-  profiles[train.profile].<m>       (+ name, profile, and seed when a model has none)

Each layer is checked on its own, so an unknown key or a bad value is reported where it was
written (``params.yaml: profiles.cpu.mask_cnn.lerning_rate: unknown key (did you mean 'lr'?)``).
The frozen ``ModelConfig`` is what training uses; its ``to_plain()`` dict is stored in the
checkpoint and the model artifact, logged to MLflow, and compared on resume.

A new model key is one line in ``ModelConfig`` (type, default, range/choices, doc): params.yaml
may then set it under `models:` or a profile, and old artifacts load with its default.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from maskpipe.labels import LABELS, SYNTHETIC
from maskpipe.params import deep_merge
from maskpipe.settings import ConfigError, Section, check_value, option, unknown_key_message
from maskpipe.training.models import ARCHS
from maskpipe.training.tasks import TASKS, get_task

__all__ = [
    "ConfigError",
    "ModelConfig",
    "TrainConfig",
    "resolve_model_config",
    "normalization",
    "active_profile",
    "model_names",
    "MONITORS",
]

# history column -> "min" | "max": what early stopping, the plateau scheduler and the kept epoch watch
MONITORS = {"val_loss": "min", "val_accuracy": "max", "val_macro_f1": "max"}
OPTIMIZERS = ("adam", "adamw", "sgd")
SCHEDULERS = ("none", "plateau")
AUGMENTS = ("hflip", "rotation", "brightness_contrast", "scale", "downscale")
CLASS_BALANCE = ("none", "sampler", "weights")
# set by resolve_model_config, never in params.yaml
RESOLVER_KEYS = ("name", "profile", "seed_arch")

IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]


@dataclass(frozen=True)
class ModelConfig(Section):
    """One model's resolved settings (models.<m> + profile). Fields without a default are required."""

    key_aliases = {
        "learning_rate": "lr",
        "num_epochs": "epochs",
        "max_epochs": "epochs",
        "img_size": "image_size",
        "input_size": "image_size",
        "architecture": "arch",
        "augmentation": "augment",
        "early_stopping_patience": "patience",
        "lr_scheduler": "scheduler",
        "labels": "classes",
        "weights": "pretrained",
    }

    # -- what the model is
    arch: str = option(choices=sorted(ARCHS), doc="a key of the architecture registry (models.py)")
    task: str = option(choices=list(TASKS), doc="a key of the task registry (tasks.py)")
    datasets: list[str] = option(doc="datasets (or `synthetic`) trained on")
    classes: list[str] = option(choices=LABELS, doc="labels in output order; binary: [negative, positive]")
    image_size: int = option(ge=16, doc="input side in pixels")
    eval_datasets: list[str] | None = option(
        None, doc="extra datasets for evaluation only (cross-dataset test)"
    )
    pretrained: str | None = option(None, doc="imagenet | a .pth file | null")
    freeze_backbone: bool = False
    dropout: float = option(0.5, ge=0, le=1)
    ae_channels: tuple[int, int, int] = option((32, 64, 16), doc="autoencoder encoder widths (models.py)")
    # -- optimisation
    batch_size: int = option(32, ge=1)
    epochs: int = option(10, ge=1)
    optimizer: str = option("adam", choices=OPTIMIZERS)
    lr: float = option(0.001, gt=0)
    weight_decay: float = option(0.0, ge=0)
    momentum: float = option(0.9, ge=0, doc="sgd only")
    scheduler: str = option("none", choices=SCHEDULERS, doc="plateau: ReduceLROnPlateau on `monitor`")
    lr_patience: int = option(3, ge=1, doc="plateau: epochs without improvement before lowering lr")
    lr_factor: float = option(0.1, ge=0)
    min_lr: float = option(1.0e-6, ge=0)
    patience: int = option(5, ge=1, doc="early stopping: epochs without improvement")
    min_delta: float = option(0.0, ge=0, doc="an improvement smaller than this does not count")
    monitor: str = option("val_loss", choices=list(MONITORS))
    loss: str | None = option(None, doc="null = the task's default (tasks.py)")
    focal_alpha: float = option(1.0, ge=0)
    focal_gamma: float = option(2.0, ge=0)
    amp: bool = option(False, doc="mixed precision; only ever used on CUDA")
    bn_recalibrate: bool = option(False, doc="recompute BatchNorm statistics before each validation")
    # -- fine-tuning and class balance
    backbone_lr_mult: float = option(
        1.0, gt=0, le=1, doc="backbone lr = lr x this (keep pretrained features close)"
    )
    unfreeze_blocks: int | None = option(
        None, ge=1, doc="with freeze_backbone false: train only the last N backbone blocks (null = all)"
    )
    freeze_bn: bool = option(
        False,
        doc="BatchNorm layers of the backbone keep their pretrained running statistics while training "
        "(their scale and shift still train)",
    )
    class_balance: str = option(
        "none",
        choices=CLASS_BALANCE,
        doc="sampler: draw classes equally often; weights: inverse-frequency loss weights",
    )
    train_only_datasets: list[str] = option([], doc="used for training only; left out of val and test")
    # -- data and augmentation
    max_samples: int | None = option(None, ge=1, doc="per split; null = all")
    synthetic_variants: int | None = option(
        None, ge=1, doc="synthetic faces: the first n masked versions of each source face; null = all"
    )
    synthetic_labels: dict[str, str] = option(
        {}, doc="synthetic faces relabelled for this model, e.g. {mask_weared_incorrect: with_mask}"
    )
    bn_adapt_datasets: list[str] = option(
        [],
        doc="after training, BatchNorm statistics re-estimated on these datasets' train images, labels unused",
    )
    input_box: tuple[float, float, float, float] | None = option(
        None,
        doc="(top, bottom, left, right) fractions of the face crop the model sees; null = all of it",
    )
    ensemble: int = option(
        1,
        ge=1,
        doc="train n models (seeds seed, seed+1, ...) and predict the mean of their probabilities",
    )
    tta_hflip: bool = option(
        False,
        doc="predict (evaluate, predict, serve, pyfunc): the mean of the scores of the image and its mirror",
    )
    augment: list[str] = option([], choices=AUGMENTS)
    rotation_degrees: float = option(15.0, ge=0, le=180)
    scale_range: tuple[float, float] = option((0.85, 1.15), doc="scale augmentation: zoom range")
    brightness: float = option(0.2, ge=0, le=1)
    contrast: float = option(0.2, ge=0, le=1)
    downscale_range: tuple[float, float] = option(
        (0.25, 0.75), doc="augment downscale: shrunk side / image side"
    )
    # -- operating point (one-class): evaluation, predict, serve and pyfunc all use this one
    threshold_percentile: int = option(
        75, ge=0, le=100, doc="one-class: anomaly above this percentile of the training errors"
    )
    score_region: str = option(
        "full",
        choices=("full", "lower"),
        doc="one-class: reconstruction error over the full image or its lower half",
    )
    score_scale: str = option(
        "none",
        choices=("none", "variance"),
        doc="one-class: variance = the error divided by the input's own pixel variance (1 - R^2)",
    )
    score_grid: int | None = option(
        None,
        ge=1,
        doc="one-class: the error between n x n grids of cell means of input and output; null = per pixel",
    )
    # -- set by the resolver
    seed: int = 0
    name: str = "model"
    profile: str = "seed"
    seed_arch: str | None = None  # the seed architecture when a profile swapped it (named in the report)

    def __post_init__(self) -> None:
        task = get_task(self.task)
        if self.loss is None:
            object.__setattr__(self, "loss", task.default_loss)
        self._check(task)

    def _bad(self, key: str, problem: str) -> ConfigError:
        return ConfigError(f"params.yaml: models.{self.name}.{key}: {problem}")

    def _check(self, task) -> None:
        arch = ARCHS[self.arch]
        if not self.classes:
            raise self._bad("classes", "must be a non-empty list of labels")
        if len(set(self.classes)) != len(self.classes):
            raise self._bad("classes", "labels repeat")
        problem = task.classes_problem(self.classes)
        if problem:
            raise self._bad("classes", problem)
        if task.arch_kind != arch.kind:
            raise self._bad("arch", f"{self.arch} cannot do task {self.task!r}")
        if self.loss not in task.losses:
            raise self._bad(
                "loss", f"{self.loss!r} does not fit task {self.task!r} (use {' or '.join(task.losses)})"
            )
        if not self.datasets:
            raise self._bad("datasets", "must be a non-empty list of dataset names")
        if arch.kind == "autoencoder" and self.image_size % 8:
            raise self._bad("image_size", f"the autoencoder needs a multiple of 8, got {self.image_size}")
        if self.monitor != "val_loss" and not task.has_accuracy:
            raise self._bad("monitor", f"a {self.task} model has no accuracy during training; use val_loss")
        if self.unfreeze_blocks is not None and self.freeze_backbone:
            raise self._bad("unfreeze_blocks", "set freeze_backbone: false to unfreeze blocks")
        if self.class_balance != "none" and not task.has_accuracy:
            raise self._bad("class_balance", f"a {self.task} model has one class; use none")
        if self.class_balance == "weights" and self.loss != "cross_entropy":
            raise self._bad("class_balance", "weights works with loss cross_entropy; use sampler")
        if self.ensemble > 1 and not task.has_accuracy:
            raise self._bad("ensemble", f"a {self.task} model is not averaged over members; use 1")
        if any(d not in self.datasets for d in self.train_only_datasets):
            raise self._bad(
                "train_only_datasets", f"{self.train_only_datasets!r}: must be names from datasets"
            )
        if self.train_only_datasets and set(self.train_only_datasets) >= set(self.datasets):
            raise self._bad("train_only_datasets", "leaves no dataset for validation and test")
        for old, new in self.synthetic_labels.items():
            if old not in LABELS or new not in LABELS:
                raise self._bad(
                    "synthetic_labels", f"{old}: {new}: both must be labels ({', '.join(LABELS)})"
                )
        if self.synthetic_labels and SYNTHETIC not in self.datasets:
            raise self._bad("synthetic_labels", "relabels synthetic faces: add `synthetic` to datasets")
        if SYNTHETIC in self.bn_adapt_datasets:
            raise self._bad("bn_adapt_datasets", "adapts to real faces: name real datasets, not `synthetic`")
        if self.freeze_bn and (self.bn_adapt_datasets or self.bn_recalibrate):
            raise self._bad(
                "freeze_bn",
                "keeps the pretrained statistics; bn_adapt_datasets / bn_recalibrate re-estimate them",
            )
        if self.input_box is not None:
            top, bottom, left, right = self.input_box
            if not (0 <= top < bottom <= 1 and 0 <= left < right <= 1):
                raise self._bad(
                    "input_box",
                    f"must be [top, bottom, left, right] with 0 <= top < bottom <= 1 and 0 <= left < right <= 1, "
                    f"got {list(self.input_box)}",
                )
        low, high = self.downscale_range
        if not 0 < low <= high <= 1:
            raise self._bad(
                "downscale_range",
                f"must be [low, high] with 0 < low <= high <= 1, got {list(self.downscale_range)}",
            )

    # -- reading
    @classmethod
    def from_artifact(cls, params: Mapping[str, Any], where: str = "model.pt params") -> ModelConfig:
        """The config stored in a checkpoint or model artifact (older ones get today's defaults)."""
        return cls.from_mapping(params, where)

    def to_plain(self) -> dict[str, Any]:
        """JSON / YAML / torch.load(weights_only)-safe dict (tuples as lists)."""
        return _plain(self.to_dict())


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


@dataclass(frozen=True)
class TrainConfig(Section):
    """params.yaml `train:` (the stage-wide settings; per-model ones are ModelConfig)."""

    profile: str = option("seed", doc="a key of `profiles:`, or seed (the settings as written in `models:`)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int = option(0, ge=0, doc="torch threads and tensor-cache builders; 0 = torch's default")
    cache_dir: str = option("data/cache", doc="uint8 tensor cache, relative to the repo root")
    nproc_per_node: int = option(
        1, ge=1, le=64, doc="processes (torchrun + DistributedDataParallel); training/distributed.py"
    )


def train_config(all_params: Mapping[str, Any]) -> TrainConfig:
    return TrainConfig.from_mapping(all_params.get("train"), "train")


def active_profile(all_params: Mapping[str, Any]) -> str:
    return train_config(all_params).profile


def model_names(all_params: Mapping[str, Any]) -> list[str]:
    return list((all_params.get("models") or {}).keys())


def _check_layer(layer: Any, where: str) -> dict[str, Any]:
    """One params layer checked against ModelConfig's fields: unknown keys and values named at ``where``."""
    if layer is None:
        return {}
    if not isinstance(layer, Mapping):
        raise ConfigError(f"params.yaml: {where}: expected a mapping of keys, got {layer!r}")
    fields = ModelConfig.__dataclass_fields__
    settable = [k for k in fields if k not in RESOLVER_KEYS]
    hints = _hints()
    for key, value in layer.items():
        if key not in settable:
            raise ConfigError(unknown_key_message(where, key, settable, ModelConfig.key_aliases))
        check_value(value, hints[key], f"{where}.{key}", fields[key].metadata)
    return dict(layer)


_HINTS: dict[str, Any] = {}


def _hints() -> dict[str, Any]:
    if not _HINTS:
        import typing

        _HINTS.update(typing.get_type_hints(ModelConfig))
    return _HINTS


def resolve_model_config(
    all_params: Mapping[str, Any], model_name: str, profile: str | None = None
) -> ModelConfig:
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
    if not isinstance(prof, Mapping):
        raise ConfigError(f"params.yaml: profiles.{profile}: expected a mapping of keys, got {prof!r}")
    for key in prof:  # profiles.<p>.<typo>: a model name that does not exist
        if key != "all" and key not in models:
            raise ConfigError(unknown_key_message(f"profiles.{profile}", key, ["all", *models]))
    merged = _check_layer(models[model_name], f"models.{model_name}")
    merged = deep_merge(merged, _check_layer(prof.get("all"), f"profiles.{profile}.all"))
    merged = deep_merge(merged, _check_layer(prof.get(model_name), f"profiles.{profile}.{model_name}"))
    merged["name"] = model_name
    merged["profile"] = profile
    seed_arch = (models[model_name] or {}).get("arch")
    if seed_arch and merged.get("arch") != seed_arch:  # a profile swapped the architecture: say so
        merged["seed_arch"] = seed_arch
    merged.setdefault("seed", all_params.get("seed", 0))
    return ModelConfig.from_mapping(merged, f"models.{model_name}")


def training_inputs(all_params: Mapping[str, Any], model_name: str) -> dict[str, Any]:
    """Everything of params.yaml that training ``model_name`` reads (train_model resolves exactly
    these two): the model's resolved config (its `models:` entry, the active profile's `all` and
    `<model>` layers, and the seed) and the `train:` section. The resolve stage writes it to
    data/resolved/<model>.json, the file train@<model> depends on instead of `profiles` as a whole:
    editing one model's profile entry then retrains that model only."""
    return {
        "model": resolve_model_config(all_params, model_name).to_plain(),
        "train": _plain(train_config(all_params).to_dict()),
    }


def normalization(config: ModelConfig) -> tuple[list[float], list[float]]:
    """Mean/std the model expects: ImageNet statistics, except [0,1] pixels for autoencoders."""
    if ARCHS[config.arch].kind == "autoencoder":
        return [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]
    return list(IMAGENET_MEAN), list(IMAGENET_STD)
