"""Which model.pt `--model` means: a path, a data/models/<name>/ output, or the MLflow registry."""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

from maskpipe.predict_errors import PredictError


def resolve_model(spec: str | os.PathLike) -> tuple[Path, str]:
    """Find the model.pt for ``--model``; returns (path, where it came from).

    Accepted, in this order:
    1. a path: a model.pt file, a folder holding model.pt (data/models/<m>/), or a packaged
       pyfunc model folder (its artifacts/model.pt);
    2. ``models:/<name>/<version|latest>`` or ``runs:/<id>/<path>``: downloaded from the MLflow
       store of maskpipe.tracking.tracking_uri();
    3. a model name: ``data/models/<name>/model.pt`` in the repo when it exists (the DVC output
       of train@<name>), else the registered model ``maskpipe-<name>`` (or ``<name>``), latest version.
    """
    from maskpipe.paths import repo_root

    text = str(spec)
    path = Path(os.path.expanduser(text))
    if path.exists():
        found = model_file_in(path)
        if found is None:
            raise PredictError(f"{path}: no model.pt there (expected data/models/<model>/model.pt)")
        return found, str(path)
    if text.startswith(("models:/", "runs:/")):
        return download_model(text), text
    if "/" not in text and "\\" not in text:
        local = repo_root() / "data" / "models" / text / "model.pt"
        if local.is_file():
            return local, str(local)
        names = [text] if text.startswith("maskpipe-") else [f"maskpipe-{text}", text]
        for name in names:
            if is_registered(name):
                uri = f"models:/{name}/latest"
                return download_model(uri), uri
    local_models = sorted(p.parent.name for p in (repo_root() / "data" / "models").glob("*/model.pt"))
    hint = f"local models: {', '.join(local_models)}" if local_models else "no trained models in data/models/"
    raise PredictError(
        f"model {text!r} not found as a path, in data/models/ or in the MLflow registry ({hint}); "
        "train one with `dvc repro train@<model>`"
    )


def model_file_in(path: Path) -> Path | None:
    if path.is_file():
        return path
    for candidate in (path / "model.pt", path / "artifacts" / "model.pt"):
        if candidate.is_file():
            return candidate
    found = sorted(path.rglob("model.pt"))
    return found[0] if found else None


def is_registered(name: str) -> bool:
    """A registered MLflow model of that name exists (never creates a store as a side effect)."""
    from maskpipe import tracking

    tracking_db = tracking.tracking_uri()
    if tracking_db.startswith("sqlite:///") and not Path(tracking_db[len("sqlite:///") :]).is_file():
        return False  # no store yet: do not create an empty mlflow.db as a side effect
    mlflow = tracking.configure()
    try:
        return bool(mlflow.MlflowClient().search_model_versions(f"name = '{name}'", max_results=1))
    except Exception:
        return False


def download_model(uri: str) -> Path:
    """A models:/ or runs:/ URI -> the model.pt in a temp folder (removed at exit)."""
    from maskpipe import tracking

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a few small files
    mlflow = tracking.configure()
    dst = Path(tempfile.mkdtemp(prefix="maskpipe-model-"))
    atexit.register(shutil.rmtree, dst, ignore_errors=True)  # the model is loaded by then
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except Exception as exc:
        raise PredictError(
            f"{uri}: cannot fetch from the MLflow store {tracking.tracking_uri()} ({exc})"
        ) from exc
    found = model_file_in(local)
    if found is None:
        raise PredictError(
            f"{uri}: the MLflow model has no model.pt (log it with maskpipe.pyfunc.log_pyfunc_model)"
        )
    return found
