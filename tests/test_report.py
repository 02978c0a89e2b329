"""The cross-model report renders from metrics + evaluation summaries."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from maskpipe.evaluation.report import (
    ModelResult,
    ReportError,
    build_report,
    differing_params,
    load_results,
    rank,
)

MODELS = {
    "cnn": (
        {"test/n": 60, "test/accuracy": 0.9, "test/macro_f1": 0.88, "test/roc_auc": 0.95},
        {
            "arch": "small_cnn",
            "task": "binary",
            "classes": ["without_mask", "with_mask"],
            "params": {
                "name": "cnn",
                "arch": "small_cnn",
                "lr": 0.001,
                "image_size": 128,
                "augment": ["hflip"],
            },
            "sets": {
                "test": {
                    "datasets": ["mask_folders"],
                    "n_scored": 60,
                    "labels": {"with_mask": 30, "without_mask": 30},
                }
            },
            "notes": [],
        },
    ),
    "three": (
        {"test/n": 90, "test/accuracy": 0.8, "test/macro_f1": 0.91, "test/roc_auc": None},
        {
            "arch": "resnet50",
            "task": "multiclass",
            "classes": ["with_mask", "without_mask", "mask_weared_incorrect"],
            "params": {
                "name": "three",
                "arch": "resnet50",
                "lr": 0.001,
                "image_size": 96,
                "augment": ["hflip"],
            },
            "sets": {
                "test": {
                    "datasets": ["kaggle_face_mask_detection"],
                    "n_scored": 90,
                    "labels": {"with_mask": 70, "without_mask": 20},
                }
            },
            "notes": ["test: no samples of mask_weared_incorrect"],
        },
    ),
    "synth": (
        {
            "test/n": 40,
            "test/accuracy": 0.7,
            "test/roc_auc": 0.8,
            "real/n": 50,
            "real/macro_f1": 0.6,
            "real/roc_auc": 0.65,
        },
        {
            "arch": "resnet50",
            "task": "binary",
            "classes": ["without_mask", "with_mask"],
            "params": {
                "name": "synth",
                "arch": "resnet50",
                "lr": 0.01,
                "image_size": 64,
                "augment": ["hflip"],
                "optimizer": "sgd",
            },
            "sets": {
                "test": {"datasets": ["synthetic"], "n_scored": 40, "labels": {}},
                "real": {
                    "datasets": ["kaggle_face_mask_detection", "mask_folders"],
                    "n_scored": 50,
                    "labels": {"with_mask": 25, "without_mask": 25},
                },
            },
            "notes": [],
        },
    ),
}


def write_inputs(root: Path) -> None:
    for name, (metrics, summary) in MODELS.items():
        (root / "metrics/eval" / name).mkdir(parents=True, exist_ok=True)
        (root / "metrics/models").mkdir(parents=True, exist_ok=True)
        (root / "metrics/models" / f"{name}.json").write_text(json.dumps(metrics))
        (root / "metrics/eval" / name / "summary.json").write_text(json.dumps(summary))


def test_report_ranks_shows_sizes_and_differing_params(tmp_path):
    write_inputs(tmp_path)
    results = load_results(list(MODELS), tmp_path / "metrics/models", tmp_path / "metrics/eval")
    md, data = build_report(results, "test/macro_f1")
    # synth has no test/macro_f1 -> ranked last, shown as –
    assert [e["model"] for e in data["leaderboard"]] == ["three", "cnn", "synth"]
    assert data["leaderboard"][2]["primary"] is None
    board = md.split("## Leaderboard")[1].split("##")[0]
    lines = [ln for ln in board.splitlines() if ln.startswith("| ")]
    assert lines[1].startswith("| 1 | `three` | resnet50 | multiclass | 0.9100")
    assert "`real/macro_f1`" in lines[0] and "0.6000" in lines[3]
    assert "| `three` | test | kaggle_face_mask_detection | 90 | with_mask 70, without_mask 20 |" in md
    # params that differ: lr, image_size, arch, optimizer (missing in two models) - not augment, not name
    diff = data["differing_params"]
    assert set(diff) == {"arch", "lr", "image_size", "optimizer"}
    assert diff["optimizer"] == {"cnn": None, "three": None, "synth": "sgd"}
    assert "| `lr` | 0.001 | 0.001 | 0.01 |" in md
    assert "- `three`: test: no samples of mask_weared_incorrect" in md
    assert data["leaderboard"][2]["test_sizes"] == {"test": 40, "real": 50}


def test_report_shows_intervals_and_per_class_support(tmp_path):
    metrics = {
        "test/n": 60,
        "test/accuracy": 0.9,
        "test/accuracy_lo": 0.82,
        "test/accuracy_hi": 0.96,
        "test/macro_f1": 0.88,
        "test/macro_f1_lo": 0.8,
        "test/macro_f1_hi": None,
        "test/roc_auc": 0.95,
        "test/support/with_mask": 25,
        "test/recall/with_mask": 0.96,
        "test/recall/with_mask_lo": 0.9,
        "test/recall/with_mask_hi": 1.0,
        "test/precision/with_mask": 0.9,
        "test/f1/with_mask": 0.93,
        "test/support/without_mask": 35,
        "test/recall/without_mask": 0.8,
    }
    summary = {
        **MODELS["cnn"][1],
        "sets": {"test": {**MODELS["cnn"][1]["sets"]["test"], "classes": ["without_mask", "with_mask"]}},
    }
    md, data = build_report([ModelResult("cnn", metrics, summary)], "test/macro_f1")
    board = md.split("## Leaderboard")[1].split("##")[0]
    # an interval with an undefined end is not shown as one
    assert "| 1 | `cnn` | small_cnn | binary | 0.8800 | 60 | 0.9000 [0.8200, 0.9600] | 0.9500 |" in board
    per_class = md.split("## Per-class results")[1].split("##")[0]
    assert "| `cnn` | test | with_mask | 25 | 0.9000 | 0.9600 [0.9000, 1.0000] | 0.9300 |" in per_class
    assert "| `cnn` | test | without_mask | 35 | – | 0.8000 | – |" in per_class
    assert data["leaderboard"][0]["intervals"] == {
        "test/macro_f1": [0.8, None],
        "test/accuracy": [0.82, 0.96],
    }


def test_rank_lower_is_better_and_nulls_last():
    from maskpipe.evaluation.report import ModelResult

    rs = [
        ModelResult("a", {"m": 0.3}, {}),
        ModelResult("b", {"m": None}, {}),
        ModelResult("c", {"m": 0.1}, {}),
    ]
    assert [r.name for r in rank(rs, "m")] == ["a", "c", "b"]
    assert [r.name for r in rank(rs, "m", lower_is_better=True)] == ["c", "a", "b"]
    assert differing_params(rs) == {}


def test_unknown_primary_metric_and_missing_files_are_clear(tmp_path):
    write_inputs(tmp_path)
    results = load_results(["cnn"], tmp_path / "metrics/models", tmp_path / "metrics/eval")
    with pytest.raises(ReportError, match="test/f2"):
        build_report(results, "test/f2")
    with pytest.raises(ReportError, match=r"nope\.json: metrics not found"):
        load_results(["nope"], tmp_path / "metrics/models", tmp_path / "metrics/eval")


def test_report_stage_cli(tmp_path, repo):
    write_inputs(tmp_path)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"report": {"primary_metric": "test/accuracy"}}))
    cmd = [sys.executable, str(repo / "stages/report.py"), *MODELS]
    proc = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "best by test/accuracy: cnn" in proc.stdout
    data = json.loads((tmp_path / "metrics/report.json").read_text())
    assert data["leaderboard"][0]["model"] == "cnn"
    assert (tmp_path / "metrics/report.md").read_text().startswith("# maskpipe model report")
    bad = subprocess.run(cmd + ["missing_model"], cwd=tmp_path, capture_output=True, text=True)
    assert bad.returncode == 1
    assert bad.stderr.strip().startswith("report: ") and "missing_model.json" in bad.stderr
    assert "Traceback" not in bad.stderr


def test_report_models_come_from_params():
    from maskpipe.evaluation.report import report_models

    assert report_models(None, ["a", "b"]) == ["a", "b"]
    assert report_models(["b"], ["a", "b"]) == ["b"]
    with pytest.raises(ReportError, match="report.models: c not under"):
        report_models(["c"], ["a", "b"])


def test_whole_photo_metrics_get_a_column_and_a_section(tmp_path):
    """metrics/wild/<model>.json (evaluate_wild) is read when present: a wild/map50 column and a table."""
    write_inputs(tmp_path)
    (tmp_path / "metrics/wild").mkdir()
    (tmp_path / "metrics/wild/three.json").write_text(
        json.dumps(
            {
                "photos": 30,
                "faces": 150,
                "map50": 0.42,
                "ap50/with_mask": 0.6,
                "ap50/without_mask": 0.5,
                "ap50/mask_weared_incorrect": 0.16,
                "detection/recall": 0.8,
                "detection/precision": 0.85,
                "detection/recall_0-16px": 0.5,
                "accuracy_matched": 0.75,
            }
        )
    )
    results = load_results(
        list(MODELS), tmp_path / "metrics/models", tmp_path / "metrics/eval", tmp_path / "metrics/wild"
    )
    md, data = build_report(results, "test/macro_f1")
    assert "wild/map50" in data["columns"]
    assert data["leaderboard"][0]["metrics"]["wild/map50"] == 0.42
    assert data["leaderboard"][1]["metrics"]["wild/map50"] is None  # cnn: not scored on whole photos
    section = md.split("## Whole photos")[1].split("##")[0]
    assert (
        "| `three` | 30 | 150 | 0.4200 | 0.6000 | 0.5000 | 0.1600 | 0.8000 | 0.8500 | 0.5000 | 0.7500 |"
        in section
    )
    assert "`cnn`" not in section
