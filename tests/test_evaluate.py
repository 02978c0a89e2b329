"""Evaluation end to end on tiny models saved as real artifacts, over crops made in tmp_path."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn import metrics as skm

from maskpipe.evaluation.evaluate import EvaluationError, evaluate_model, evaluation_sets, source_groups
from maskpipe.training.artifact import save_model
from maskpipe.training.config import normalization, resolve_model_config
from maskpipe.training.models import build_model

COLOURS = {
    "with_mask": (40, 80, 200),
    "without_mask": (220, 170, 140),
    "mask_weared_incorrect": (120, 200, 90),
}


def make_crops(root: Path, counts: dict[tuple[str, str, str], int]) -> Path:
    """PNG crops + data/crops/index.csv; counts[(dataset, label, split)] = n images."""
    rng = np.random.default_rng(0)
    rows = []
    for (dataset, label, split), n in counts.items():
        for i in range(n):
            rel = f"data/crops/{dataset}/{label}/{split}_{i}.png"
            base = np.array(COLOURS[label], dtype=float)
            img = np.clip(base + rng.normal(0, 25, size=(24, 24, 3)), 0, 255).astype(np.uint8)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(root / rel)
            rows.append(
                {
                    "face_id": f"{dataset}-{label}-{split}-{i}",
                    "crop_path": rel,
                    "dataset": dataset,
                    "source_image": f"{i}.png",
                    "label": label,
                    "split": split,
                }
            )
    index = root / "data/crops/index.csv"
    pd.DataFrame(rows).to_csv(index, index=False)
    return index


def training_error_percentiles(root: Path, model, config) -> list[float]:
    """What the trainer stores for a one-class model: percentiles 0..100 of its training errors."""
    from maskpipe.training.predict import predict_proba
    from maskpipe.training.transforms import preprocess

    index = pd.read_csv(root / "data/crops/index.csv")
    rows = index[
        index["dataset"].isin(config.datasets)
        & (index["split"] == "train")
        & index["label"].isin(config.classes)
    ]
    images = [Image.open(root / p) for p in rows["crop_path"]]
    mean, std = normalization(config)
    errors = predict_proba(model, {"task": config.task}, preprocess(images, config.image_size, mean, std))[
        :, 0
    ]
    return [float(v) for v in np.percentile(errors, np.arange(101))]


def save_tiny_model(root: Path, name: str, spec: dict, train_fn=None) -> Path:
    config = resolve_model_config({"seed": 0, "models": {name: spec}}, name, profile="seed")
    torch.manual_seed(0)
    model = build_model(config)
    if train_fn is not None:
        train_fn(model)
    mean, std = normalization(config)
    extra = {}
    if config.task == "oneclass":
        extra["error_percentiles"] = training_error_percentiles(root, model.eval(), config)
    path = root / "data/models" / name / "model.pt"
    save_model(path, model, config, mean=mean, std=std, epoch=1, best_metric=None, extra=extra)
    return path


def run(root: Path, name: str, eval_params: dict | None = None, mlflow_run_file=None, tracker=None):
    return evaluate_model(
        name,
        model_path=root / "data/models" / name / "model.pt",
        crops_index=root / "data/crops/index.csv",
        synthetic_index=root / "data/synthetic/index.csv",
        eval_params={"batch_size": 8, "grid_size": 6, **(eval_params or {})},
        metrics_path=root / "metrics" / f"{name}.json",
        out_dir=root / "metrics/plots" / name / "eval",
        base=root,
        mlflow_run_file=mlflow_run_file,
        tracker=tracker,
    )


CNN = {
    "arch": "small_cnn",
    "task": "binary",
    "datasets": ["folders"],
    "classes": ["without_mask", "with_mask"],
    "image_size": 16,
    "loss": "bce",
}


def test_binary_model_metrics_equal_sklearn_on_its_own_predictions(tmp_path):
    make_crops(
        tmp_path,
        {
            ("folders", "with_mask", "test"): 7,
            ("folders", "without_mask", "test"): 5,
            ("folders", "with_mask", "train"): 2,
        },
    )
    save_tiny_model(tmp_path, "cnn", CNN)
    out = run(tmp_path, "cnn")
    m = json.loads((tmp_path / "metrics/cnn.json").read_text())
    assert m == json.loads(json.dumps(out.metrics))
    pred = pd.read_csv(tmp_path / "metrics/plots/cnn/eval/test/predictions.csv")
    assert len(pred) == m["test/n"] == 12
    y = (pred["label"] == "with_mask").astype(int)
    yhat = (pred["predicted"] == "with_mask").astype(int)
    assert m["test/accuracy"] == pytest.approx(skm.accuracy_score(y, yhat), abs=1e-6)
    assert m["test/macro_f1"] == pytest.approx(
        skm.f1_score(y, yhat, average="macro", zero_division=0), abs=1e-6
    )
    assert m["test/roc_auc"] == pytest.approx(skm.roc_auc_score(y, pred["p_with_mask"]), abs=1e-5)
    eval_dir = tmp_path / "metrics/plots/cnn/eval/test"
    roc = pd.read_csv(eval_dir / "roc_with_mask.csv")
    assert list(roc.columns) == ["fpr", "tpr", "threshold"]
    assert roc["fpr"].iloc[0] == 0 and roc["tpr"].iloc[-1] == 1
    conf = pd.read_csv(eval_dir / "confusion.csv")
    assert list(conf.columns) == ["actual", "predicted"] and len(conf) == 12
    for png in ("confusion.png", "roc.png", "predictions.png"):
        assert (eval_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((tmp_path / "metrics/plots/cnn/eval/summary.json").read_text())
    assert summary["params"]["image_size"] == 16 and summary["sets"]["test"]["n_scored"] == 12
    # intervals resampled by source photo: with_mask i and without_mask i share photo "i.png"
    assert m["test/n_groups"] == 7
    for key in ("test/accuracy", "test/macro_f1", "test/roc_auc", "test/recall/with_mask"):
        assert m[f"{key}_lo"] <= m[key] <= m[f"{key}_hi"]
    assert "test/n_lo" not in m and "test/support/with_mask_lo" not in m


def test_source_groups_follow_synthetic_faces_to_their_photo():
    crops = pd.DataFrame(
        {
            "face_id": ["f1", "f2"],
            "crop_path": ["c/a_1.png", "c/a_2.png"],
            "dataset": ["kaggle", "kaggle"],
            "source_image": ["a.png", "a.png"],
        }
    )
    synth = pd.DataFrame({"path": ["s/1.png", "s/x.png"], "source_face_id": ["f2", "gone"]})
    samples = pd.DataFrame({"path": ["c/a_1.png", "s/1.png", "s/x.png", "elsewhere.png"]})
    assert list(source_groups(samples, crops, synth)) == [
        "kaggle:a.png",
        "kaggle:a.png",
        "synthetic:gone",
        "path:elsewhere.png",
    ]


def test_three_class_split_missing_a_class_gives_null_auc_and_a_note(tmp_path):
    make_crops(
        tmp_path,
        {
            ("kaggle", "with_mask", "test"): 4,
            ("kaggle", "without_mask", "test"): 3,
            ("kaggle", "mask_weared_incorrect", "train"): 2,
        },
    )
    spec = {
        "arch": "small_cnn",
        "task": "multiclass",
        "datasets": ["kaggle"],
        "classes": ["with_mask", "without_mask", "mask_weared_incorrect"],
        "image_size": 16,
    }
    save_tiny_model(tmp_path, "three", spec)
    out = run(tmp_path, "three")
    m = out.metrics
    assert m["test/roc_auc"] is None
    assert m["test/support/mask_weared_incorrect"] == 0
    assert m["test/recall/mask_weared_incorrect"] == 0
    assert m["test/roc_auc/with_mask"] is not None
    assert any("mask_weared_incorrect" in n for n in out.summary["notes"])
    written = json.loads((tmp_path / "metrics/three.json").read_text())
    assert written["test/roc_auc"] is None  # JSON null, not a crash or NaN
    assert sorted(p.name for p in (tmp_path / "metrics/plots/three/eval/test").glob("roc_*.csv")) == [
        "roc_with_mask.csv",
        "roc_without_mask.csv",
    ]


def test_extra_set_excludes_labels_outside_the_model_classes(tmp_path):
    make_crops(
        tmp_path,
        {
            ("folders", "with_mask", "test"): 3,
            ("folders", "without_mask", "test"): 3,
            ("kaggle", "with_mask", "test"): 4,
            ("kaggle", "without_mask", "test"): 2,
            ("kaggle", "mask_weared_incorrect", "test"): 3,
            ("kaggle", "with_mask", "train"): 5,
        },
    )
    save_tiny_model(tmp_path, "cnn", CNN)
    out = run(tmp_path, "cnn", {"extra_sets": {"cnn": {"kaggle": ["kaggle"]}}})
    m = out.metrics
    assert m["test/n"] == 6
    assert m["kaggle/n"] == 6  # test split only (the train crop is not used), incorrect ones excluded
    assert m["kaggle/excluded/mask_weared_incorrect"] == 3
    shares = [m[f"kaggle/excluded_as/mask_weared_incorrect/{c}"] for c in ("without_mask", "with_mask")]
    assert sum(shares) == pytest.approx(1.0)
    pred = pd.read_csv(tmp_path / "metrics/plots/cnn/eval/kaggle/predictions.csv")
    assert len(pred) == 9 and (tmp_path / "metrics/plots/cnn/eval/kaggle/confusion.png").exists()


def test_bad_extra_sets_and_empty_sets_raise_clear_errors(tmp_path):
    from maskpipe.evaluation.evaluate import EvaluateConfig
    from maskpipe.settings import ConfigError

    with pytest.raises(ConfigError, match=r"evaluate\.extra_sets\.cnn\.real: expected a list"):
        EvaluateConfig.from_mapping({"extra_sets": {"cnn": {"real": "kaggle"}}}, "evaluate")
    config = resolve_model_config({"models": {"cnn": CNN}}, "cnn", profile="seed")
    with pytest.raises(EvaluationError, match="extra_sets.cnn.real must be a non-empty list"):
        evaluation_sets("cnn", config, EvaluateConfig(extra_sets={"cnn": {"real": []}}))
    make_crops(tmp_path, {("folders", "with_mask", "train"): 2})
    save_tiny_model(tmp_path, "cnn", CNN)
    with pytest.raises(EvaluationError, match="no test images"):
        run(tmp_path, "cnn")


def test_unreadable_image_is_skipped_and_listed(tmp_path):
    make_crops(tmp_path, {("folders", "with_mask", "test"): 3, ("folders", "without_mask", "test"): 3})
    (tmp_path / "data/crops/folders/with_mask/test_0.png").write_bytes(b"not a png")
    save_tiny_model(tmp_path, "cnn", CNN)
    out = run(tmp_path, "cnn")
    assert out.metrics["test/n"] == 5
    assert [s["path"] for s in out.summary["skipped_images"]] == ["data/crops/folders/with_mask/test_0.png"]


def _train_autoencoder_on_blue(model):
    """A few steps on 'masked' (blue) images so unmasked (skin-coloured) ones reconstruct worse."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    g = torch.Generator().manual_seed(0)
    blue = torch.tensor(COLOURS["with_mask"], dtype=torch.float32).view(1, 3, 1, 1) / 255
    for _ in range(30):
        x = (blue + 0.1 * torch.randn(8, 3, 16, 16, generator=g)).clamp(0, 1)
        loss = torch.nn.functional.mse_loss(model(x), x)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()


