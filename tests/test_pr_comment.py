"""scripts/pr_metrics_comment.py for real: two commits of a temp git + DVC repo."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "pr_metrics_comment.py"

DVC_YAML = """\
stages:
  evaluate:
    cmd: python evaluate.py
    params:
      - train
    metrics:
      - metrics/cnn.json:
          cache: false
      - metrics/wild/cnn.json:
          cache: false
    outs:
      - metrics/plots/cnn/eval:
          cache: false
plots:
  - cnn - test ROC:
      template: simple
      x: fpr
      y:
        metrics/plots/cnn/eval/test/roc_with_mask.csv: tpr
  - cnn - test confusion:
      template: confusion
      x: actual
      y:
        metrics/plots/cnn/eval/test/confusion.csv: predicted
"""


def load_script():
    spec = importlib.util.spec_from_file_location("pr_metrics_comment", SCRIPT)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def git(repo: Path, *args: str) -> str:
    env = {
        **os.environ,
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@example.invalid",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@example.invalid",
    }
    return subprocess.run(
        ["git", *args], cwd=repo, env=env, check=True, capture_output=True, text=True
    ).stdout


def write_state(
    repo: Path, lr: float, metrics: dict, roc: str, confusion: str, wild: dict | None = None
) -> None:
    (repo / "params.yaml").write_text(f"train:\n  lr: {lr}\n  epochs: 3\n")
    (repo / "metrics" / "wild").mkdir(parents=True, exist_ok=True)
    (repo / "metrics/cnn.json").write_text(json.dumps(metrics))
    (repo / "metrics/wild/cnn.json").write_text(json.dumps(wild or {"map50": 0.4, "accuracy_matched": 0.7}))
    test = repo / "metrics/plots/cnn/eval/test"
    test.mkdir(parents=True, exist_ok=True)
    (test / "roc_with_mask.csv").write_text(roc)
    (test / "confusion.csv").write_text(confusion)


@pytest.fixture
def two_commits(tmp_path) -> Path:
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True)
    (repo / "dvc.yaml").write_text(DVC_YAML)
    conf = "actual,predicted\nwith_mask,with_mask\nwithout_mask,with_mask\n"
    write_state(
        repo,
        0.001,
        {
            "test/accuracy": 0.8,
            "test/macro_f1": 0.75,
            "test/roc_auc": None,
            "test/n": 40,
            "test/recall/with_mask": 0.9,
        },
        "fpr,tpr,threshold\n0,0,inf\n0.5,0.8,0.5\n1,1,0.1\n",
        conf,
    )
    git(repo, "add", "-A")
    git(repo, "commit", "-qm", "base")
    write_state(
        repo,
        0.01,
        {
            "test/accuracy": 0.85,
            "test/macro_f1": 0.7,
            "test/roc_auc": 0.91,
            "test/n": 40,
            "test/recall/with_mask": 0.95,
        },
        "fpr,tpr,threshold\n0,0,inf\n0.25,0.9,0.5\n1,1,0.1\n",
        conf,
        wild={"map50": 0.55, "accuracy_matched": 0.8},
    )
    git(repo, "commit", "-qam", "pr")
    return repo


def test_comment_between_two_commits(two_commits, tmp_path):
    out = tmp_path / "comment.md"
    plots = tmp_path / "pr-plots"
    proc = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--base",
            "HEAD~1",
            "--out",
            str(out),
            "--plots-out",
            str(plots),
            "--artifact-url",
            "https://ci.example/run/1",
        ],
        cwd=two_commits,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    md = out.read_text()
    assert md.startswith("<!-- maskpipe-pr-metrics -->")
    # headline table: ours, with direction of change; a null base value shows as new
    assert "| `cnn` | `test/accuracy` | 0.8000 | 0.8500 | ▲ +0.0500 |" in md
    assert "| `cnn` | `test/macro_f1` | 0.7500 | 0.7000 | ▼ -0.0500 |" in md
    assert "| `cnn` | `test/roc_auc` | – | 0.9100 | new |" in md
    assert "`test/recall/with_mask`" not in md.split("<details>")[0]  # not a headline metric
    # the whole-photo mAP (metrics/wild/<model>.json) is a headline metric, named apart from the crop metrics
    assert "| `wild/cnn` | `map50` | 0.4000 | 0.5500 | ▲ +0.1500 |" in md
    assert "`accuracy_matched`" not in md.split("<details>")[0]
    # dvc's own tables, verbatim
    assert "| metrics/cnn.json      | test/recall/with_mask | 0.9" in md
    assert "| metrics/wild/cnn.json | map50                 | 0.4      | 0.55" in md
    assert "| params.yaml | train.lr | 0.001    | 0.01        |" in md
    # plots: the ROC data changed, the confusion pairs did not
    assert "| cnn - test ROC | 3 | 3 | changed |" in md
    assert "1 other plot(s) unchanged." in md
    assert "[the `pr-plots` artifact](https://ci.example/run/1)" in md
    html = (plots / "index.html").read_text()
    assert "vegaEmbed" in html and "HEAD~1" in html


def test_nothing_changed_says_so(two_commits, tmp_path):
    mod = load_script()
    md, errors = mod.build_comment(two_commits, "HEAD", None, None)
    assert errors == []
    assert "No metric changed." in md and "No param changed." in md
    assert "No plot data changed (2 plots compared)." in md


def test_missing_base_is_a_clear_error(two_commits):
    proc = subprocess.run(
        [sys.executable, str(SCRIPT), "--base", "origin/nope"],
        cwd=two_commits,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 1
    assert "base revision 'origin/nope' not found" in proc.stderr and "fetch-depth: 0" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_plots_summary_statuses():
    mod = load_script()
    vals = lambda rev, pts: [{"x": str(i), "y": str(p), "rev": rev} for i, p in enumerate(pts)]  # noqa: E731
    data = {
        "a": [
            {
                "type": "vega",
                "content": {"data": {"values": vals("main", [1, 2]) + vals("workspace", [1, 3])}},
            }
        ],
        "b": [{"type": "vega", "content": {"data": {"values": vals("main", [1]) + vals("workspace", [1])}}}],
        "c": [{"type": "vega", "content": {"data": {"values": vals("workspace", [1, 2, 3])}}}],
        "d": [{"type": "vega", "content": {"data": {"values": vals("main", [5])}}}],
    }
    rows = mod.plots_summary(data, "main")
    assert rows == [
        ("a", "2", "2", "changed"),
        ("b", "1", "1", "unchanged"),
        ("c", "–", "3", "new"),
        ("d", "1", "–", "removed"),
    ]


def test_unreadable_plot_files_are_grouped_per_file():
    mod = load_script()
    errs = [
        {"name": "p1", "rev": "main", "source": "a.csv", "type": "FileNotFoundError"},
        {"name": "p2", "rev": "workspace", "source": "a.csv", "type": "FileNotFoundError"},
        {"name": "p3", "rev": "workspace", "source": "b.png", "type": "FileNotFoundError"},
    ]
    md = mod.plot_errors_table(errs)
    assert "2 plot file(s) could not be read" in md
    assert "| `a.csv` | main, workspace | FileNotFoundError |" in md
    assert mod.plot_errors_table([]) == ""
