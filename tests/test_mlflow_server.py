"""Team tracking: a real PostgreSQL server, a real `mlflow server` on it (maskpipe.mlflow_server's
command line), one tiny training by the train stage with MLFLOW_TRACKING_URI=http://..., and the run,
its metrics, its artifacts and the registered models read back over HTTP; then a `dvc exp run --queue`
experiment logged to the same server.

PostgreSQL comes from Debian's `postgresql` package (tests/postgres_deps.sh, run by `make test`).
Without it the test skips, except under CI=true, where it fails.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from postgres_server import PostgresServer, PostgresUnavailable, free_port, wait_for_http
from test_exp_run import exp_repo  # noqa: F401  (fixture: a tiny git + DVC repo with the train stage)
from training_fakes import REPO, make_crops, make_synthetic, tiny_params

pytestmark = pytest.mark.slow

MODEL = "mask_cnn"


def _unavailable(reason: str):
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and the tracking server cannot run: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="module")
def postgres():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        _unavailable("psycopg not installed (pip install 'maskpipe[team]')")
    try:
        server = PostgresServer().start()
    except (PostgresUnavailable, OSError, subprocess.SubprocessError) as exc:
        _unavailable(f"PostgreSQL did not start: {exc}")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    from maskpipe.mlflow_server import server_command, server_env

    backend = postgres.create_database("mlflow")
    artifacts = tmp_path_factory.mktemp("server") / "artifacts"
    port = free_port()
    log = artifacts.parent / "mlflow-server.log"
    cmd = server_command(backend, str(artifacts), host="127.0.0.1", port=port)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=server_env(), start_new_session=True
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        # the first start creates MLflow's tables in PostgreSQL (alembic migrations): seconds
        if not wait_for_http(f"{uri}/health", timeout=180, proc=proc):
            _unavailable(f"mlflow server did not answer on {uri}:\n{log.read_text(errors='replace')[-3000:]}")
        yield uri, artifacts
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


def test_training_logs_to_the_postgres_tracking_server(tracking_server, postgres, tmp_path, monkeypatch):
    from mlflow import MlflowClient
    from mlflow.artifacts import download_artifacts

    uri, artifacts = tracking_server
    root = tmp_path / "repo"
    crops = make_crops(
        root, {"mask_folders": ["with_mask", "without_mask"]}, {"train": 8, "val": 4, "test": 2}, size=40
    )
    make_synthetic(root, crops, size=40)
    params = tiny_params(epochs=2)
    params["models"] = {MODEL: params["models"][MODEL]}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "DVC_"))}
    env.update(MLFLOW_TRACKING_URI=uri, MLFLOW_DISABLE_TELEMETRY="true", DVC_NO_ANALYTICS="1")
    proc = subprocess.run(
        [sys.executable, str(REPO / "stages" / "train.py"), MODEL],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    info = json.loads((root / f"data/models/{MODEL}/mlflow_run.json").read_text())
    assert info["tracking_uri"] == uri
    # nothing went to a local store: no sqlite file, no local artifact folder
    assert not (root / "mlflow.db").exists() and not (root / "mlartifacts").exists()

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    exp = client.get_experiment_by_name("maskpipe")
    assert exp.artifact_location.startswith("mlflow-artifacts:"), exp.artifact_location
    runs = client.search_runs([exp.experiment_id])
    assert [(r.info.run_id, r.info.status) for r in runs] == [(info["run_id"], "FINISHED")]
    run = runs[0]
    assert run.info.run_name.endswith(f"/{MODEL}") and run.data.params["lr"] == str(
        params["models"][MODEL]["lr"]
    )
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2]
    assert 0.0 <= run.data.metrics["best/val_accuracy"] <= 1.0

    # artifacts travel through the server into its --artifacts-destination
    local = client.download_artifacts(run.info.run_id, "history/history.csv", str(tmp_path / "dl"))
    assert Path(local).read_text() == (root / f"metrics/plots/{MODEL}/history.csv").read_text()
    assert list(artifacts.rglob("history.csv")), "the server's artifact folder has no history.csv"

    # the registry: both models, resolvable as models:/ URIs over HTTP
    for name in (f"maskpipe-{MODEL}", f"maskpipe-{MODEL}-torch"):
        versions = client.search_model_versions(f"name='{name}'")
        assert [v.run_id for v in versions] == [run.info.run_id], name
    # as `MLFLOW_TRACKING_URI=http://... mlflow models serve -m models:/maskpipe-<m>/latest` resolves it
    import mlflow

    mlflow.set_tracking_uri(None)  # the environment decides, as in a fresh `mlflow models serve`
    mlflow.set_registry_uri(None)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", uri)
    mlmodel = download_artifacts(
        artifact_uri=f"models:/maskpipe-{MODEL}/latest", dst_path=str(tmp_path / "served")
    )
    assert (Path(mlmodel) / "MLmodel").is_file()

    # and the records really are in PostgreSQL
    rows = postgres.query("mlflow", "select run_uuid, status from runs")
    assert rows == [(run.info.run_id, "FINISHED")]
    registered = {r[0] for r in postgres.query("mlflow", "select name from registered_models")}
    assert {f"maskpipe-{MODEL}", f"maskpipe-{MODEL}-torch"} <= registered


def test_queued_experiment_lands_in_the_tracking_server(tracking_server, exp_repo):  # noqa: F811  (fixture)
    """`dvc exp run --queue` + `dvc queue start` with MLFLOW_TRACKING_URI exported in the shell that
    starts the queue (its workers take that shell's environment): the run reaches the server."""
    import time

    from mlflow import MlflowClient
    from test_exp_run import run as run_cmd

    uri, _ = tracking_server
    root, env = exp_repo
    env = dict(env, MLFLOW_TRACKING_URI=uri)
    run_cmd(["dvc", "exp", "run", "--queue", "-n", "queued-lr", "-S", f"models.{MODEL}.lr=0.003"], root, env)
    run_cmd(["dvc", "queue", "start", "-j", "1"], root, env)
    status = ""
    for _ in range(600):
        status = run_cmd(["dvc", "queue", "status"], root, env).stdout
        if "Success" in status or "Failed" in status:
            break
        time.sleep(0.5)
    assert "Success" in status, status + run_cmd(["dvc", "queue", "logs", "queued-lr"], root, env).stdout
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("maskpipe")
    runs = client.search_runs([exp.experiment_id], filter_string="tags.`dvc.exp_name` = 'queued-lr'")
    assert [(r.info.run_name, r.info.status, r.data.params["lr"]) for r in runs] == [
        (f"queued-lr/{MODEL}", "FINISHED", "0.003")
    ]
    assert not (root / "mlflow.db").exists()  # nothing went to the local default store
