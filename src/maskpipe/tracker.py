"""The tracker interface training and evaluation log through: MLflow in stages, nothing (or a
recorder) in tests.

    tracker = MlflowTracker()                  # maskpipe.tracking's store, experiment and run file
    with tracker.run("mask_cnn", config.to_plain()) as run_id:
        tracker.log_metrics({"train/loss": 0.3}, step=1)
        tracker.log_model(Path("data/models/mask_cnn/model.pt"), "mask_cnn")

    with tracker.resume(Path("data/models/mask_cnn")):   # evaluation: the same run, reopened
        tracker.log_metrics({"test/accuracy": 0.9})
        tracker.log_artifacts(Path("metrics/eval/mask_cnn"), "evaluation")

The training code (maskpipe.training.run) imports neither mlflow nor the serving stack.
``MlflowTracker.log_model`` logs the PyTorch model only; training uses
maskpipe.serving_tracker.ServingMlflowTracker, which adds the servable pyfunc model. That keeps
the serving stack (pyfunc -> predict -> crop / detect) out of this module's imports, so the
evaluate stage, which logs through MlflowTracker, does not depend on (and rerun for) serving code.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol


class Tracker(Protocol):
    def run(
        self,
        model_name: str,
        params: Mapping[str, Any] | None,
        *,
        run_id: str | None = None,
        extra_tags: Mapping[str, str] | None = None,
    ) -> contextlib.AbstractContextManager[str | None]:
        """A run for one training (``run_id`` continues an earlier one); yields its id (None: untracked)."""
        ...

    def resume(self, model_dir: Path) -> contextlib.AbstractContextManager[str | None]:
        """The training run of ``model_dir`` (its mlflow_run.json) reopened, e.g. for evaluation;
        yields its id (None: untracked)."""
        ...

    def set_tags(self, tags: Mapping[str, str]) -> None: ...

    def log_params(self, params: Mapping[str, Any]) -> None: ...

    def log_metrics(self, metrics: Mapping[str, float], step: int | None = None) -> None: ...

    def log_epoch(self, row: Mapping[str, Any], step: int) -> None:
        """One history row (train_loss, val_loss, val_accuracy, lr, seconds)."""
        ...

    def log_artifact(self, path: Path, artifact_path: str) -> None: ...

    def log_artifacts(self, folder: Path, artifact_path: str) -> None:
        """Every file under ``folder``, kept in its subfolders, under ``artifact_path``."""
        ...

    def log_dict(self, data: Mapping[str, Any], artifact_file: str) -> None: ...

    def log_model(self, model_path: Path, model_name: str) -> None:
        """The trained artifact: the torch model and the servable (pyfunc) model, registered."""
        ...

    def write_run_file(self, model_dir: Path) -> None:
        """data/models/<m>/mlflow_run.json: where evaluation logs into the same run."""
        ...


class NullTracker:
    """Tracks nothing; keeps what it was given in ``calls`` so tests can look."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    @contextlib.contextmanager
    def run(self, model_name, params, *, run_id=None, extra_tags=None) -> Iterator[str | None]:
        self.calls.append(("run", model_name))
        yield None

    @contextlib.contextmanager
    def resume(self, model_dir) -> Iterator[str | None]:
        self.calls.append(("resume", str(model_dir)))
        yield None

    def set_tags(self, tags) -> None:
        self.calls.append(("set_tags", dict(tags)))

    def log_params(self, params) -> None:
        self.calls.append(("log_params", dict(params)))

    def log_metrics(self, metrics, step=None) -> None:
        self.calls.append(("log_metrics", dict(metrics)))

    def log_epoch(self, row, step) -> None:
        self.calls.append(("log_epoch", dict(row)))

    def log_artifact(self, path, artifact_path) -> None:
        self.calls.append(("log_artifact", str(path)))

    def log_artifacts(self, folder, artifact_path) -> None:
        self.calls.append(("log_artifacts", str(folder)))

    def log_dict(self, data, artifact_file) -> None:
        self.calls.append(("log_dict", artifact_file))

    def log_model(self, model_path, model_name) -> None:
        self.calls.append(("log_model", str(model_path)))

    def write_run_file(self, model_dir) -> None:
        self.calls.append(("write_run_file", str(model_dir)))


class MlflowTracker:
    """MLflow through maskpipe.tracking (store, experiment, run names and tags; see there)."""

    def __init__(self) -> None:
        self._run: Any = None

    @contextlib.contextmanager
    def run(self, model_name, params, *, run_id=None, extra_tags=None) -> Iterator[str | None]:
        from maskpipe import tracking

        with tracking.start_run(
            model_name, dict(params or {}), run_id=run_id, extra_tags=dict(extra_tags or {})
        ) as run:
            self._run = run
            try:
                yield run.info.run_id
            finally:
                self._run = None

    @contextlib.contextmanager
    def resume(self, model_dir) -> Iterator[str | None]:
        from maskpipe import tracking

        with tracking.resume_run(model_dir) as run:
            self._run = run
            try:
                yield run.info.run_id
            finally:
                self._run = None

    @staticmethod
    def _write(method: str, *args, **kwargs) -> None:
        """One ``mlflow.<method>`` call, with Ctrl-C / SIGTERM held until it has finished
        (tracking.deferred_signals: a stop inside a write leaves the SQLite store locked)."""
        from maskpipe import tracking

        with tracking.deferred_signals():
            getattr(tracking._mlflow(), method)(*args, **kwargs)

    def set_tags(self, tags) -> None:
        self._write("set_tags", dict(tags))

    def log_params(self, params) -> None:
        self._write("log_params", dict(params))

    def log_metrics(self, metrics, step=None) -> None:
        self._write("log_metrics", dict(metrics), step=step)

    def log_epoch(self, row, step) -> None:
        from maskpipe import tracking

        with tracking.deferred_signals():  # SIGTERM between epochs' writes, never inside one
            tracking.log_history_metrics(dict(row), step=step)

    def log_artifact(self, path, artifact_path) -> None:
        self._write("log_artifact", str(path), artifact_path=artifact_path)

    def log_artifacts(self, folder, artifact_path) -> None:
        self._write("log_artifacts", str(folder), artifact_path=artifact_path)

    def log_dict(self, data, artifact_file) -> None:
        self._write("log_dict", dict(data), artifact_file)

    def log_model(self, model_path, model_name) -> None:
        from maskpipe import tracking
        from maskpipe.training.artifact import load_model

        model, meta = load_model(model_path)
        tracking.log_model(model, meta)

    def write_run_file(self, model_dir) -> None:
        from maskpipe import tracking

        if self._run is None:
            raise RuntimeError("write_run_file outside a run")
        tracking.write_run_file(model_dir, self._run)
