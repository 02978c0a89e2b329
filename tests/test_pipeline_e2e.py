"""End-to-end: the whole DVC pipeline on the tiny profile, in a temp copy of the repo.

This is what CI relies on to prove that dvc.yaml, params.yaml, the stage scripts
and the library agree with each other.
"""

from __future__ import annotations

import json

import pandas as pd
import pytest
import yaml
from tiny_pipeline import run


@pytest.mark.slow
def test_dvc_repro_tiny_profile(tiny_repo):
    """`tiny_repo` (conftest.py) copied the repo, set the tiny profile and ran `dvc repro` once."""
    work, env = tiny_repo.path, tiny_repo.env

    index = pd.read_csv(work / "data/crops/index.csv")
    assert set(index["split"]) == {"train", "val", "test"}
    synthetic = pd.read_csv(work / "data/synthetic/index.csv")
    assert len(synthetic) > 0
    models = yaml.safe_load((work / "params.yaml").read_text())["models"]
    for name in models:
        assert (work / f"data/models/{name}/model.pt").exists(), name
        metrics = json.loads((work / f"metrics/models/{name}.json").read_text())
        assert any(k.startswith("test/") for k in metrics), (name, metrics)
        # stage-level plots: one folder per kind (dvc.yaml declares each once per model)
        assert any((work / f"metrics/plots/{name}/confusion").iterdir()), name
        assert (work / f"metrics/eval/{name}/summary.json").exists(), name
    report = (work / "metrics/report.md").read_text()
    for name in models:
        assert name in report
    # the MLflow store lands in the repo the pipeline ran in
    assert (work / "mlflow.db").exists()

    again = run(["dvc", "repro"], work, env)
    assert "up to date" in again.stdout.lower(), again.stdout
