import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKPIPE_SHARED", REPO.parent / "shared" / "datasets")).resolve()

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared/datasets (the real-data mirror); tests using it skip cleanly when absent."""
    if not (SHARED / "README.md").exists():
        pytest.skip(f"real-data mirror not found at {SHARED}")
    return SHARED


@pytest.fixture(scope="session")
def tiny_repo(tmp_path_factory, shared):
    """The whole pipeline reproduced once on the tiny profile in a temp git repo (tests/tiny_pipeline.py),
    shared by the slow end-to-end tests so CI pays for one `dvc repro`, not one per test."""
    from tiny_pipeline import build_tiny_repo

    return build_tiny_repo(REPO, shared, tmp_path_factory.mktemp("tiny") / "maskpipe")


@pytest.fixture()
def fake_repo(tmp_path, monkeypatch):
    """A temp repo of tiny fake crops (every dataset, train / val / test) and synthetic faces, as cwd:
    what train_model needs (tests/training_fakes.py)."""
    from training_fakes import ALL_DATASETS, make_crops, make_synthetic

    crops = make_crops(tmp_path, ALL_DATASETS, {"train": 6, "val": 3, "test": 2}, size=40)
    make_synthetic(tmp_path, crops, size=40)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    return tmp_path


@pytest.fixture(autouse=True)
def _no_global_mlflow_uri():
    """MLflow keeps the tracking / registry URI a test set (maskpipe.tracking sets one) in module
    globals; the next test in this process would inherit it (an empty one even means ./mlruns)."""
    outer = {k: os.environ.get(k) for k in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    yield
    mlflow = sys.modules.get("mlflow")
    if mlflow is not None:
        mlflow.set_tracking_uri(None)  # None: back to MLFLOW_TRACKING_URI / the default
        mlflow.set_registry_uri(None)
    for key, value in outer.items():  # set_tracking_uri also edits the environment
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
