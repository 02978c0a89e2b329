"""MLflow store location, run naming/tags, and what a tiny training leaves in the store."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from training_fakes import ALL_DATASETS, make_crops, tiny_params

from maskpipe import tracking
from maskpipe.training.run import TrainPaths, train_model


def test_default_store_is_under_the_repo_root(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.delenv("MASKPIPE_MLFLOW_ARTIFACTS", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.chdir("/")  # like a --temp / --queue run: cwd is elsewhere
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/mlflow.db"
    assert tracking.artifact_location() == (tmp_path.resolve() / "mlartifacts").as_uri()


def test_relative_override_is_resolved_against_dvc_root(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///store/runs.db")
    assert tracking.tracking_uri() == f"sqlite:///{tmp_path.resolve()}/store/runs.db"
    assert tracking.artifact_location() == (tmp_path.resolve() / "store" / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////abs/x.db")
    assert tracking.tracking_uri() == "sqlite:////abs/x.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking.tracking_uri() == "http://127.0.0.1:5000"


def test_run_name_uses_the_dvc_experiment_or_git_sha(monkeypatch):
    ctx = {"dvc_exp_name": "", "git_short_sha": "abc1234"}
    assert tracking.run_name("mask_cnn", ctx) == "abc1234/mask_cnn"
    assert tracking.run_name("mask_cnn", dict(ctx, dvc_exp_name="lucid-frog")) == "lucid-frog/mask_cnn"
    assert tracking.run_name("mask_cnn", {"dvc_exp_name": "", "git_short_sha": ""}) == "nogit/mask_cnn"


@pytest.fixture()
def store(tmp_path, monkeypatch):
    root = tmp_path / "repo"
    root.mkdir()
    make_crops(
        root, {"mask_folders": ALL_DATASETS["mask_folders"]}, {"train": 6, "val": 3, "test": 2}, size=40
    )
    monkeypatch.chdir(root)
    monkeypatch.setenv("DVC_ROOT", str(root))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    monkeypatch.setenv("DVC_EXP_NAME", "test-exp")
    monkeypatch.setenv("DVC_STAGE", "train@mask_cnn")
    (tmp_path / "store").mkdir()
    return root, tmp_path / "store"


def test_tiny_training_leaves_an_mlflow_run_with_params_metrics_and_model(store):
    import mlflow
    from mlflow import MlflowClient

    root, store_dir = store
    summary = train_model("mask_cnn", tiny_params(epochs=2), TrainPaths(), progress=False, log=lambda m: None)
    info = json.loads((root / "data/models/mask_cnn/mlflow_run.json").read_text())
    assert info["run_id"] == summary["mlflow_run_id"] and info["run_name"] == "test-exp/mask_cnn"
    assert info["tracking_uri"] == f"sqlite:///{store_dir / 'mlflow.db'}"

    client = MlflowClient(tracking_uri=info["tracking_uri"])
    run = client.get_run(info["run_id"])
    assert run.info.status == "FINISHED"
    exp = client.get_experiment(run.info.experiment_id)
    assert exp.name == "maskpipe" and exp.artifact_location == (store_dir / "mlartifacts").as_uri()
    p = run.data.params
    assert p["arch"] == "small_cnn" and p["image_size"] == "32" and p["profile"] == "tiny"
    assert p["augment"] == "['hflip']" and p["pretrained"] == "null"
    t = run.data.tags
    assert t["dvc.exp_name"] == "test-exp" and t["dvc.stage"] == "train@mask_cnn"
    assert t["git.dirty"] in ("true", "false", "unknown") and "git.sha" in t
    history = client.get_metric_history(run.info.run_id, "train/loss")
    assert [m.step for m in history] == [1, 2]
    assert {"val/loss", "val/accuracy", "lr", "best/val_loss"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id, "history")}
    artifacts |= {a.path for a in client.list_artifacts(run.info.run_id, "params")}
    assert {"history/history.csv", "params/params.resolved.yaml"} <= artifacts
    # the raw torch model is registered as maskpipe-<m>-torch, the servable pyfunc as maskpipe-<m>
    for registered in ("maskpipe-mask_cnn-torch", "maskpipe-mask_cnn"):
        versions = client.search_model_versions(f"name='{registered}'")
        assert len(versions) == 1 and versions[0].run_id == run.info.run_id, registered
    mlflow.set_tracking_uri(info["tracking_uri"])
    loaded = mlflow.pytorch.load_model("models:/maskpipe-mask_cnn-torch/1")
    import torch

    assert loaded(torch.zeros(3, 3, 32, 32)).shape == (3, 1)
    servable = mlflow.pyfunc.load_model("models:/maskpipe-mask_cnn/latest")
    assert servable.metadata.metadata["classes"] == ["without_mask", "with_mask"]

    # evaluation logs into the same run
    with tracking.resume_run(root / "data/models/mask_cnn") as again:
        mlflow.log_metric("test/accuracy", 0.5)
    assert again.info.run_id == run.info.run_id
    assert client.get_run(run.info.run_id).data.metrics["test/accuracy"] == 0.5
    # `maskpipe package` logs into the training run too, when the model has one
    with tracking.model_run(root / "data/models/mask_cnn", run_name="package/mask_cnn") as packaged:
        pass
    assert packaged.info.run_id == run.info.run_id


def test_model_run_without_a_run_file_starts_a_named_run(tmp_path, monkeypatch):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    with tracking.model_run(tmp_path / "untracked_model", run_name="package/m") as run:
        pass
    done = MlflowClient(tracking_uri=uri).get_run(run.info.run_id)
    assert done.info.run_name == "package/m" and done.info.status == "FINISHED"


def test_resume_run_without_the_run_file_is_clear(tmp_path):
    with pytest.raises(FileNotFoundError, match="mlflow_run.json"), tracking.resume_run(tmp_path):
        pass


def test_get_or_create_experiment_is_idempotent(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'm.db'}")
    a = tracking.get_or_create_experiment()
    b = tracking.get_or_create_experiment()
    assert a == b
    assert Path(tmp_path / "m.db").exists()


def test_a_stop_signal_during_a_write_arrives_after_it_even_from_another_thread():
    """deferred_signals: SIGTERM sent while an MLflow write runs (delivered through any thread,
    as the kernel may pick one of torch's) reaches the stage's handler only when the write ends."""
    import os
    import signal
    import threading
    import time

    from maskpipe.tracking import deferred_signals

    seen = []

    def stop(signum, frame):
        seen.append("handler")
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, stop)
    try:
        with pytest.raises(KeyboardInterrupt), deferred_signals():
            sender = threading.Thread(target=os.kill, args=(os.getpid(), signal.SIGTERM))
            sender.start()
            sender.join()
            for _ in range(200):  # bytecodes run: an undeferred handler would fire here
                time.sleep(0.001)
            seen.append("write done")
        assert seen == ["write done", "handler"]
        assert signal.getsignal(signal.SIGTERM) is stop
    finally:
        signal.signal(signal.SIGTERM, old)
