"""Architecture registry: models differ by a registry entry and params, never by a copied loop.

Every model maps an NCHW float batch to
- multiclass: logits (N, len(classes));
- binary:     one logit (N, 1) for classes[1] (the positive class);
- oneclass:   a reconstruction of the input (N, 3, H, W) in [0, 1] (autoencoder).

Backbones that are frozen (`freeze_backbone: true`) stay in eval mode during training, so their
BatchNorm statistics stay those of the pretrained weights.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch
from torch import nn

from maskpipe.training.tasks import get_task
from maskpipe.training.weights import load_pretrained_state

if TYPE_CHECKING:  # config imports this registry
    from maskpipe.training.config import ModelConfig


@dataclass(frozen=True)
class Arch:
    name: str
    kind: str  # "classifier" | "autoencoder"
    builder: Callable[[ModelConfig, int], nn.Module]
    description: str


ARCHS: dict[str, Arch] = {}


def register(name: str, kind: str = "classifier", description: str = ""):
    def deco(fn: Callable[[ModelConfig, int], nn.Module]):
        ARCHS[name] = Arch(name, kind, fn, description or (fn.__doc__ or "").strip())
        return fn

    return deco


def num_outputs(config: ModelConfig) -> int:
    return get_task(config.task).num_outputs(len(config.classes))


def build_model(config: ModelConfig, load_weights: bool = True) -> nn.Module:
    """The nn.Module for a resolved ModelConfig (see config.resolve_model_config).

    ``load_weights=False`` skips pretrained weights (used when a state_dict follows anyway,
    e.g. loading an artifact).
    """
    if config.arch not in ARCHS:
        raise ValueError(f"unknown arch {config.arch!r} (known: {', '.join(sorted(ARCHS))})")
    if not load_weights:
        config = replace(config, pretrained=None)
    if config.ensemble > 1:  # members have ensemble 1 (and no weights file when load_weights is false)
        return Ensemble([build_model(m) for m in member_configs(config)])
    model = ARCHS[config.arch].builder(config, num_outputs(config))
    if config.freeze_bn and not getattr(model, "freeze_bn", False):
        raise ValueError(f"{config.name}: arch {config.arch} has no pretrained backbone to take freeze_bn")
    return channels_last(model)


def hold_batchnorm(module: nn.Module) -> None:
    """Every BatchNorm inside ``module`` to eval mode: it normalises with its running statistics
    and stops updating them (its scale and shift still train). Call after ``train()``."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.eval()


def channels_last(model: nn.Module) -> nn.Module:
    """The model's 4-D weights in NHWC order: convolutions then run in that layout whatever the input's.

    Values and outputs are those of NCHW (only the strides differ), and load_state_dict keeps the
    layout. Measured on 2 CPU cores (benchmarks/bench_train_step.py), one train step at batch 32:
    MobileNetV2 at 128 px 1.3-1.5x faster, ResNet-50 at 96 px ~1.15x; inference at batch 64 ~1.6x.
    """
    return model.to(memory_format=torch.channels_last)


def member_configs(config: ModelConfig) -> list[ModelConfig]:
    """The configs the members of an ensemble train with: the model's own (seed s) and seeds s+1, ...

    Member 0 is exactly the model ``ensemble: 1`` trains (same seed, same checkpoint fingerprint).
    """
    if config.ensemble <= 1:
        return [config]
    return [replace(config, ensemble=1, seed=config.seed + i) for i in range(config.ensemble)]


class Ensemble(nn.Module):
    """``ensemble: n`` members of one architecture, each trained on its own with its own seed.

    Predictions (training/predict.model_scores) average the members' probabilities. ``forward``
    returns the mean of the members' outputs (logits): what BatchNorm re-estimation passes need.
    Five-fold grouped CV of mobilenet_v2_3class, the same folds trained with seeds 42 / 1 / 2: pooled
    macro-F1 0.783 / 0.764 / 0.759, the mean of the three's probabilities 0.801 (incorrect AUC
    0.90 / 0.85 / 0.89 -> 0.91). The synthetic-trained binary model's members agree too closely to
    gain (val accuracy 0.952 / 0.952 / 0.946 -> 0.946): an ensemble pays where the seed matters.
    """

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([m(x) for m in self.members]).mean(0)


