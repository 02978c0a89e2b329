"""Cross-model report: metrics/report.md and metrics/report.json from each model's evaluation.

Inputs per model: metrics/models/<model>.json (the numbers) and metrics/eval/<model>/summary.json
(task, classes, set sizes, notes and the resolved params the model was trained with), and, when
the evaluate_wild stage scored the model on whole photos, metrics/wild/<model>.json.

- Leaderboard: models ranked by ``report.primary_metric`` (default ``test/macro_f1``), higher is
  better unless the metric is listed in ``report.lower_is_better``; undefined (null) values rank last.
- Test sets: images scored per set and per label.
- Intervals: a metric with ``<metric>_lo`` / ``<metric>_hi`` (95 % bootstrap by source image,
  see bootstrap.py) is shown as ``0.8700 [0.8100, 0.9200]``.
- Per-class results: support, precision, recall, F1 (with intervals) per model, set and class.
- Params that differ: every flattened resolved param whose value is not the same for all
  models (``name`` left out) - what actually distinguishes the rows of the leaderboard.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maskpipe.evaluation.oneclass_scores import BASELINES
from maskpipe.params import flatten
from maskpipe.settings import Section, option

DEFAULT_COLUMNS = ["test/n", "test/accuracy", "test/macro_f1", "test/roc_auc"]


@dataclass(frozen=True)
class ReportConfig(Section):
    """params.yaml `report:`."""

    models: list[str] | None = option(None, doc="the models compared; null = every model under `models:`")
    primary_metric: str = option("test/macro_f1", doc="leaderboard order")
    lower_is_better: list[str] = option([], doc="metric names for which smaller wins")
    columns: list[str] = option(list(DEFAULT_COLUMNS), doc="metric columns of the leaderboard")


IGNORED_PARAMS = {"name"}


class ReportError(ValueError):
    """A missing or malformed input; the message names the file."""


@dataclass
class ModelResult:
    name: str
    metrics: dict[str, Any]
    summary: dict[str, Any]


def _read_json(path: Path, what: str) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise ReportError(f"{path}: {what} not found (run dvc repro evaluate@<model> first)") from exc
    except json.JSONDecodeError as exc:
        raise ReportError(f"{path}: {what} is not valid JSON ({exc})") from exc
    if not isinstance(data, dict):
        raise ReportError(f"{path}: {what} must be a JSON object")
    return data


def report_models(chosen: Sequence[str] | None, all_models: Sequence[str]) -> list[str]:
    """The models the report compares: ``report.models`` (null = every key of ``models:``)."""
    if chosen is None:
        return list(all_models)
    unknown = [m for m in chosen if m not in all_models]
    if unknown:
        raise ReportError(
            f"params.yaml: report.models: {', '.join(unknown)} not under `models:` "
            f"(known: {', '.join(all_models)})"
        )
    return list(chosen)


def load_results(
    models: Sequence[str], metrics_dir: Path, eval_dir: Path, wild_dir: Path | None = None
) -> list[ModelResult]:
    """Each model's metrics, plus its whole-photo metrics (``wild_dir/<model>.json``, prefixed
    ``wild/``) for the models evaluate_wild scores."""
    if not models:
        raise ReportError("no models given")
    results = []
    for m in models:
        metrics = _read_json(Path(metrics_dir) / f"{m}.json", "metrics")
        wild = Path(wild_dir) / f"{m}.json" if wild_dir is not None else None
        if wild is not None and wild.is_file():
            metrics.update({f"wild/{k}": v for k, v in _read_json(wild, "whole-photo metrics").items()})
        results.append(
            ModelResult(m, metrics, _read_json(Path(eval_dir) / m / "summary.json", "evaluation summary"))
        )
    return results


def _fmt(v: Any) -> str:
    if v is None:
        return "–"
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, float):
        return f"{v:.4f}"
    if isinstance(v, (list, tuple)):
        return ", ".join(_fmt(x) for x in v) if v else "[]"
    return str(v).replace("|", "\\|")


def _fmt_param(v: Any) -> str:
    """Params as written (1e-05 stays 1e-05, not 0.0000)."""
    if isinstance(v, float):
        return repr(v)
    return _fmt(v)


@dataclass(frozen=True)
class WithInterval:
    """A metric value and its bootstrap interval, printed ``value [lo, hi]``."""

    value: Any
    lo: Any
    hi: Any

    def __str__(self) -> str:
        if not isinstance(self.lo, (int, float)) or not isinstance(self.hi, (int, float)):
            return _fmt(self.value)
        return f"{_fmt(self.value)} [{_fmt(self.lo)}, {_fmt(self.hi)}]"


def metric_cell(metrics: dict[str, Any], key: str) -> Any:
    """The value of ``key``, with its interval when the metrics hold one."""
    value = metrics.get(key)
    if value is None or f"{key}_lo" not in metrics:
        return value
    return WithInterval(value, metrics.get(f"{key}_lo"), metrics.get(f"{key}_hi"))


def per_class_rows(r: ModelResult) -> list[list[Any]]:
    """[model, set, class, support, precision, recall, F1] for every scored set and class."""
    rows = []
    sets = r.summary.get("sets") or {}
    for set_name in sorted(sets, key=lambda n: (n != "test", n)):
        classes = sets[set_name].get("classes") or r.summary.get("classes") or []
        for prefix in (set_name, *(f"{set_name}/{kind}" for kind in BASELINES)):
            for c in classes:
                support = r.metrics.get(f"{prefix}/support/{c}")
                if support is None:
                    continue
                rows.append(
                    [
                        f"`{r.name}`",
                        prefix,
                        c,
                        support,
                        *[metric_cell(r.metrics, f"{prefix}/{m}/{c}") for m in ("precision", "recall", "f1")],
                    ]
                )
    return rows


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]], fmt=_fmt) -> str:
    out = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    out += [
        "| "
        + " | ".join(
            c.replace("|", "\\|") if isinstance(c, str) else str(c) if isinstance(c, WithInterval) else fmt(c)
            for c in r
        )
        + " |"
        for r in rows
    ]
    return "\n".join(out)


def rank(results: Sequence[ModelResult], metric: str, lower_is_better: bool = False) -> list[ModelResult]:
    """Sorted best first; a missing or null metric ranks last; ties keep the given order."""

    def key(r: ModelResult):
        v = r.metrics.get(metric)
        if not isinstance(v, (int, float)):
            return (1, 0.0)
        return (0, v if lower_is_better else -v)

    return sorted(results, key=key)


def differing_params(results: Sequence[ModelResult]) -> dict[str, dict[str, Any]]:
    """{param: {model: value}} for params whose value differs between models (missing = None)."""
    flat = {r.name: flatten(r.summary.get("params") or {}) for r in results}
    keys = sorted({k for f in flat.values() for k in f} - IGNORED_PARAMS)
    out = {}
    for k in keys:
        values = {name: f.get(k) for name, f in flat.items()}
        if len({json.dumps(v, sort_keys=True, default=str) for v in values.values()}) > 1:
            out[k] = values
    return out


def common_settings(results: Sequence[ModelResult]) -> list[str]:
    """One line naming the profile and seed when every model shares them."""
    shared = []
    for key in ("profile", "seed"):
        values = {json.dumps((r.summary.get("params") or {}).get(key), default=str) for r in results}
        if len(values) == 1:
            value = (results[0].summary.get("params") or {}).get(key)
            if value is not None:
                shared.append(f"{key} `{value}`")
    return [f"All models: {', '.join(shared)}."] if shared else []


def extra_metric_columns(results: Sequence[ModelResult]) -> list[str]:
    """Headline metrics of extra sets (real/..., kaggle/...) and of the Mahalanobis baseline."""
    cols = []
    for r in results:
        for set_name in r.summary.get("sets") or {}:
            if set_name != "test":
                for k in (f"{set_name}/n", f"{set_name}/macro_f1", f"{set_name}/roc_auc"):
                    if k in r.metrics and k not in cols:
                        cols.append(k)
        for k in (f"test/{kind}/roc_auc" for kind in BASELINES):
            if k in r.metrics and k not in cols:
                cols.append(k)
    for r in results:  # whole photos (evaluate_wild): detection + classification, mAP@0.5
        for k in ("wild/map50", "wild/detection/recall", "wild/accuracy_matched"):
            if k in r.metrics and k not in cols:
                cols.append(k)
    return cols


def build_report(
    results: Sequence[ModelResult],
    primary_metric: str,
    lower_is_better: bool = False,
    columns: Sequence[str] | None = None,
) -> tuple[str, dict]:
    """(markdown, json-able dict)."""
    if not any(primary_metric in r.metrics for r in results):
        known = sorted({k for r in results for k in r.metrics})
        raise ReportError(
            f"report.primary_metric '{primary_metric}' is in no model's metrics (e.g. {', '.join(known[:8])})"
        )
    columns = list(columns or DEFAULT_COLUMNS)
    cols = [primary_metric] + [c for c in columns + extra_metric_columns(results) if c != primary_metric]
    ranked = rank(results, primary_metric, lower_is_better)
    diff = differing_params(results)

    rows = []
    for i, r in enumerate(ranked, start=1):
        rows.append(
            [
                str(i),
                f"`{r.name}`",
                r.summary.get("arch", "?"),
                r.summary.get("task", "?"),
                *[metric_cell(r.metrics, c) for c in cols],
            ]
        )
    md = [
        "# maskpipe model report",
        "",
        f"Ranked by `{primary_metric}` ({'lower' if lower_is_better else 'higher'} is better; "
        "– = undefined, see notes). Metric names are those of `dvc metrics show` and MLflow.",
        "Each model is scored on the test split of its own datasets and classes (see Test sets), "
        "so compare rows with that in mind; the one-class model's F1 is at its percentile threshold.",
        "`value [lo, hi]`: 95 % bootstrap interval, resampling source photos (all faces of a photo "
        "together); small test sets give wide intervals.",
        *common_settings(results),
        "",
        "## Leaderboard",
        "",
        _table(["#", "model", "arch", "task", *[f"`{c}`" for c in cols]], rows),
        "",
        "## Test sets",
        "",
    ]
    set_rows = []
    for r in ranked:
        sets = r.summary.get("sets") or {}
        for set_name, info in sorted(sets.items(), key=lambda kv: (kv[0] != "test", kv[0])):
            labels = ", ".join(f"{k} {v}" for k, v in (info.get("labels") or {}).items())
            set_rows.append(
                [f"`{r.name}`", set_name, ", ".join(info.get("datasets") or []), info.get("n_scored"), labels]
            )
    md += [_table(["model", "set", "datasets", "images scored", "images by label"], set_rows), ""]
    class_rows = [row for r in ranked for row in per_class_rows(r)]
    if class_rows:
        md += [
            "## Per-class results",
            "",
            "Support = test images of that class; a class with a handful of images has an interval to match.",
            "",
            _table(["model", "set", "class", "support", "precision", "recall", "F1"], class_rows),
            "",
        ]
    wild = [r for r in ranked if "wild/map50" in r.metrics]
    if wild:
        md += [
            "## Whole photos (detector + classifier, test-split photos, IoU 0.5)",
            "",
            "`maskpipe predict` on whole photos, scored against every annotated box: COCO AP per class "
            "(a box must be found *and* labelled right), detection recall / precision whatever the label, "
            "and the share of found faces labelled right.",
            "",
        ]
        keys = [
            "photos",
            "faces",
            "map50",
            "ap50/with_mask",
            "ap50/without_mask",
            "ap50/mask_weared_incorrect",
            "detection/recall",
            "detection/precision",
            "detection/recall_0-16px",
            "accuracy_matched",
        ]
        md += [
            _table(
                ["model", *[f"`{k}`" for k in keys]],
                [[f"`{r.name}`", *[r.metrics.get(f"wild/{k}") for k in keys]] for r in wild],
            ),
            "",
        ]
    md += ["## Params that differ between models", ""]
    if diff:
        names = [r.name for r in ranked]
        md.append(
            _table(
                ["param", *[f"`{n}`" for n in names]],
                [[f"`{k}`", *[v[n] for n in names]] for k, v in diff.items()],
                fmt=_fmt_param,
            )
        )
    else:
        md.append("All models share the same params.")
    notes = [(r.name, n) for r in ranked for n in (r.summary.get("notes") or [])]
    if notes:
        md += ["", "## Notes", ""] + [f"- `{name}`: {n}" for name, n in notes]
    md.append("")

    data = {
        "primary_metric": primary_metric,
        "lower_is_better": lower_is_better,
        "columns": cols,
        "leaderboard": [
            {
                "rank": i,
                "model": r.name,
                "arch": r.summary.get("arch"),
                "task": r.summary.get("task"),
                "classes": r.summary.get("classes"),
                "primary": r.metrics.get(primary_metric),
                "metrics": {c: r.metrics.get(c) for c in cols},
                "intervals": {
                    c: [r.metrics.get(f"{c}_lo"), r.metrics.get(f"{c}_hi")]
                    for c in cols
                    if f"{c}_lo" in r.metrics
                },
                "test_sizes": {s: info.get("n_scored") for s, info in (r.summary.get("sets") or {}).items()},
                "notes": r.summary.get("notes") or [],
            }
            for i, r in enumerate(ranked, start=1)
        ],
        "differing_params": diff,
    }
    return "\n".join(md), data