def test_autoencoder_threshold_auc_and_mahalanobis(tmp_path):
    make_crops(
        tmp_path,
        {
            ("folders", "with_mask", "train"): 12,
            ("folders", "with_mask", "test"): 6,
            ("folders", "without_mask", "test"): 6,
            ("folders", "mask_weared_incorrect", "test"): 2,
        },
    )
    spec = {
        "arch": "conv_autoencoder",
        "task": "oneclass",
        "datasets": ["folders"],
        "classes": ["with_mask"],
        "image_size": 16,
        "ae_channels": [4, 8, 8],
    }
    save_tiny_model(tmp_path, "cae", spec, train_fn=_train_autoencoder_on_blue)
    out = run(tmp_path, "cae", {"pretrained_size": 64, "pretrained_knn_size": 64})  # small: a fast test
    m = out.metrics
    pred = pd.read_csv(tmp_path / "metrics/plots/cae/eval/test/predictions.csv")
    assert m["oneclass/train_n"] == 12 and m["test/n"] == 12
    assert m["test/excluded/mask_weared_incorrect"] == 2
    scored = pred[pred["label"] != "mask_weared_incorrect"]
    anomaly = (scored["label"] == "without_mask").to_numpy()
    assert m["test/roc_auc"] == pytest.approx(
        skm.roc_auc_score(anomaly, scored["score_reconstruction"]), abs=1e-5
    )
    assert m["test/roc_auc"] > 0.9  # trained on blue only: skin-coloured faces reconstruct worse
    assert m["test/mahalanobis/roc_auc"] == pytest.approx(
        skm.roc_auc_score(anomaly, scored["score_mahalanobis"]), abs=1e-5
    )
    thr = out.summary["thresholds"]["reconstruction"]
    assert m["test/threshold"] == pytest.approx(thr, rel=1e-5)
    flagged = scored["score_reconstruction"] > thr
    assert m["test/recall/without_mask"] == pytest.approx(skm.recall_score(anomaly, flagged), abs=1e-6)
    folder = tmp_path / "metrics/plots/cae/eval/test"
    for f in (
        "roc_reconstruction.csv",
        "roc_mahalanobis.csv",
        "confusion.csv",
        "confusion_mahalanobis.csv",
        "score_histogram.png",
        "score_histogram_mahalanobis.png",
        "roc.png",
        "predictions.png",
        "roc_pretrained.csv",
        "confusion_pretrained.csv",
        "score_histogram_pretrained.png",
    ):
        assert (folder / f).exists(), f
    # the pretrained-feature Gaussian (ImageNet MobileNetV2, block 16, mouth region): 160 features
    assert m["oneclass/pretrained_dim"] == 160 and m["oneclass/pretrained_train_n"] == 12
    assert m["test/pretrained/roc_auc"] == pytest.approx(
        skm.roc_auc_score(anomaly, scored["score_pretrained"]), abs=1e-5
    )
    assert m["test/pretrained/roc_auc"] > 0.9  # blue vs skin colour: any texture feature sees it
    assert m["test/pretrained/roc_auc_lo"] <= m["test/pretrained/roc_auc"] <= m["test/pretrained/roc_auc_hi"]
    # the k-nearest-neighbour distance of the same features, thresholded at the same percentile of the
    # training faces' leave-one-out distances
    assert (folder / "roc_pretrained_knn.csv").exists() and (folder / "confusion_pretrained_knn.csv").exists()
    assert m["oneclass/pretrained_knn_k"] == 5
    assert m["test/pretrained_knn/roc_auc"] == pytest.approx(
        skm.roc_auc_score(anomaly, scored["score_pretrained_knn"]), abs=1e-5
    )
    assert m["test/pretrained_knn/roc_auc"] > 0.9
    knn_thr = out.summary["thresholds"]["pretrained_knn"]
    assert m["test/pretrained_knn/threshold"] == pytest.approx(knn_thr, rel=1e-5)
    assert (scored["anomaly_pretrained_knn"] == (scored["score_pretrained_knn"] > knn_thr)).all()
    # the kNN at its own input size: features at both sizes, each scorer reads its own columns
    two = run(tmp_path, "cae", {"pretrained_size": 64, "pretrained_knn_size": 96}).metrics
    assert two["test/pretrained/roc_auc"] == m["test/pretrained/roc_auc"]
    assert two["oneclass/pretrained_dim"] == 160
    # more neighbours than training faces: a note, the other scores stand
    few = run(tmp_path, "cae", {"pretrained_size": 64, "pretrained_knn": 12})
    assert not any("pretrained_knn" in k for k in few.metrics)
    assert few.metrics["test/pretrained/roc_auc"] == m["test/pretrained/roc_auc"]
    assert any(
        "no kNN baseline (evaluate.pretrained_knn): k must be within 1..11" in n for n in few.summary["notes"]
    )
    no_knn = run(tmp_path, "cae", {"pretrained_size": 64, "pretrained_knn": 0}).metrics
    assert not any("pretrained_knn" in k for k in no_knn)
    assert no_knn["test/pretrained/roc_auc"] == m["test/pretrained/roc_auc"]
    off = run(tmp_path, "cae", {"pretrained_baseline": False}).metrics
    assert not any("pretrained" in k for k in off) and off["test/roc_auc"] == m["test/roc_auc"]


