"""ModelConfig: every model default in one place, unknown keys refused where they were written;
the task registry; a params typo stops the stage with one line; training imports no serving code."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from training_fakes import REPO, repo_params

from maskpipe.settings import ConfigError
from maskpipe.training.config import ModelConfig, resolve_model_config
from maskpipe.training.tasks import ANOMALY, TASKS, get_task


def test_every_model_of_params_yaml_resolves_under_every_profile():
    params = repo_params()
    for profile in ["seed", *params["profiles"]]:
        for name in params["models"]:
            config = resolve_model_config(params, name, profile)
            assert config.name == name and config.profile == profile and config.seed == params["seed"]
            assert config.loss in get_task(config.task).losses


@pytest.mark.parametrize(
    "where, key, message",
    [
        (
            "models.mask_cnn",
            "lerning_rate",
            "params.yaml: models.mask_cnn.lerning_rate: unknown key (did you mean 'lr'?)",
        ),
        (
            "profiles.cpu.all",
            "epochz",
            "params.yaml: profiles.cpu.all.epochz: unknown key (did you mean 'epochs'?)",
        ),
        (
            "profiles.cpu.mask_cnn",
            "batchsize",
            "params.yaml: profiles.cpu.mask_cnn.batchsize: unknown key (did you mean 'batch_size'?)",
        ),
        (
            "profiles.cpu",
            "mask_cn",
            "params.yaml: profiles.cpu.mask_cn: unknown key (did you mean 'mask_cnn'?)",
        ),
    ],
)
def test_unknown_keys_are_refused_where_they_were_written(where, key, message):
    params = repo_params()
    node = params
    for part in where.split("."):
        node = node.setdefault(part, {})
    node[key] = 1
    with pytest.raises(ConfigError) as err:
        resolve_model_config(params, "mask_cnn", profile="cpu")
    assert str(err.value) == message


def test_name_and_profile_are_set_by_the_resolver_only():
    params = repo_params()
    params["models"]["mask_cnn"]["name"] = "other"
    with pytest.raises(ConfigError, match=r"models\.mask_cnn\.name: unknown key"):
        resolve_model_config(params, "mask_cnn")


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("epochs", "5", r"profiles\.cpu\.mask_cnn\.epochs: expected an integer, got '5'"),
        ("dropout", 1.5, r"profiles\.cpu\.mask_cnn\.dropout: must be >= 0 and <= 1"),
        ("optimizer", "adamm", r"'adamm' is not one of adam, adamw, sgd \(did you mean 'adam'\?\)"),
        ("threshold_percentile", 101, r"threshold_percentile: must be >= 0 and <= 100"),
        ("monitor", "val_f1", r"monitor: 'val_f1' is not one of"),
    ],
)
def test_bad_values_in_a_profile_name_the_profile(key, value, message):
    params = repo_params()
    params["profiles"]["cpu"]["mask_cnn"][key] = value
    with pytest.raises(ConfigError, match=message):
        resolve_model_config(params, "mask_cnn", profile="cpu")


def test_cross_field_checks():
    params = repo_params()
    params["models"]["cae_oneclass"]["monitor"] = "val_accuracy"
    with pytest.raises(ConfigError, match=r"models\.cae_oneclass\.monitor: a oneclass model has no accuracy"):
        resolve_model_config(params, "cae_oneclass")
    params = repo_params()
    params["models"]["mask_cnn"]["arch"] = "conv_autoencoder"
    with pytest.raises(ConfigError, match="conv_autoencoder cannot do task 'binary'"):
        resolve_model_config(params, "mask_cnn", profile="seed")  # the cpu profile sets its own arch
    params["profiles"]["cpu"]["mask_cnn"]["arch"] = "conv_autoencoder"
    with pytest.raises(ConfigError, match="conv_autoencoder cannot do task 'binary'"):
        resolve_model_config(params, "mask_cnn", profile="cpu")


def test_defaults_live_in_the_config_and_a_missing_loss_is_the_tasks_default():
    params = repo_params()
    del params["models"]["mask_cnn"]["loss"]
    config = resolve_model_config(params, "mask_cnn", profile="seed")
    assert config.loss == "bce" and config.momentum == 0.9 and config.threshold_percentile == 75
    assert config.scale_range == (0.85, 1.15) and config.ae_channels == (32, 64, 16)
    with pytest.raises(ConfigError, match="expected 2 items"):
        config.from_mapping({**config.to_dict(), "scale_range": [1.0]}, "models.mask_cnn")


def test_plain_dict_is_yaml_json_and_torch_safe_and_round_trips(tmp_path):
    config = resolve_model_config(repo_params(), "cae_oneclass", profile="cpu")
    plain = config.to_plain()
    assert yaml.safe_load(yaml.safe_dump(plain)) == plain and json.loads(json.dumps(plain)) == plain
    torch.save({"params": plain}, tmp_path / "x.pt")
    assert torch.load(tmp_path / "x.pt", weights_only=True)["params"] == plain
    assert ModelConfig.from_artifact(plain) == config


def test_an_older_artifacts_params_load_with_todays_defaults():
    """Artifacts written before the typed config store a dict without e.g. threshold_percentile."""
    old = resolve_model_config(repo_params(), "cae_oneclass", profile="cpu").to_plain()
    del old["threshold_percentile"], old["ae_channels"]
    config = ModelConfig.from_artifact(old)
    assert config.threshold_percentile == 75 and config.ae_channels == (32, 64, 16)


# ------------------------------------------------------------------------------ task registry
def test_task_registry_targets_correct_counts_and_scores():
    assert set(TASKS) == {"multiclass", "binary", "oneclass"}
    x, y = torch.rand(3, 3, 8, 8), torch.tensor([0, 1, 1])
    multi, binary, oneclass = get_task("multiclass"), get_task("binary"), get_task("oneclass")
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [3.0, 0.0]])
    assert multi.correct(logits, y) == 2 and torch.equal(multi.target(x, y), y)
    assert binary.correct(torch.tensor([[-1.0], [2.0], [-0.5]]), y) == 2
    assert oneclass.correct(x, y) == 0 and torch.equal(oneclass.target(x, y), x)
    p = binary.scores(torch.tensor([[0.0], [10.0]]), x[:2])
    assert torch.allclose(p.sum(1), torch.ones(2)) and float(p[1, 1]) > 0.99
    assert torch.allclose(oneclass.scores(x, x), torch.zeros(3, 1))
    assert multi.labels(multi.scores(logits, x).numpy(), ["a", "b"]) == ["a", "b", "a"]
    assert (multi.num_outputs(3), binary.num_outputs(2), oneclass.num_outputs(1)) == (3, 1, 0)
    with pytest.raises(ValueError, match="unknown task"):
        get_task("regression")


def test_oneclass_threshold_is_the_models_percentile_of_its_training_errors():
    task = get_task("oneclass")
    meta = {
        "model_name": "cae",
        "params": {"threshold_percentile": 40},
        "error_percentiles": [i / 100 for i in range(101)],
    }
    assert task.threshold(meta) == 0.40
    scores = np.array([[0.1], [0.4], [0.41]])
    assert task.labels(scores, ["with_mask"], task.threshold(meta)) == ["with_mask", "with_mask", ANOMALY]
    with pytest.raises(ValueError, match="error percentiles"):
        task.threshold({**meta, "error_percentiles": []})
    assert get_task("binary").threshold(meta) is None


# ------------------------------------------------------------------------------ stages
def _stage(script: str, args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    env = {
        "PYTHONPATH": str(REPO / "src"),
        "PATH": str(Path(sys.executable).parent) + ":/usr/bin:/bin",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    return subprocess.run(
        [sys.executable, str(REPO / "stages" / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_a_typo_under_models_stops_the_train_stage_with_one_line(tmp_path):
    params = copy.deepcopy(repo_params())
    params["models"]["mask_cnn"]["lerning_rate"] = 0.01
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = _stage("train.py", ["mask_cnn", "--params-file", "params.yaml"], tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == (
        "train@mask_cnn: params.yaml: models.mask_cnn.lerning_rate: unknown key (did you mean 'lr'?)"
    )
    assert not (tmp_path / "data").exists()  # stopped before any work


def test_the_old_evaluate_threshold_key_stops_the_evaluate_stage_with_one_line(tmp_path):
    params = copy.deepcopy(repo_params())
    params["evaluate"]["threshold_percentile"] = 90
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = _stage("evaluate.py", ["mask_cnn", "--params", "params.yaml", "--no-mlflow"], tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().startswith(
        "evaluate: params.yaml: evaluate.threshold_percentile: moved to models.<model>.threshold_percentile"
    )
    assert len(done.stderr.strip().splitlines()) == 1


def test_training_imports_neither_the_serving_stack_nor_mlflow():
    code = (
        "import sys, maskpipe.training.run, maskpipe.training.engine, maskpipe.training.config, "
        "maskpipe.training.artifact, maskpipe.tracker; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow' or m in "
        "('maskpipe.predict', 'maskpipe.detect', 'maskpipe.crop', 'maskpipe.pyfunc', 'maskpipe.serve')))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=300,
        env={"PYTHONPATH": str(REPO / "src"), "MLFLOW_DISABLE_TELEMETRY": "true"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.parametrize(
    "script, args, section, key, message",
    [
        (
            "report.py",
            ["mask_cnn", "--params", "params.yaml"],
            "report",
            "primary_metrc",
            "report: params.yaml: report.primary_metrc: unknown key (did you mean 'primary_metric'?)",
        ),
        (
            "convert_mat.py",
            ["--params", "params.yaml"],
            "convert_mat",
            "train_fil",
            "convert_mat: error: params.yaml: convert_mat.train_fil: unknown key (did you mean 'train_file'?)",
        ),
        (
            "evaluate_wild.py",
            ["resnet50_3class", "--params", "params.yaml"],
            "evaluate_wild",
            "iou_treshold",
            "evaluate_wild: params.yaml: evaluate_wild.iou_treshold: unknown key (did you mean 'iou_threshold'?)",
        ),
    ],
)
def test_other_stages_stop_on_an_unknown_key_with_one_line(tmp_path, script, args, section, key, message):
    params = copy.deepcopy(repo_params())
    params[section][key] = 1
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = _stage(script, args, tmp_path)
    assert done.returncode == 2 and done.stderr.strip() == message
