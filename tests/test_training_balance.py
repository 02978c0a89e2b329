"""Fine-tuning and class-imbalance pieces of the engine (issue 9): backbone lr, partial unfreezing,
balanced sampler, class weights, validation macro-F1, train-only datasets, downscale augment."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from training_fakes import ALL_DATASETS, make_crops, make_synthetic, repo_params, tiny_params

from maskpipe.settings import ConfigError
from maskpipe.training import engine
from maskpipe.training.config import normalization, resolve_model_config
from maskpipe.training.data import BatchLoader, InMemoryImages, select_samples
from maskpipe.training.losses import build_loss, inverse_frequency_weights
from maskpipe.training.models import build_model
from maskpipe.training.transforms import BatchAugmenter

MODEL = "mobilenet_v2_3class"


def params(profile="tiny", **extra):
    """One network of MODEL (the repo trains an ensemble of them: tests/test_ensemble.py)."""
    p = resolve_model_config(tiny_params() if profile == "tiny" else repo_params(), MODEL, profile=profile)
    return p.replace(**{"ensemble": 1, **extra})


def test_macro_f1_counts_only_classes_that_occur():
    y = np.array([0, 0, 1, 1, 2])
    assert engine.macro_f1(y, y) == 1.0
    # class 2 missed: F1 0 for it; classes 0 and 1 perfect -> 2/3 ... class 0 gets the extra prediction
    pred = np.array([0, 0, 1, 1, 0])
    f1_0 = 2 * 2 / (2 * 2 + 1 + 0)
    assert engine.macro_f1(y, pred) == pytest.approx((f1_0 + 1.0 + 0.0) / 3)
    # a class absent from truth and prediction does not pull the mean down
    assert engine.macro_f1(np.array([0, 1]), np.array([0, 1])) == 1.0
    assert engine.monitor_of(params(monitor="val_macro_f1")) == ("val_macro_f1", "max")


def test_evaluate_reports_macro_f1_and_fit_keeps_the_best_f1_epoch():
    # the small CNN keeps this fast; the engine is the same for every architecture
    p = params(
        arch="small_cnn",
        pretrained=None,
        backbone_lr_mult=1.0,
        image_size=16,
        batch_size=8,
        epochs=2,
        patience=5,
        augment=[],
        monitor="val_macro_f1",
    )
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (12, 3, 16, 16), dtype=np.uint8)
    y = np.array([0, 1, 2] * 4)
    mean, std = normalization(p)
    aug = BatchAugmenter.from_config(p, mean, std)
    train = BatchLoader(InMemoryImages(x, y), 8, aug, train=True, seed=1)
    val = BatchLoader(InMemoryImages(x, y), 8, aug, train=False)
    model = build_model(p)
    result = engine.fit(model, train, val, build_loss(p), p, progress=False, log=lambda m: None)
    f1s = [row["val_macro_f1"] for row in result.history]
    assert all(0.0 <= f <= 1.0 for f in f1s)
    assert result.monitor == "val_macro_f1" and result.best_metric == max(f1s)
    assert result.best_epoch == 1 + f1s.index(max(f1s))


def test_backbone_gets_the_lower_learning_rate_and_head_comes_first():
    p = params(backbone_lr_mult=0.1, lr=0.01)
    model = build_model(p)
    opt = engine.make_optimizer(model, p)
    head, body = opt.param_groups
    assert head["lr"] == pytest.approx(0.01) and body["lr"] == pytest.approx(0.001)
    assert {id(t) for t in body["params"]} == {id(t) for t in model.backbone.parameters()}
    assert engine.current_lr(opt) == pytest.approx(0.01)  # the logged lr is the head's
    # a model without a separate backbone cannot take the option
    cnn = resolve_model_config(tiny_params(), "mask_cnn")
    with pytest.raises(ValueError, match="backbone_lr_mult"):
        engine.make_optimizer(build_model(cnn), cnn.replace(backbone_lr_mult=0.5))


def test_unfreeze_blocks_trains_only_the_last_blocks_and_keeps_the_rest_in_eval():
    p = params(unfreeze_blocks=2)
    model = build_model(p).train()
    blocks = list(model.backbone.children())
    assert all(not t.requires_grad for b in blocks[:-2] for t in b.parameters())
    assert all(t.requires_grad for b in blocks[-2:] for t in b.parameters())
    assert not any(m.training for m in blocks[0].modules()) and blocks[-1].training
    frozen = {**repo_params()["models"][MODEL], "freeze_backbone": True, "unfreeze_blocks": 2}
    with pytest.raises(ConfigError, match="unfreeze_blocks"):
        resolve_model_config({**repo_params(), "models": {**repo_params()["models"], MODEL: frozen}}, MODEL)


def test_balanced_sampler_draws_classes_equally_and_repeats_per_epoch():
    labels = np.array([0] * 90 + [1] * 9 + [2] * 1)
    images = InMemoryImages(np.zeros((100, 3, 4, 4), dtype=np.uint8), labels)
    aug = BatchAugmenter.normalize_only([0, 0, 0], [1, 1, 1])
    loader = BatchLoader(images, 50, aug, train=True, seed=3, balanced=True)
    drawn = []
    for epoch in range(1, 21):
        loader.set_epoch(epoch)
        drawn.append(np.concatenate([y.numpy() for _, y in loader]))
    share = np.bincount(np.concatenate(drawn), minlength=3) / sum(len(d) for d in drawn)
    assert share == pytest.approx([1 / 3] * 3, abs=0.05)
    loader.set_epoch(5)
    assert np.array_equal(np.concatenate([y.numpy() for _, y in loader]), drawn[4])
    # evaluation order is untouched
    assert np.array_equal(np.concatenate([y.numpy() for _, y in loader.plain()]), labels)


def test_class_weights_are_inverse_frequency():
    w = inverse_frequency_weights([30, 10, 0])
    assert w.tolist() == pytest.approx([40 / (2 * 30), 40 / (2 * 10), 0.0])
    loss = build_loss(params(class_balance="weights", loss="cross_entropy"), class_counts=[30, 10, 0])
    assert loss.weight.tolist() == pytest.approx(w.tolist())
    with pytest.raises(ConfigError, match="class_balance"):
        bad = {**repo_params()["models"][MODEL], "class_balance": "weights", "loss": "focal"}
        resolve_model_config({**repo_params(), "models": {**repo_params()["models"], MODEL: bad}}, MODEL)


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake")
    crops = make_crops(root, ALL_DATASETS, {"train": 6, "val": 3, "test": 3}, size=40)
    return crops, make_synthetic(root, crops, size=40)


def test_synthetic_faces_train_the_three_class_model_but_val_and_test_are_real(fake):
    crops, synth = fake
    p = params(profile="seed")
    train = select_samples(crops, synth, p, "train")
    incorrect = train[train["label"] == "mask_weared_incorrect"]
    assert (incorrect["dataset"] == "synthetic").any() and (incorrect["dataset"] != "synthetic").any()
    assert {"kaggle_face_mask_detection", "mask_folders", "lfw", "synthetic"} <= set(train["dataset"])
    for split in ("val", "test"):
        held = select_samples(crops, synth, p, split)
        assert len(held) and not (held["dataset"] == "synthetic").any()
        assert not held["path"].str.startswith("data/synthetic/").any()
    # asked for explicitly (an evaluation extra set), synthetic test faces are still there
    assert (select_samples(crops, synth, p, "test", datasets=["synthetic"])["dataset"] == "synthetic").any()
    from maskpipe.evaluation.evaluate import EvaluateConfig, evaluation_sets

    assert "synthetic" not in evaluation_sets(MODEL, p, EvaluateConfig())["test"]


def test_downscale_blurs_about_half_the_images_deterministically():
    x = torch.from_numpy(np.random.default_rng(0).integers(0, 256, (16, 3, 32, 32), dtype=np.uint8))
    aug = BatchAugmenter(
        ["downscale"],
        [0, 0, 0],
        [1, 1, 1],
        rotation_degrees=0.0,
        scale_range=(1.0, 1.0),
        brightness=0.0,
        contrast=0.0,
        downscale_range=(0.25, 0.5),
    )
    out = aug(x, generator=torch.Generator().manual_seed(1))
    again = aug(x, generator=torch.Generator().manual_seed(1))
    assert torch.equal(out, again) and out.shape == x.shape
    changed = (out - x.float() / 255).abs().flatten(1).max(1).values > 1e-6
    assert 2 <= int(changed.sum()) <= 14
    # a blurred image has less high-frequency energy than its original
    i = int(changed.nonzero()[0])
    assert out[i].diff(dim=-1).abs().mean() < (x[i].float() / 255).diff(dim=-1).abs().mean()
    assert torch.equal(aug(x, train=False), x.float() / 255)


def test_synthetic_variants_keep_the_first_masked_versions_of_each_face(fake):
    """models.<m>.synthetic_variants: n keeps versions 0..n-1 of each source face (index column
    `variant`); null keeps all; an index without the column counts as all version 0."""
    crops, synth = fake
    doubled = pd.concat([synth.assign(variant=0), synth.assign(variant=1, path=synth["path"] + ".v1.png")])
    assert params(profile="seed").synthetic_variants == 1  # params.yaml: the 3-class model keeps one
    p = params(profile="seed").replace(synthetic_variants=None)
    every = select_samples(crops, doubled, p, "train")
    first = select_samples(crops, doubled, p.replace(synthetic_variants=1), "train")
    plain = select_samples(crops, synth, p.replace(synthetic_variants=1), "train")
    n_synth = (synth["split"] == "train").sum()
    assert (every["dataset"] == "synthetic").sum() == 2 * n_synth
    assert (first["dataset"] == "synthetic").sum() == n_synth == (plain["dataset"] == "synthetic").sum()
    assert not first["path"].str.endswith(".v1.png").any()
    assert set(first["path"]) == set(plain["path"])  # the unmasked sources stay the same


def test_synthetic_labels_relabel_only_synthetic_faces(fake):
    """models.<m>.synthetic_labels: {mask_weared_incorrect: with_mask} makes a mask under the nose a
    positive of the binary model; real faces keep their labels; bad names fail at config time."""
    crops, synth = fake
    binary = resolve_model_config(repo_params(), "resnet50_binary_synthetic", profile="seed")
    plain = select_samples(crops, synth, binary, "train")
    relabelled = select_samples(
        crops, synth, binary.replace(synthetic_labels={"mask_weared_incorrect": "with_mask"}), "train"
    )
    n_incorrect = int(((synth["split"] == "train") & (synth["label"] == "mask_weared_incorrect")).sum())
    assert n_incorrect > 0
    assert (relabelled["label"] == "with_mask").sum() == (plain["label"] == "with_mask").sum() + n_incorrect
    assert set(relabelled["label_idx"]) == {0, 1}  # every row is one of the model's two classes
    three = params(profile="seed").replace(synthetic_labels={"mask_weared_incorrect": "with_mask"})
    real = select_samples(crops, synth, three, "train")
    real = real[real["dataset"] != "synthetic"]
    assert (real["label"] == "mask_weared_incorrect").any()  # real incorrect faces are untouched
    with pytest.raises(ConfigError, match="synthetic_labels"):
        binary.replace(synthetic_labels={"mask_weared_incorrect": "masked"})
    with pytest.raises(ConfigError, match="add `synthetic` to datasets"):
        resolve_model_config(repo_params(), "mask_cnn", profile="seed").replace(
            synthetic_labels={"mask_weared_incorrect": "with_mask"}
        )
    with pytest.raises(ConfigError, match="bn_adapt_datasets"):
        binary.replace(bn_adapt_datasets=["synthetic"])


def test_freeze_bn_keeps_the_pretrained_statistics_while_the_rest_trains():
    p = params(profile="cpu", freeze_bn=True, unfreeze_blocks=2, image_size=32)
    model = build_model(p).train()
    bns = [m for m in model.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(m.training for m in bns) and model.head.training
    before = [m.running_mean.clone() for m in bns]
    last_bn_weight = bns[-1].weight.detach().clone()
    opt = torch.optim.SGD([t for t in model.parameters() if t.requires_grad], lr=0.5)
    loss = torch.nn.functional.cross_entropy(model(torch.randn(4, 3, 32, 32)), torch.tensor([0, 1, 2, 0]))
    loss.backward()
    opt.step()
    assert all(torch.equal(b, m.running_mean) for b, m in zip(before, bns, strict=True))
    assert not torch.equal(last_bn_weight, bns[-1].weight)  # scale and shift still learn
    # without it, the unfrozen blocks' BatchNorm follows the batches
    plain = build_model(p.replace(freeze_bn=False)).train()
    assert any(m.training for m in plain.backbone.modules() if isinstance(m, torch.nn.BatchNorm2d))
    # ResNet-50 holds its BatchNorm the same way
    resnet = build_model(
        resolve_model_config(tiny_params(), "resnet50_3class").replace(freeze_bn=True)
    ).train()
    assert not any(m.training for m in resnet.modules() if isinstance(m, torch.nn.BatchNorm2d))
    assert resnet.net.fc.training


def test_freeze_bn_refuses_settings_that_would_undo_it():
    with pytest.raises(ConfigError, match="freeze_bn"):
        params(profile="cpu", freeze_bn=True, bn_adapt_datasets=["kaggle_face_mask_detection"])
    with pytest.raises(ConfigError, match="freeze_bn"):
        params(profile="cpu", freeze_bn=True, bn_recalibrate=True)
    # an architecture without a pretrained backbone (the seed's small CNN) cannot take it
    cnn = resolve_model_config(tiny_params(), "mask_cnn")
    with pytest.raises(ValueError, match="freeze_bn"):
        build_model(cnn.replace(freeze_bn=True))