def test_metrics_and_pngs_land_in_the_models_mlflow_run(tmp_path, monkeypatch):
    """Through the Tracker training logs with (MlflowTracker): the training run is reopened, and
    the metrics, tags and files the tracker was handed are what the store holds."""
    from maskpipe import tracking
    from maskpipe.tracker import MlflowTracker

    class Recording(MlflowTracker):
        def __init__(self):
            super().__init__()
            self.calls = []

        def resume(self, model_dir):
            self.calls.append(("resume", Path(model_dir)))
            return super().resume(model_dir)

        def log_metrics(self, metrics, step=None):
            self.calls.append(("log_metrics", dict(metrics)))
            super().log_metrics(metrics, step)

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    monkeypatch.delenv("MLFLOW_EXPERIMENT_NAME", raising=False)
    make_crops(tmp_path, {("folders", "with_mask", "test"): 4, ("folders", "without_mask", "test"): 4})
    save_tiny_model(tmp_path, "cnn", CNN)
    model_dir = tmp_path / "data/models/cnn"
    with tracking.start_run("cnn", {"lr": 0.001}) as training_run:  # what training does
        tracking.write_run_file(model_dir, training_run)
    run_id = training_run.info.run_id
    tracker = Recording()
    out = run(tmp_path, "cnn", mlflow_run_file=model_dir / "mlflow_run.json", tracker=tracker)
    (_, resumed), (_, handed) = tracker.calls
    assert resumed == model_dir and handed["test/accuracy"] == out.metrics["test/accuracy"]

    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking.tracking_uri())
    logged = client.get_run(run_id)
    assert logged.info.status == "FINISHED"
    assert dict(logged.data.metrics) == pytest.approx(handed)  # every number handed over, no other
    for key in ("test/accuracy", "test/macro_f1", "test/roc_auc", "test/recall/with_mask", "test/n"):
        assert logged.data.metrics[key] == pytest.approx(out.metrics[key]), key
    assert logged.data.params["lr"] == "0.001"  # the training run itself, not a new one
    assert logged.data.tags["eval.undefined_metrics"] == "none"
    files = {f.path for f in client.list_artifacts(run_id, "evaluation/test")}
    assert {
        "evaluation/test/confusion.png",
        "evaluation/test/roc.png",
        "evaluation/test/predictions.png",
        "evaluation/test/roc_with_mask.csv",
    } <= files
    assert {f.path for f in client.list_artifacts(run_id, "evaluation")} >= {
        "evaluation/cnn.json",
        "evaluation/summary.json",
    }


