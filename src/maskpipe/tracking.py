"""MLflow tracking that works in `dvc repro`, `dvc exp run`, `--temp` and `--queue` alike.

- Store: ``MLFLOW_TRACKING_URI`` when set (a relative ``sqlite:///x.db`` is resolved against the
  repo root, i.e. DVC_ROOT), else ``sqlite:///<repo root>/mlflow.db``. Temp and queue runs execute
  in ``.dvc/tmp/exps/...`` but DVC_ROOT points at the main repo, so their runs land in the main store.
- Artifacts: ``<folder of the sqlite file>/mlartifacts`` (``<repo root>/mlartifacts`` by default),
  fixed as an absolute file URI when the experiment is created (MLflow would otherwise resolve
  it against the cwd of that moment, a temp folder DVC deletes afterwards). With a tracking
  server (``MLFLOW_TRACKING_URI=http://...``, see maskpipe.mlflow_server) the server's own
  artifact root is used, so artifacts travel through the server.
- Experiment ``maskpipe`` (``MLFLOW_EXPERIMENT_NAME`` overrides). One run per training, named
  ``<dvc exp name or git short sha>/<model>``; the run id is kept in
  ``data/models/<model>/mlflow_run.json`` so evaluation logs into the same run (``resume_run``).

``import mlflow`` takes about two seconds, so it happens inside the functions that need it.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlparse

from maskpipe.io import write_json
from maskpipe.params import flatten
from maskpipe.paths import repo_root

_STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}


@contextlib.contextmanager
def deferred_signals() -> Iterator[None]:
    """Ctrl-C / SIGTERM wait until the block ends (then arrive as usual).

    A stage stops by turning the signal into KeyboardInterrupt wherever Python happens to be. Inside
    an MLflow write that leaves SQLite mid-transaction, and marking the run KILLED then failed with
    "database is locked" (the stage exited 1 instead of 130). For the few milliseconds of a write
    the stop signals only get recorded; the handler that was installed runs when the block ends.

    Blocking them with pthread_sigmask was not enough: the kernel hands a process signal to any
    thread that does not block it (torch and MLflow start threads), and CPython then runs the
    Python handler in the main thread, inside the write (seen once in CI). Python handlers always
    run in the main thread, so swapping the handler covers every delivery path.
    """
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    saved: dict[int, Any] = {}
    try:
        for signum in _STOP_SIGNALS:
            saved[signum] = signal.getsignal(signum)
            signal.signal(signum, lambda got, _frame: pending.append(got))
        yield
    finally:
        for signum, handler in saved.items():
            signal.signal(signum, handler)
        if pending:
            _deliver(pending[0], saved[pending[0]])


def _deliver(signum: int, handler: Any) -> None:
    """Run what a deferred signal would have run: the Python handler, or the default action."""
    if callable(handler):
        handler(signum, None)
    elif handler == signal.SIG_DFL:
        signal.raise_signal(signum)


EXPERIMENT = "maskpipe"
RUN_FILE = "mlflow_run.json"

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def _mlflow():
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    import mlflow

    return mlflow


def tracking_uri() -> str:
    """The tracking URI every maskpipe process uses (see module docstring)."""
    env = os.environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not env:
        return f"sqlite:///{repo_root() / 'mlflow.db'}"
    if env.startswith("sqlite:///"):
        path = env[len("sqlite:///") :]
        if path and path != ":memory:" and not path.startswith("/"):
            return f"sqlite:///{(repo_root() / path).resolve()}"
        return env
    if env.startswith("file:") or "://" not in env:
        # plain path or file: URI (MLflow's file store is in maintenance mode; kept for completeness)
        p = Path(unquote(urlparse(env).path)) if env.startswith("file:") else Path(env)
        return (p if p.is_absolute() else (repo_root() / p).resolve()).as_uri()
    return env


def is_server_uri(uri: str) -> bool:
    """A tracking server (http/https, e.g. `make mlflow-server`): it decides where artifacts go."""
    return uri.split("://", 1)[0].lower() in ("http", "https", "databricks")


def artifact_location() -> str | None:
    """Absolute artifact root URI for the experiment (next to the sqlite store by default).

    None for a tracking server: its own default (``mlflow-artifacts:/`` with --serve-artifacts)
    sends artifacts through the server; a local file URI here would make every client write to
    its own disk. ``MASKPIPE_MLFLOW_ARTIFACTS`` overrides both (a folder, or s3://... as is).
    """
    override = os.environ.get("MASKPIPE_MLFLOW_ARTIFACTS")
    if override:
        if "://" in override:
            return override
        p = Path(override)
        return (p if p.is_absolute() else repo_root() / p).resolve().as_uri()
    uri = tracking_uri()
    if is_server_uri(uri):
        return None
    if uri.startswith("sqlite:///") and uri != "sqlite:///:memory:":
        return (Path(uri[len("sqlite:///") :]).parent / "mlartifacts").as_uri()
    return (repo_root() / "mlartifacts").as_uri()


def experiment_name() -> str:
    return os.environ.get("MLFLOW_EXPERIMENT_NAME") or EXPERIMENT


def configure() -> Any:
    """Point mlflow at our store and return the module."""
    mlflow = _mlflow()
    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def get_or_create_experiment(name: str | None = None) -> str:
    """Experiment id of ``name`` (default ``maskpipe``), created with an absolute artifact root."""
    mlflow = configure()
    name = name or experiment_name()
    exp = mlflow.get_experiment_by_name(name)
    if exp is not None:
        return exp.experiment_id
    try:
        return mlflow.create_experiment(name, artifact_location=artifact_location())
    except Exception:
        # another process (dvc queue start -j 2) created it between our two calls
        exp = mlflow.get_experiment_by_name(name)
        if exp is None:
            raise
        return exp.experiment_id


# ------------------------------------------------------------------------------ git / dvc context
def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def run_context() -> dict[str, str]:
    """git sha / short sha / dirty flag, DVC exp name and stage of the current process."""
    sha = _git("rev-parse", "HEAD") or ""
    status = _git("status", "--porcelain", "--untracked-files=no")
    ctx = {
        "git_sha": sha,
        "git_short_sha": sha[:7],
        "git_dirty": "unknown" if status is None else str(bool(status)).lower(),
        "dvc_exp_name": os.environ.get("DVC_EXP_NAME", ""),
        "dvc_stage": os.environ.get("DVC_STAGE", ""),
        "dvc_exp_baseline_rev": os.environ.get("DVC_EXP_BASELINE_REV", ""),
    }
    return ctx


def run_name(model_name: str, ctx: dict[str, str] | None = None) -> str:
    ctx = ctx or run_context()
    prefix = ctx.get("dvc_exp_name") or ctx.get("git_short_sha") or "nogit"
    return f"{prefix}/{model_name}"


def _param_value(v: Any) -> str:
    s = "null" if v is None else str(v)
    return s if len(s) <= 6000 else s[:5997] + "..."


@contextlib.contextmanager
def start_run(
    model_name: str,
    params: dict | None = None,
    *,
    run_id: str | None = None,
    extra_tags: dict[str, str] | None = None,
) -> Iterator[Any]:
    """A run for training ``model_name``: tagged, params flattened and logged.

    ``run_id`` continues an existing run (a training resumed after an interruption); if the
    store no longer has it, a new run is started. The run ends FINISHED on success and FAILED
    on an exception (KILLED on Ctrl-C).
    """
    mlflow = configure()
    exp_id = get_or_create_experiment()
    ctx = run_context()
    if run_id is not None:
        try:
            mlflow.get_run(run_id)
        except Exception:
            warnings.warn(
                f"MLflow run {run_id} not found in {tracking_uri()}; starting a new run", stacklevel=2
            )
            run_id = None
    tags = {
        "maskpipe.model": model_name,
        "git.sha": ctx["git_sha"],
        "git.dirty": ctx["git_dirty"],
        "dvc.exp_name": ctx["dvc_exp_name"],
        "dvc.stage": ctx["dvc_stage"],
        "dvc.exp_baseline_rev": ctx["dvc_exp_baseline_rev"],
        **(extra_tags or {}),
    }
    with deferred_signals():
        if run_id is None:
            run = mlflow.start_run(experiment_id=exp_id, run_name=run_name(model_name, ctx), tags=tags)
        else:
            run = mlflow.start_run(run_id=run_id)
            mlflow.set_tags(tags)
    try:
        if params and run_id is None:
            with deferred_signals():
                mlflow.log_params({k: _param_value(v) for k, v in flatten(params).items()})
        yield run
    except KeyboardInterrupt:
        _end_run("KILLED")
        raise
    except BaseException:
        _end_run("FAILED")
        raise
    else:
        with deferred_signals():
            mlflow.end_run(status="FINISHED")


def _end_run(status: str) -> None:
    """Mark the active run ended while an exception is on its way out: a store error here must not
    replace that exception (the stage's exit code and message come from it)."""
    mlflow = _mlflow()
    try:
        with deferred_signals():
            mlflow.end_run(status=status)
    except Exception as exc:  # noqa: BLE001  (any store error: the original exception matters more)
        warnings.warn(
            f"could not mark the MLflow run {status}: {exc.__class__.__name__}: {exc}", stacklevel=2
        )


def run_info(run: Any) -> dict[str, str]:
    return {
        "run_id": run.info.run_id,
        "experiment_id": run.info.experiment_id,
        "tracking_uri": tracking_uri(),
        "run_name": run.info.run_name,
    }


def write_run_file(model_dir: str | os.PathLike, run: Any) -> Path:
    target = Path(model_dir) / RUN_FILE
    write_json(target, run_info(run))
    return target


def read_run_file(model_dir: str | os.PathLike) -> dict[str, str]:
    path = Path(model_dir) / RUN_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no MLflow run file (train the model first)")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not valid JSON ({exc})") from exc
    if not data.get("run_id"):
        raise ValueError(f"{path}: no run_id")
    return data


@contextlib.contextmanager
def resume_run(model_dir: str | os.PathLike) -> Iterator[Any]:
    """Reopen the training run of ``model_dir`` (its mlflow_run.json) to log more into it.

    Uses this process's tracking_uri() (the same store unless MLFLOW_TRACKING_URI says
    otherwise). If the run is gone from the store, a new run named like it is started so
    nothing is lost, and a warning says so.
    """
    info = read_run_file(model_dir)
    mlflow = configure()
    try:
        mlflow.get_run(info["run_id"])
        run = mlflow.start_run(run_id=info["run_id"])
    except Exception:
        warnings.warn(
            f"MLflow run {info['run_id']} (from {model_dir}) not in {tracking_uri()}; logging into a new run",
            stacklevel=2,
        )
        run = mlflow.start_run(
            experiment_id=get_or_create_experiment(), run_name=info.get("run_name") or Path(model_dir).name
        )
    try:
        yield run
    except BaseException:
        mlflow.end_run(status="FAILED")
        raise
    else:
        mlflow.end_run(status="FINISHED")


@contextlib.contextmanager
def model_run(model_dir: str | os.PathLike, run_name: str) -> Iterator[Any]:
    """The training run of ``model_dir`` reopened (resume_run), or, for a model trained without
    tracking (no mlflow_run.json), a new run named ``run_name`` in the project's experiment."""
    if (Path(model_dir) / RUN_FILE).is_file():
        with resume_run(model_dir) as run:
            yield run
        return
    mlflow = configure()
    with mlflow.start_run(experiment_id=get_or_create_experiment(), run_name=run_name) as run:
        yield run


def log_history_metrics(row: dict[str, Any], step: int) -> None:
    """One epoch's metrics: train_loss -> train/loss, val_accuracy -> val/accuracy, lr -> lr,
    seconds -> time/epoch_seconds."""
    mlflow = _mlflow()
    metrics = {}
    for key, value in row.items():
        if key == "epoch" or value is None or value != value:  # skip NaN placeholders
            continue
        if key == "seconds":
            name = "time/epoch_seconds"
        else:
            name = key.replace("_", "/", 1) if key.startswith(("train_", "val_")) else key
        metrics[name] = float(value)
    mlflow.log_metrics(metrics, step=step)


def pip_requirements() -> list[str]:
    """Pinned requirements recorded with a logged model (saves MLflow's slow inference)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in ("torch", "torchvision", "numpy", "pillow", "mlflow"):
        with contextlib.suppress(PackageNotFoundError):
            reqs.append(f"{dist}=={version(dist)}")
    return reqs


def log_model(model: Any, meta: dict, *, register: bool = True, name: str = "model") -> Any:
    """Log the trained torch model with mlflow.pytorch, registered as ``maskpipe-<model>-torch``.

    ``maskpipe-<model>`` itself is the servable pyfunc model (image in, faces out) that
    maskpipe.pyfunc.log_pyfunc_model logs next to this one: `mlflow models serve -m
    models:/maskpipe-<model>/latest` must take images, not normalised tensors. Returns the
    ModelInfo. ``meta`` is the artifact meta (load_model's second value); its scalars are
    stored as model metadata.
    """
    mlflow = _mlflow()
    importlib.import_module("mlflow.pytorch")  # the submodule, so that mlflow.pytorch is set
    import torch

    model_name = meta["model_name"]
    size = int(meta["image_size"])
    metadata = {
        k: meta[k]
        for k in ("model_name", "arch", "task", "classes", "image_size", "mean", "std")
        if k in meta
    }
    model = model.cpu().eval()
    # batch of 2: torch.export keeps the batch dimension dynamic only when it is > 1
    example = torch.zeros(2, 3, size, size).numpy()
    from mlflow.models import infer_signature

    with torch.no_grad():
        signature = infer_signature(example, model(torch.from_numpy(example)).numpy())
    kwargs = dict(
        name=name,
        registered_model_name=f"maskpipe-{model_name}-torch" if register else None,
        signature=signature,
        input_example=example,
        pip_requirements=pip_requirements(),
        metadata=metadata,
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            # pt2 (torch.export): a self-contained graph, loadable without maskpipe or pickle
            return mlflow.pytorch.log_model(model, serialization_format="pt2", **kwargs)
        except Exception as exc:  # a model torch.export cannot trace: fall back to pickle
            warnings.warn(
                f"torch.export failed for {model_name} ({exc.__class__.__name__}); logging it pickled",
                stacklevel=2,
            )
            return mlflow.pytorch.log_model(model, serialization_format="pickle", **kwargs)