class FrozenBackboneModel(nn.Module):
    """backbone (features) -> global average pool -> head. Backbone optionally frozen.

    ``unfreeze_blocks`` N (with freeze false): only the last N children of the backbone train;
    the earlier ones are frozen and stay in eval mode like a frozen backbone.
    ``freeze_bn``: every BatchNorm of the backbone stays in eval mode, so training normalises with
    the pretrained running statistics instead of each batch's (the affine weights still train).
    """

    def __init__(
        self,
        backbone: nn.Module,
        head: nn.Module,
        freeze: bool,
        unfreeze_blocks: int | None = None,
        freeze_bn: bool = False,
    ):
        super().__init__()
        self.backbone = backbone
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.head = head
        self.frozen = bool(freeze)
        self.freeze_bn = bool(freeze_bn)
        blocks = list(backbone.children())
        if self.frozen:
            self.frozen_blocks = blocks
        elif unfreeze_blocks:
            self.frozen_blocks = blocks[: max(0, len(blocks) - int(unfreeze_blocks))]
        else:
            self.frozen_blocks = []
        for block in self.frozen_blocks:
            for prm in block.parameters():
                prm.requires_grad_(False)

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            self.backbone.eval()
        for block in self.frozen_blocks:
            block.eval()
        if self.freeze_bn:
            hold_batchnorm(self.backbone)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.backbone(x)
        x = torch.flatten(self.pool(x), 1)
        return self.head(x)


def _load_backbone(model: nn.Module, config: ModelConfig, arch: str, drop_prefixes: tuple[str, ...]) -> None:
    """Load pretrained torchvision weights into ``model``; the classifier weights are dropped."""
    state = load_pretrained_state(arch, config.pretrained, config.name)
    if state is None:
        return
    state = {k: v for k, v in state.items() if not k.startswith(drop_prefixes)}
    missing, unexpected = model.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.startswith(drop_prefixes)]
    if missing or unexpected:
        raise ValueError(
            f"pretrained weights for {arch} do not fit: missing {missing[:5]}, unexpected {unexpected[:5]}"
        )


# ------------------------------------------------------------------------------- resnet50
class ResNetClassifier(nn.Module):
    """torchvision ResNet-50 with its fc replaced; freezing keeps only fc trainable."""

    def __init__(self, net: nn.Module, freeze: bool, freeze_bn: bool = False):
        super().__init__()
        self.net = net
        self.frozen = bool(freeze)
        self.freeze_bn = bool(freeze_bn)
        if self.frozen:
            for name, prm in self.net.named_parameters():
                prm.requires_grad_(name.startswith("fc."))

    def train(self, mode: bool = True):
        super().train(mode)
        if self.frozen:
            for name, module in self.net.named_children():
                if name != "fc":
                    module.eval()
        if self.freeze_bn:
            hold_batchnorm(self.net)
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


@register("resnet50", description="torchvision ResNet-50, fc replaced by Linear(2048, outputs)")
def _resnet50(config: ModelConfig, n_out: int) -> nn.Module:
    import torchvision

    net = torchvision.models.resnet50(weights=None)
    _load_backbone(net, config, "resnet50", ("fc.",))
    net.fc = nn.Linear(net.fc.in_features, n_out)
    return ResNetClassifier(net, config.freeze_backbone, config.freeze_bn)