def test_evaluation_logs_through_the_tracker_it_is_given(tmp_path):
    """No MLflow at all with a NullTracker: the run reopened, numbers, tags, then the files."""
    from maskpipe.tracker import NullTracker

    make_crops(tmp_path, {("folders", "with_mask", "test"): 3, ("folders", "without_mask", "test"): 3})
    save_tiny_model(tmp_path, "cnn", CNN)
    model_dir = tmp_path / "data/models/cnn"
    tracker = NullTracker()
    out = run(tmp_path, "cnn", mlflow_run_file=model_dir / "mlflow_run.json", tracker=tracker)
    assert [c[0] for c in tracker.calls] == [
        "resume",
        "log_metrics",
        "set_tags",
        "log_artifacts",
        "log_artifact",
    ]
    assert tracker.calls[0][1] == str(model_dir)
    assert tracker.calls[1][1] == {k: v for k, v in out.metrics.items() if v is not None}
    assert tracker.calls[-1][1] == str(tmp_path / "metrics" / "cnn.json")
    assert not (model_dir / "mlflow_run.json").exists()


def test_oneclass_threshold_is_the_models_own_operating_point(tmp_path):
    """The threshold comes from the artifact (models.<m>.threshold_percentile of the stored training
    errors), the one predict / serve / pyfunc use; evaluate has no percentile of its own."""
    from maskpipe.settings import ConfigError
    from maskpipe.training.artifact import load_model

    make_crops(
        tmp_path,
        {
            ("folders", "with_mask", "train"): 12,
            ("folders", "with_mask", "test"): 4,
            ("folders", "without_mask", "test"): 4,
        },
    )
    spec = {
        "arch": "conv_autoencoder",
        "task": "oneclass",
        "datasets": ["folders"],
        "classes": ["with_mask"],
        "image_size": 16,
        "ae_channels": [4, 8, 8],
        "threshold_percentile": 40,
    }
    path = save_tiny_model(tmp_path, "cae", spec, train_fn=_train_autoencoder_on_blue)
    out = run(tmp_path, "cae")
    _, meta = load_model(path)
    assert out.summary["thresholds"]["reconstruction"] == meta["error_percentiles"][40]
    assert out.summary["threshold_percentile"] == 40 and out.metrics["oneclass/threshold_percentile"] == 40
    pred = pd.read_csv(tmp_path / "metrics/plots/cae/eval/test/predictions.csv")
    thr = meta["error_percentiles"][40]
    clear = (pred["score_reconstruction"] - thr).abs() > 1e-3 * thr  # the CSV rounds the scores
    assert clear.any()
    assert (
        pred.loc[clear, "anomaly_reconstruction"] == (pred.loc[clear, "score_reconstruction"] > thr)
    ).all()
    with pytest.raises(ConfigError, match=r"evaluate\.threshold_percentile: moved to models\.<model>"):
        run(tmp_path, "cae", {"threshold_percentile": 75})
    payload = torch.load(path, weights_only=True)
    del payload["error_percentiles"]
    torch.save(payload, path)
    with pytest.raises(EvaluationError, match="error percentiles"):
        run(tmp_path, "cae")


