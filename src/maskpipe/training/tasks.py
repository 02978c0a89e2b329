"""Task registry, beside the architecture registry (models.py): what a task means, in one place.

A task says what a model is trained against and how its output becomes a score and a label:

| task       | classes | head output     | training target | losses (first = default) | scores                    | label                     |
|------------|---------|-----------------|-----------------|--------------------------|---------------------------|---------------------------|
| multiclass | >= 2    | C logits        | class index     | cross_entropy, focal     | softmax (N, C)            | argmax                    |
| binary     | 2       | 1 logit (pos.)  | class index 0/1 | bce, focal               | [1 - p, p] (N, 2)         | argmax                    |
| oneclass   | 1       | reconstruction  | the input image | mse                      | reconstruction MSE (N, 1) | classes[0] if <= threshold else "anomaly" |

The one-class operating point is the model's ``threshold_percentile`` (models.<m>, saved in the
artifact): the threshold is that percentile of the per-image training errors the trainer stores
(``error_percentiles``), so evaluation, ``maskpipe predict``, serve and the pyfunc model agree.

A new task: subclass ``Task``, fill in its methods, ``register(...)`` it; ModelConfig then
accepts it as ``task:`` and the engine, evaluation and Predictor use it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from maskpipe.labels import ANOMALY
from maskpipe.training.losses import per_sample_reconstruction_error


class Task:
    name: str = ""
    losses: tuple[str, ...] = ()  # the first is the default
    arch_kind: str = "classifier"  # the Arch.kind that can do this task (models.py)
    has_accuracy: bool = True  # training can watch val_accuracy
    probabilities: bool = (
        True  # scores are class probabilities (N, len(classes)); else one anomaly score (N, 1)
    )

    @property
    def default_loss(self) -> str:
        return self.losses[0]

    def classes_problem(self, classes: Sequence[str]) -> str | None:
        """Why ``classes`` does not fit this task, or None."""
        return None

    def num_outputs(self, n_classes: int) -> int:
        raise NotImplementedError

    def target(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return y

    def correct(self, out: torch.Tensor, y: torch.Tensor) -> int:
        """Correctly classified samples of a batch (0 for tasks without accuracy)."""
        pred = self.predicted(out)
        return 0 if pred is None else int((pred == y.view(-1)).sum())

    def predicted(self, out: torch.Tensor) -> torch.Tensor | None:
        """Class index per sample from the raw model output (None: the task has no classes to pick)."""
        return None

    def scores(
        self,
        out: torch.Tensor,
        x: torch.Tensor,
        region: str = "full",
        scale: str = "none",
        grid: int | None = None,
    ) -> torch.Tensor:
        """Class probabilities (N, classes), or one anomaly score per image (N, 1); ``region``
        (models.<m>.score_region) is where a reconstruction error is measured, ``scale``
        (models.<m>.score_scale) what it is divided by, ``grid`` (models.<m>.score_grid) the
        cells it is measured on (None: pixels)."""
        raise NotImplementedError

    def threshold(self, meta: dict) -> float | None:
        """The operating point stored with a model (one-class), else None."""
        return None

    def predicted_indices(self, scores: np.ndarray, threshold: float | None = None) -> np.ndarray:
        """Index of the predicted class per row of ``scores`` (as returned by ``scores``)."""
        return np.asarray(scores).argmax(axis=1)

    def labels(self, scores: np.ndarray, classes: Sequence[str], threshold: float | None = None) -> list[str]:
        """Class names for rows of ``scores``."""
        return [classes[i] for i in self.predicted_indices(scores, threshold)]


class MulticlassTask(Task):
    name = "multiclass"
    losses = ("cross_entropy", "focal")

    def classes_problem(self, classes):
        return None if len(classes) >= 2 else "a multiclass model needs at least two classes"

    def num_outputs(self, n_classes):
        return n_classes

    def predicted(self, out):
        return out.argmax(dim=1)

    def scores(self, out, x, region="full", scale="none", grid=None):
        return torch.softmax(out.float(), dim=1)


class BinaryTask(Task):
    name = "binary"
    losses = ("bce", "focal")

    def classes_problem(self, classes):
        return None if len(classes) == 2 else "a binary model needs exactly two classes [negative, positive]"

    def num_outputs(self, n_classes):
        return 1

    def predicted(self, out):
        return (out.view(-1) > 0).long()

    def scores(self, out, x, region="full", scale="none", grid=None):
        p = torch.sigmoid(out.float().view(-1))
        return torch.stack([1.0 - p, p], dim=1)


class OneClassTask(Task):
    name = "oneclass"
    losses = ("mse",)
    arch_kind = "autoencoder"
    has_accuracy = False
    probabilities = False

    def classes_problem(self, classes):
        return None if len(classes) == 1 else "a oneclass model is trained on exactly one class"

    def num_outputs(self, n_classes):
        return 0  # the output is an image

    def target(self, x, y):
        return x

    def scores(self, out, x, region="full", scale="none", grid=None):
        return per_sample_reconstruction_error(out, x, region, scale, grid).view(-1, 1)

    def threshold(self, meta: dict) -> float:
        """``error_percentiles[threshold_percentile]`` of the artifact; ValueError when absent."""
        q = int(meta["params"]["threshold_percentile"])
        pct = meta.get("error_percentiles") or []
        if len(pct) <= q:
            raise ValueError(
                f"{meta.get('model_name')}: one-class model without stored training error "
                "percentiles; cannot set an anomaly threshold (retrain it)"
            )
        return float(pct[q])

    def predicted_indices(self, scores, threshold=None):
        """0 = the trained class (score at most the threshold), 1 = anomaly (above it)."""
        if threshold is None:
            raise ValueError("a one-class model needs a threshold to label (Task.threshold(meta))")
        return (np.asarray(scores)[:, 0] > threshold).astype(int)

    def labels(self, scores, classes, threshold=None):
        return [ANOMALY if i else classes[0] for i in self.predicted_indices(scores, threshold)]


TASKS: dict[str, Task] = {}


def register(task: Task) -> Task:
    TASKS[task.name] = task
    return task


for _task in (MulticlassTask(), BinaryTask(), OneClassTask()):
    register(_task)


def get_task(name: Any) -> Task:
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r} (known: {', '.join(TASKS)})")
    return TASKS[name]
