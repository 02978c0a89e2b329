"""The default model of `maskpipe predict` / `serve`: the report's best 3-class model."""

from __future__ import annotations

import json

import pytest
from model_factory import make_model
from typer.testing import CliRunner

from maskpipe.cli import app
from maskpipe.default_model import NoDefaultModel, choose_default_model

THREE = ["with_mask", "without_mask", "mask_weared_incorrect"]
TWO = ["with_mask", "without_mask"]


def entry(model, classes, primary, task="multiclass"):
    return {"model": model, "classes": classes, "primary": primary, "task": task}


def report(*entries, lower_is_better=False, metric="test/macro_f1"):
    return {"primary_metric": metric, "lower_is_better": lower_is_better, "leaderboard": list(entries)}


def test_best_three_class_model_wins_over_a_better_binary_one():
    r = report(
        entry("binary_perfect", TWO, 1.0),
        entry("weak_3class", THREE, 0.6),
        entry("strong_3class", THREE, 0.93),
        entry("ae", ["with_mask"], 0.99, task="oneclass"),
    )
    choice = choose_default_model(r)
    assert (choice.model, choice.metric, choice.value) == ("strong_3class", "test/macro_f1", 0.93)
    assert "strong_3class" in choice.describe() and "test/macro_f1" in choice.describe()


def test_order_of_the_leaderboard_does_not_matter_and_lower_is_better_is_honoured():
    entries = [entry("a", THREE, 0.2), entry("b", list(reversed(THREE)), 0.1), entry("c", THREE, 0.3)]
    assert choose_default_model(report(*entries)).model == "c"
    assert (
        choose_default_model(report(*reversed(entries), lower_is_better=True, metric="test/loss")).model
        == "b"
    )


def test_missing_or_unscored_three_class_models_give_a_clear_error():
    with pytest.raises(NoDefaultModel, match="no 3-class model"):
        choose_default_model(report(entry("bin", TWO, 0.9), entry("unscored", THREE, None)))
    with pytest.raises(NoDefaultModel, match="no 3-class model"):
        choose_default_model({})


def _repo(tmp_path, monkeypatch, leaderboard=None):
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DVC_ROOT", raising=False)
    if leaderboard is not None:
        (tmp_path / "metrics").mkdir()
        (tmp_path / "metrics" / "report.json").write_text(json.dumps(leaderboard))


def test_cli_predict_without_model_loads_and_names_the_default(tmp_path, monkeypatch):
    _repo(tmp_path, monkeypatch, report(entry("tiny_multiclass", THREE, 0.91), entry("bin", TWO, 1.0)))
    make_model(tmp_path / "data" / "models", "multiclass")
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "missing.png")])
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert "no --model given; using tiny_multiclass" in out
    # the model loaded; what fails is the missing input, named in one line
    assert result.exit_code == 1 and "missing.png" in out


def test_cli_predict_without_model_or_report_says_what_to_do(tmp_path, monkeypatch):
    _repo(tmp_path, monkeypatch)
    result = CliRunner().invoke(app, ["predict", str(tmp_path / "x.png")])
    out = result.output + (result.stderr if result.stderr_bytes is not None else "")
    assert result.exit_code == 1
    assert "report.json does not exist" in out and "--model" in out
