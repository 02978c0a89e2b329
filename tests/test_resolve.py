"""resolve@<model>: train@<model> and evaluate@<model> depend on their own resolved params, not on
every model's profile or every model's evaluation options."""

from __future__ import annotations

import copy
import json
import subprocess
import sys

import pytest
import yaml
from training_fakes import REPO, repo_params

from maskpipe.evaluation.config import evaluate_inputs
from maskpipe.io import as_written
from maskpipe.settings import ConfigError
from maskpipe.training.config import training_inputs


def test_one_models_profile_entry_changes_that_models_inputs_only():
    params = repo_params()
    before = {m: training_inputs(params, m) for m in params["models"]}
    edited = copy.deepcopy(params)
    edited["profiles"]["cpu"]["mask_cnn"]["epochs"] = 9
    after = {m: training_inputs(edited, m) for m in params["models"]}
    assert [m for m in before if before[m] != after[m]] == ["mask_cnn"]
    assert after["mask_cnn"]["model"]["epochs"] == 9
    # what every model reads changes every model's inputs: the profile's `all`, train:, seed
    for change in (
        lambda p: p["profiles"]["cpu"]["all"].update(patience=2),  # no model sets its own in cpu
        lambda p: p["train"].update(num_threads=1),
        lambda p: p.update(seed=7),
    ):
        edited = copy.deepcopy(params)
        change(edited)
        assert all(training_inputs(edited, m) != before[m] for m in params["models"])
    # another profile's entries are not read while `cpu` is active
    edited = copy.deepcopy(params)
    edited["profiles"]["tiny"]["all"]["epochs"] = 3
    assert all(training_inputs(edited, m) == before[m] for m in params["models"])


def _stage(script: str, *args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / script), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _resolved(tmp_path, params: dict, model: str, name: str):
    """params.yaml written to tmp_path, resolve@<model> run there: the file data/resolved/<name>, read."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    done = _stage("resolve.py", model, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    return json.loads((tmp_path / "data/resolved" / name).read_text())


def _assert_refused_as_stale(tmp_path, edited: dict, model: str, name: str, script: str, *args: str):
    """params.yaml edited and resolve not run again: ``script`` refuses data/resolved/<name>, exit 2."""
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(edited, sort_keys=False))
    stale = _stage(script, model, *args, cwd=tmp_path)
    assert stale.returncode == 2, stale.stderr
    assert f"data/resolved/{name} does not match params.yaml" in stale.stderr
    assert f"python stages/resolve.py {model}" in stale.stderr


def test_resolve_writes_the_inputs_and_train_refuses_a_stale_file(tmp_path):
    params = repo_params()
    written = _resolved(tmp_path, params, "mask_cnn", "mask_cnn.json")
    # what train.py compares the file with: the same serialisation, so a fresh file always passes
    assert written == as_written(training_inputs(params, "mask_cnn"))
    assert written["model"]["name"] == "mask_cnn" and written["train"]["profile"] == "cpu"

    params["profiles"]["cpu"]["mask_cnn"]["epochs"] = 9
    _assert_refused_as_stale(tmp_path, params, "mask_cnn", "mask_cnn.json", "train.py")


@pytest.mark.parametrize("model", ["no_such_model"])
def test_resolve_names_an_unknown_model(tmp_path, model):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(repo_params(), sort_keys=False))
    done = _stage("resolve.py", model, cwd=tmp_path)
    assert done.returncode == 2 and f"resolve@{model}: params.yaml: no model '{model}'" in done.stderr
    assert not (tmp_path / "data/resolved").exists()


def test_every_train_stage_depends_on_its_resolved_params_not_on_profiles():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    train = stages["train"]["do"]
    assert "data/resolved/${key}.json" in train["deps"] and "params" not in train
    resolve = stages["resolve"]["do"]
    assert resolve["params"] == ["seed", "train", "profiles", "models.${key}", "evaluate"]
    assert resolve["outs"] == [
        {"data/resolved/${key}.json": {"cache": False}},
        {"data/resolved/${key}.evaluate.json": {"cache": False}},
    ]


def test_crossval_depends_on_its_models_resolved_params_not_on_every_model():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    crossval = stages["crossval"]
    assert "data/resolved/${crossval.model}.json" in crossval["deps"]
    assert "data/resolved/${crossval.model}.evaluate.json" in crossval["deps"]  # extra sets, bootstrap
    assert crossval["params"] == ["seed", "crossval"]
    # the interpolated name is a model: dvc finds a resolve@ stage that writes the file
    params = repo_params()
    assert params["crossval"]["model"] in params["models"]


def test_one_models_extra_set_or_a_oneclass_option_changes_only_the_models_that_read_it():
    params = repo_params()
    models = list(params["models"])
    before = {m: evaluate_inputs(params, m) for m in models}
    oneclass = [m for m in models if params["models"][m]["task"] == "oneclass"]
    assert oneclass and len(oneclass) < len(models)

    def changed(change) -> list[str]:
        edited = copy.deepcopy(params)
        change(edited["evaluate"])
        return [m for m in models if evaluate_inputs(edited, m) != before[m]]

    assert changed(lambda e: e["extra_sets"]["mask_cnn"].update(real=["mask_folders"])) == ["mask_cnn"]
    # a model with no extra sets yet gets one: that model only, and the others' files stay the same
    assert changed(lambda e: e["extra_sets"].update(resnet50_3class={"lfw": ["lfw"]})) == ["resnet50_3class"]
    assert changed(lambda e: e.update(pretrained_knn=10)) == oneclass
    assert changed(lambda e: e.update(latent_pool=2)) == oneclass
    assert changed(lambda e: e.update(bootstrap_resamples=200)) == models  # read by every evaluation
    # the section is still checked as a whole: a typo anywhere in it fails every model's resolve
    edited = copy.deepcopy(params)
    edited["evaluate"]["bootstrap_resample"] = 200
    with pytest.raises(ConfigError, match="evaluate.bootstrap_resample: unknown key"):
        evaluate_inputs(edited, "mask_cnn")


def test_evaluate_refuses_a_stale_resolved_file(tmp_path):
    params = repo_params()
    model, name = "mobilenet_v2_3class", "mobilenet_v2_3class.evaluate.json"
    written = _resolved(tmp_path, params, model, name)
    assert written == as_written(evaluate_inputs(params, "mobilenet_v2_3class"))
    assert set(written["extra_sets"]) == {"mobilenet_v2_3class"} and "pretrained_knn" not in written

    params["evaluate"]["extra_sets"][model]["lfw"] = ["lfw"]
    _assert_refused_as_stale(tmp_path, params, model, name, "evaluate.py", "--no-mlflow")


def test_every_evaluate_stage_depends_on_its_resolved_evaluate_params():
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    evaluate = stages["evaluate"]["do"]
    assert "data/resolved/${key}.evaluate.json" in evaluate["deps"] and "params" not in evaluate