# ------------------------------------------------------------------------------- small_cnn
class SmallCNN(nn.Module):
    """2 conv layers (32, 64, 3x3) each with ReLU + 2x2 max-pool, FC 128, one output per logit."""

    def __init__(self, image_size: int, n_out: int, dropout: float):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        side = ((image_size - 2) // 2 - 2) // 2
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(64 * side * side, 128),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
            nn.Linear(128, n_out),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


@register("small_cnn", description="2 conv (32, 64, 3x3) + max-pool + FC 128 + output")
def _small_cnn(config: ModelConfig, n_out: int) -> nn.Module:
    if config.pretrained:
        raise ValueError("small_cnn has no pretrained weights; set pretrained: null")
    return SmallCNN(config.image_size, n_out, config.dropout)


# ------------------------------------------------------------------------------- mobilenet_v3
@register(
    "mobilenet_v3_large",
    description="MobileNetV3-Large features (frozen) + head 960-1280-640-classes, Hardswish, dropout",
)
def _mobilenet_v3_large(config: ModelConfig, n_out: int) -> nn.Module:
    import torchvision

    net = torchvision.models.mobilenet_v3_large(weights=None)
    _load_backbone(net, config, "mobilenet_v3_large", ("classifier.",))
    p = config.dropout
    head = nn.Sequential(
        nn.Linear(960, 1280),
        nn.Hardswish(inplace=True),
        nn.Dropout(p),
        nn.Linear(1280, 640),
        nn.Hardswish(inplace=True),
        nn.Dropout(p),
        nn.Linear(640, n_out),
    )
    return FrozenBackboneModel(
        net.features, head, config.freeze_backbone, config.unfreeze_blocks, config.freeze_bn
    )


# ------------------------------------------------------------------------------- mobilenet_v2
@register(
    "mobilenet_v2",
    description="MobileNetV2 ImageNet features (frozen) + head 1280-128-classes (ReLU, dropout)",
)
def _mobilenet_v2(config: ModelConfig, n_out: int) -> nn.Module:
    import torchvision

    net = torchvision.models.mobilenet_v2(weights=None)
    _load_backbone(net, config, "mobilenet_v2", ("classifier.",))
    # the head of the widely used Keras mask detector: pool -> Dense 128 relu -> dropout -> out
    head = nn.Sequential(
        nn.Linear(1280, 128),
        nn.ReLU(inplace=True),
        nn.Dropout(config.dropout),
        nn.Linear(128, n_out),
    )
    return FrozenBackboneModel(
        net.features, head, config.freeze_backbone, config.unfreeze_blocks, config.freeze_bn
    )


# ------------------------------------------------------------------------------- autoencoder
class ConvAutoencoder(nn.Module):
    """Encoder 3x (conv stride 2 + ReLU), decoder 3x (transposed conv stride 2), sigmoid output.

    The last encoder width sets the bottleneck: (32, 64, 16) keeps S/8 x S/8 x 16 numbers (1/12 of
    the input). A wide one (128) reconstructs any face about equally well, masked or not, which
    makes the reconstruction error useless as an anomaly score (val AUC 0.55 vs 0.69 with 16,
    masked vs unmasked faces, CPU profile).
    """

    def __init__(self, channels: tuple[int, int, int]):
        super().__init__()
        c1, c2, c3 = channels
        self.encoder = nn.Sequential(
            nn.Conv2d(3, c1, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c1, c2, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(c2, c3, 3, stride=2, padding=1),
            nn.ReLU(inplace=True),
        )
        self.decoder = nn.Sequential(
            nn.ConvTranspose2d(c3, c2, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c2, c1, 3, stride=2, padding=1, output_padding=1),
            nn.ReLU(inplace=True),
            nn.ConvTranspose2d(c1, 3, 3, stride=2, padding=1, output_padding=1),
            nn.Sigmoid(),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(x))


@register(
    "conv_autoencoder",
    kind="autoencoder",
    description="3 conv + ReLU encoder, 3 transposed conv decoder + sigmoid (MSE)",
)
def _conv_autoencoder(config: ModelConfig, n_out: int) -> nn.Module:
    if config.pretrained:
        raise ValueError("conv_autoencoder has no pretrained weights; set pretrained: null")
    return ConvAutoencoder(config.ae_channels)


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, total
