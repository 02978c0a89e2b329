"""Which model `maskpipe predict` / `maskpipe serve` use when no --model is given.

The one that the report (metrics/report.json, written by the report stage) ranks first by
``report.primary_metric`` among the models that know all three labels (with_mask,
without_mask, mask_weared_incorrect): a binary or one-class model cannot say that a mask is
worn below the nose, so it is never the default, however well it scores on its own test set.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maskpipe.labels import LABELS

REPORT_FILE = Path("metrics") / "report.json"


class NoDefaultModel(ValueError):
    """No model can be chosen; the message says why and what to do."""


@dataclass(frozen=True)
class DefaultChoice:
    model: str
    metric: str
    value: float

    def describe(self) -> str:
        return (
            f"{self.model} (first of the 3-class models by {self.metric} = {self.value:.4g} in {REPORT_FILE})"
        )


def choose_default_model(report: dict[str, Any]) -> DefaultChoice:
    """The best 3-class model of a report.json dict, by its primary metric (pure function)."""
    metric = str(report.get("primary_metric") or "")
    lower_is_better = bool(report.get("lower_is_better"))
    candidates = []
    for entry in report.get("leaderboard") or []:
        classes = entry.get("classes") or []
        value = entry.get("primary")
        if set(classes) != set(LABELS) or entry.get("task") not in (None, "multiclass"):
            continue
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            continue
        candidates.append((value if lower_is_better else -value, str(entry["model"]), float(value)))
    if not candidates:
        raise NoDefaultModel(
            f"{REPORT_FILE} ranks no 3-class model ({', '.join(LABELS)}) with a {metric or 'primary metric'} "
            "value; run the pipeline (`dvc repro report`) or pass --model"
        )
    _, model, value = min(candidates)  # ties: the alphabetically first name
    return DefaultChoice(model, metric, value)


def default_model(root: Path) -> DefaultChoice:
    """choose_default_model() on ``root``/metrics/report.json; a clear error when it is missing."""
    path = Path(root) / REPORT_FILE
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise NoDefaultModel(
            f"no --model given and {path} does not exist; run `dvc repro report` or pass --model"
        ) from None
    except (OSError, ValueError) as exc:
        raise NoDefaultModel(f"{path}: cannot read the report ({exc}); pass --model") from None
    if not isinstance(report, dict):
        raise NoDefaultModel(f"{path}: not a report object; pass --model")
    return choose_default_model(report)