def test_an_empty_extra_set_is_skipped_with_a_note(tmp_path):
    make_crops(
        tmp_path,
        {
            ("folders", "with_mask", "test"): 3,
            ("folders", "without_mask", "test"): 3,
            ("kaggle", "with_mask", "train"): 3,
        },
    )  # no kaggle test images
    save_tiny_model(tmp_path, "cnn", CNN)
    out = run(tmp_path, "cnn", {"extra_sets": {"cnn": {"kaggle": ["kaggle"]}}})
    assert out.metrics["test/n"] == 6 and not any(k.startswith("kaggle/") for k in out.metrics)
    assert any("set 'kaggle' skipped" in n for n in out.summary["notes"])
    assert not (tmp_path / "metrics/plots/cnn/eval/kaggle").exists()


def test_arrange_plots_moves_each_kind_into_its_folder(tmp_path):
    from maskpipe.evaluation.evaluate import arrange_plots

    ev = tmp_path / "eval"
    for set_name, files in {
        "test": [
            "roc_with_mask.csv",
            "roc_without_mask.csv",
            "confusion.csv",
            "confusion_mahalanobis.csv",
            "confusion.png",
            "roc.png",
            "predictions.csv",
        ],
        "real": ["roc_reconstruction.csv", "confusion.csv", "predictions.png"],
    }.items():
        (ev / set_name).mkdir(parents=True)
        for f in files:
            (ev / set_name / f).write_text(f)
    plots_dir = tmp_path / "plots"
    arrange_plots(ev, plots_dir)
    names = {k: sorted(p.name for p in (plots_dir / k).iterdir()) for k in ("roc", "confusion", "images")}
    assert names == {
        "roc": ["real_reconstruction.csv", "test_with_mask.csv", "test_without_mask.csv"],
        "confusion": ["real.csv", "test.csv", "test_mahalanobis.csv"],
        "images": ["real_predictions.png", "test_confusion.png", "test_roc.png"],
    }
    assert (plots_dir / "roc/test_with_mask.csv").read_text() == "roc_with_mask.csv"
    # tables stay with the evaluation
    assert sorted(p.name for p in (ev / "test").iterdir()) == ["predictions.csv"]
