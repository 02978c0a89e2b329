"""The engine: learning, early stopping, scheduler, checkpoint/resume, NaN stop; train_model end to end."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from training_fakes import tiny_params

from maskpipe.training import engine
from maskpipe.training.artifact import load_model
from maskpipe.training.config import normalization, resolve_model_config
from maskpipe.training.data import BatchLoader, InMemoryImages
from maskpipe.training.losses import build_loss
from maskpipe.training.models import build_model
from maskpipe.training.run import TrainPaths, train_model
from maskpipe.training.transforms import BatchAugmenter

QUIET = dict(progress=False, log=lambda msg: None)


def loaders(p, images, labels, val_images=None, val_labels=None):
    mean, std = normalization(p)
    aug = BatchAugmenter.from_config(p, mean, std)
    train = BatchLoader(InMemoryImages(images, labels), p.batch_size, aug, train=True, seed=p.seed)
    vi, vl = (images, labels) if val_images is None else (val_images, val_labels)
    val = BatchLoader(InMemoryImages(vi, vl), p.batch_size, aug, train=False)
    return train, val


def random_data(n=24, size=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 3, size, size), dtype=np.uint8)
    y = rng.integers(0, 2, n)
    x[y == 1, 2] = 255  # learnable: the blue channel says "masked"
    return x, y


def small_cnn_params(**kw):
    p = resolve_model_config(tiny_params(), "mask_cnn")
    return p.replace(**{**dict(image_size=16, batch_size=8, augment=["hflip"]), **kw})


@pytest.mark.shared
def test_engine_overfits_a_tiny_real_batch(shared):
    from PIL import Image

    files = [
        sorted((shared / "face-mask-folders" / lbl).iterdir())[:4] for lbl in ("without_mask", "with_mask")
    ]
    imgs = np.stack(
        [
            np.asarray(Image.open(f).convert("RGB").resize((32, 32))).transpose(2, 0, 1)
            for group in files
            for f in group
        ]
    )
    labels = np.array([0] * 4 + [1] * 4)
    torch.manual_seed(0)
    p = small_cnn_params(image_size=32, batch_size=8, epochs=30, patience=30, augment=[], dropout=0.0)
    model = build_model(p)
    train, val = loaders(p, imgs, labels)
    result = engine.fit(model, train, val, build_loss(p), p, **QUIET)
    first, last = result.history[0]["train_loss"], result.history[-1]["train_loss"]
    assert last < 0.1 * first and last < 0.07
    assert result.history[-1]["val_accuracy"] == 1.0


def test_resumed_training_ends_with_the_same_weights(tmp_path):
    x, y = random_data()
    p = small_cnn_params(epochs=4, patience=10, augment=["hflip", "rotation", "brightness_contrast"])

    def run(ckpt, stop_after=None, resume=None):
        engine.seed_everything(p.seed)
        model = build_model(p)
        train, val = loaders(p, x, y)
        result = engine.fit(
            model,
            train,
            val,
            build_loss(p),
            p,
            checkpoint_path=ckpt,
            fingerprint_value="fp",
            resume=resume,
            stop_after_epoch=stop_after,
            **QUIET,
        )
        return model, result

    full_model, full = run(tmp_path / "a.pt")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b.pt", stop_after=2)
    state = engine.resume_state(tmp_path / "b.pt", "fp", log=lambda m: None)
    assert state is not None and state["epoch"] == 2
    resumed_model, resumed = run(tmp_path / "b.pt", resume=state)
    assert resumed.resumed_from == 2 and [r["epoch"] for r in resumed.history] == [1, 2, 3, 4]
    for k, v in full_model.state_dict().items():
        assert torch.equal(v, resumed_model.state_dict()[k]), k
    assert [r["train_loss"] for r in full.history] == [r["train_loss"] for r in resumed.history]
    assert full.best_epoch == resumed.best_epoch


def test_checkpoint_with_other_params_or_finished_is_not_resumed(tmp_path):
    x, y = random_data()
    p = small_cnn_params(epochs=1)
    model = build_model(p)
    train, val = loaders(p, x, y)
    engine.fit(
        model,
        train,
        val,
        build_loss(p),
        p,
        checkpoint_path=tmp_path / "c.pt",
        fingerprint_value="one",
        **QUIET,
    )
    said = []
    assert engine.resume_state(tmp_path / "c.pt", "two", log=said.append) is None
    assert "other params" in said[-1]
    assert engine.resume_state(tmp_path / "c.pt", "one", log=said.append) is not None
    engine.mark_checkpoint_complete(tmp_path / "c.pt")
    assert engine.resume_state(tmp_path / "c.pt", "one", log=said.append) is None
    assert "finished" in said[-1]
    (tmp_path / "junk.pt").write_bytes(b"garbage")
    assert engine.resume_state(tmp_path / "junk.pt", "one", log=said.append) is None


def test_early_stopping_and_plateau_scheduler():
    x, y = random_data()
    # lr 1e-6: the val loss cannot improve by min_delta after epoch 1, so patience 3 stops after epoch 4;
    # the plateau scheduler (lr_patience 1) halves the lr after the 2nd epoch without improvement
    p = small_cnn_params(
        epochs=20,
        patience=3,
        lr=1e-6,
        min_delta=1e-2,
        scheduler="plateau",
        lr_patience=1,
        lr_factor=0.5,
        min_lr=0.0,
    )
    model = build_model(p)
    train, val = loaders(p, x, y)
    result = engine.fit(model, train, val, build_loss(p), p, **QUIET)
    assert result.stopped_early and result.last_epoch == 4 and result.best_epoch == 1
    assert [r["lr"] for r in result.history] == [1e-6, 1e-6, 1e-6, 5e-7]


def test_nan_loss_stops_with_model_epoch_and_batch():
    x, y = random_data()
    p = small_cnn_params(epochs=2)

    class Exploding(torch.nn.Module):
        calls = 0

        def forward(self, out, target):
            Exploding.calls += 1
            loss = torch.nn.functional.binary_cross_entropy_with_logits(out.view(-1), target.float())
            return loss * float("nan") if Exploding.calls == 2 else loss

    model = build_model(p)
    train, val = loaders(p, x, y)
    with pytest.raises(
        engine.NonFiniteLossError, match=r"mask_cnn: training loss is nan at epoch 1, batch 2"
    ):
        engine.fit(model, train, val, Exploding(), p, **QUIET)


def test_train_model_writes_artifact_history_and_oneclass_percentiles(fake_repo):
    from maskpipe.tracker import NullTracker

    params = tiny_params(epochs=2)
    tracker = NullTracker()
    summary = train_model("cae_oneclass", params, TrainPaths(), tracker=tracker, **QUIET)
    model, meta = load_model(fake_repo / "data/models/cae_oneclass/model.pt")
    # the tracker got the resolved config, every epoch and the model; no MLflow run file without MLflow
    calls = [name for name, _ in tracker.calls]
    assert calls.count("log_epoch") == 2 and "log_model" in calls and ("run", "cae_oneclass") in tracker.calls
    assert not (fake_repo / "data/models/cae_oneclass/mlflow_run.json").exists()
    assert meta["params"]["threshold_percentile"] == 75 and meta["params"]["ae_channels"] == [32, 64, 16]
    assert meta["task"] == "oneclass" and meta["mean"] == [0.0, 0.0, 0.0]
    pct = meta["error_percentiles"]
    assert len(pct) == 101 and pct == sorted(pct) and pct[0] > 0
    hist = pd.read_csv(fake_repo / "metrics/plots/cae_oneclass/history.csv")
    assert list(hist.columns) == ["epoch", "train_loss", "val_loss", "lr", "seconds"]
    assert hist["epoch"].tolist() == [1, 2] and summary["n_train"] == 12
    assert (fake_repo / "data/cache/.gitignore").exists()  # cache under the repo root, git-ignored
    ckpt = torch.load(fake_repo / "data/models/cae_oneclass/checkpoint.pt", weights_only=True)
    assert ckpt["complete"] and ckpt["epoch"] == 2


def test_train_model_resumes_after_an_interruption(fake_repo):
    params = tiny_params(epochs=3)
    with pytest.raises(KeyboardInterrupt):
        train_model("mask_cnn", params, TrainPaths(), track=False, stop_after_epoch=1, **QUIET)
    said = []
    summary = train_model("mask_cnn", params, TrainPaths(), track=False, progress=False, log=said.append)
    assert summary["resumed_from"] == 1 and any("resuming after epoch 1" in s for s in said)
    hist = pd.read_csv(fake_repo / "metrics/plots/mask_cnn/history.csv")
    assert hist["epoch"].tolist() == [1, 2, 3]
    assert not math.isnan(hist["val_accuracy"].iloc[-1])
    # a changed parameter starts over
    params["models"]["mask_cnn"]["lr"] = 0.0005
    said.clear()
    summary = train_model("mask_cnn", params, TrainPaths(), track=False, progress=False, log=said.append)
    assert summary["resumed_from"] is None and any("starting a new one" in s for s in said)


def test_monitor_val_accuracy_keeps_the_most_accurate_epoch():
    x, y = random_data(n=32)
    p = small_cnn_params(epochs=6, patience=10, lr=3e-3, monitor="val_accuracy")
    torch.manual_seed(0)
    model = build_model(p)
    train, val = loaders(p, x, y)
    result = engine.fit(model, train, val, build_loss(p), p, **QUIET)
    accs = [r["val_accuracy"] for r in result.history]
    assert result.monitor == "val_accuracy" and result.best_metric == max(accs)
    assert result.best_epoch == accs.index(max(accs)) + 1  # the first epoch reaching the best
    p_loss = p.replace(monitor="val_loss")
    assert engine.monitor_of(p_loss) == ("val_loss", "min") and engine.monitor_of(p) == (
        "val_accuracy",
        "max",
    )
    assert engine.monitor_of(p, has_val=False) == ("train_loss", "min")


@pytest.mark.slow
def test_stage_killed_mid_training_exits_clearly_and_resumes(fake_repo, tmp_path):
    """stages/train.py: SIGTERM after an epoch -> exit 130 and a one-line message; rerun resumes."""
    import os
    import signal
    import subprocess
    import sys
    import time

    import yaml
    from training_fakes import REPO

    params = tiny_params(epochs=40)
    (fake_repo / "params.yaml").write_text(yaml.safe_dump(params))
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}", DVC_ROOT=str(fake_repo))
    cmd = [sys.executable, str(REPO / "stages" / "train.py"), "mask_cnn"]
    proc = subprocess.Popen(
        cmd, cwd=fake_repo, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    history = fake_repo / "metrics/plots/mask_cnn/history.csv"
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if history.exists() and len(history.read_text().splitlines()) >= 3:  # 2 epochs done
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "train@mask_cnn: interrupted; run the stage again to resume" in err and "Traceback" not in err
    done = torch.load(fake_repo / "data/models/mask_cnn/checkpoint.pt", weights_only=True)["epoch"]
    assert 2 <= done < 40

    # same params, data and code: the rerun continues (early stopping ends it well before epoch 40)
    resumed = subprocess.run(cmd, cwd=fake_repo, env=env, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming after epoch {done}" in resumed.stdout
    hist = pd.read_csv(history)
    assert hist["epoch"].tolist() == list(range(1, len(hist) + 1)) and len(hist) > done


def test_bn_adapt_stores_batchnorm_statistics_of_the_unlabelled_real_images(fake_repo):
    """bn_adapt_datasets (AdaBN): after training, the trainable BatchNorm layers hold the statistics
    of those datasets' train images (every label); frozen layers keep theirs."""
    from maskpipe.imaging import open_rgb
    from maskpipe.training.data import read_crops
    from maskpipe.training.transforms import preprocess

    name, real = "resnet50_binary_synthetic", ["kaggle_face_mask_detection", "mask_folders"]
    entry = {"arch": "mobilenet_v2", "unfreeze_blocks": 3, "batch_size": 64, "max_samples": None}
    params = tiny_params()
    params["profiles"]["tiny"][name] = dict(entry)
    train_model(name, params, TrainPaths(models_dir=fake_repo / "plain"), track=False, **QUIET)
    params["profiles"]["tiny"][name] = dict(entry, bn_adapt_datasets=real)
    adapted = train_model(name, params, TrainPaths(), track=False, **QUIET)
    crops = read_crops("data/crops/index.csv")
    rows = crops[crops["dataset"].isin(real) & (crops["split"] == "train")].sort_values("crop_path")
    assert adapted["bn_adapted_images"] == len(rows) == 30  # 3 + 2 labels x 6, labels unused
    model, meta = load_model(fake_repo / "data/models" / name / "model.pt")
    before, _ = load_model(fake_repo / "plain" / name / "model.pt")
    assert meta["bn_adapted"] == {"datasets": real, "images": 30}
    batch = preprocess([open_rgb(p) for p in rows["crop_path"]], 32, meta["mean"], meta["std"])
    last_bn, frozen_bn = model.backbone[-1][1], model.backbone[0][1]  # trainable / frozen block
    seen = {}
    last_bn.register_forward_pre_hook(lambda m, inp: seen.setdefault("x", inp[0].detach()))
    with torch.no_grad():
        model.train()  # one batch as in the adaptation pass (frozen blocks stay in eval mode)
        model(batch)
    x = seen["x"]
    assert torch.allclose(last_bn.running_mean, x.mean(dim=(0, 2, 3)), atol=1e-4)
    channel_var = x.transpose(0, 1).flatten(1).var(dim=1)  # unbiased, as BatchNorm keeps it
    assert torch.allclose(last_bn.running_var, channel_var, rtol=1e-3)
    assert not torch.allclose(before.backbone[-1][1].running_var, channel_var, rtol=0.05)
    assert torch.equal(frozen_bn.running_mean, before.backbone[0][1].running_mean)


def test_a_boxed_variance_scored_autoencoder_is_scored_alike_in_training_and_inference(fake_repo):
    """input_box + score_scale + score_grid travel with the artifact: the training-error percentiles (the
    operating point) and predict_proba on the same images through preprocess_for agree."""
    from maskpipe.imaging import open_rgb
    from maskpipe.training.artifact import model_config
    from maskpipe.training.data import read_crops, read_synthetic, select_samples
    from maskpipe.training.predict import predict_proba
    from maskpipe.training.transforms import preprocess_for

    params = tiny_params(epochs=1)
    box = [0.45, 1.0, 0.15, 0.85]
    params["profiles"]["tiny"]["cae_oneclass"] = {
        "input_box": box,
        "score_scale": "variance",
        "score_grid": 2,
    }
    train_model("cae_oneclass", params, TrainPaths(), track=False, **QUIET)
    model, meta = load_model(fake_repo / "data/models/cae_oneclass/model.pt")
    assert meta["input_box"] == box and meta["params"]["score_scale"] == "variance"
    assert meta["params"]["score_grid"] == 2
    train = select_samples(
        read_crops("data/crops/index.csv"),
        read_synthetic("data/synthetic/index.csv"),
        model_config(meta),
        "train",
    )
    scores = predict_proba(model, meta, preprocess_for([open_rgb(p) for p in train["path"]], meta))[:, 0]
    pct = meta["error_percentiles"]
    assert np.percentile(scores, 75) == pytest.approx(pct[75], rel=1e-4)
    assert scores.min() == pytest.approx(pct[0], rel=1e-4) and scores.max() == pytest.approx(
        pct[100], rel=1e-4
    )
    assert pct[50] > 0.05  # a ratio to the image's variance, not a raw MSE of ~1e-2
