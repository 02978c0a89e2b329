"""DVC stage train@<model>: train one model of params.yaml `models:` (see maskpipe.training.run).

    python stages/train.py mask_cnn

Outputs: data/models/<model>/model.pt, checkpoint.pt (resume point), mlflow_run.json,
metrics/plots/<model>/history.csv. Interrupted? Run it again: it resumes from the checkpoint
when params, data and code are unchanged.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

import typer

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def main(
    model: str = typer.Argument(..., help="a key of `models:` in params.yaml"),
    params_file: Path = typer.Option(Path("params.yaml"), help="parameters file"),
    crops_index: Path = typer.Option(Path("data/crops/index.csv")),
    synth_index: Path = typer.Option(Path("data/synthetic/index.csv")),
    models_dir: Path = typer.Option(Path("data/models")),
    plots_dir: Path = typer.Option(Path("metrics/plots")),
    resolved_dir: Path = typer.Option(
        Path("data/resolved"), help="resolve@<model>'s output, checked against params.yaml when present"
    ),
) -> None:
    from maskpipe.params import ParamsError, check_resolved, load_params
    from maskpipe.settings import ConfigError
    from maskpipe.training.artifact import ArtifactError
    from maskpipe.training.config import training_inputs
    from maskpipe.training.data import DataError
    from maskpipe.training.engine import NonFiniteLossError
    from maskpipe.training.run import TrainPaths, train_model
    from maskpipe.training.weights import PretrainedWeightsError

    def terminate(signum, frame):  # `kill`, `dvc queue kill`: end like Ctrl-C (MLflow run KILLED)
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, terminate)
    # the stage reads seed, train, profiles and models.<model>, resolved: exactly what resolve@<model>
    # wrote to data/resolved/<model>.json, the file dvc.yaml lists as its params dependency
    try:
        all_params = load_params(params_file)
        # resolves the model and train: once; a typo in params.yaml: one line, exit 2, before any work
        wanted = training_inputs(all_params, model)
        check_resolved(resolved_dir / f"{model}.json", wanted, params_file, model)
    except (ParamsError, ConfigError) as exc:
        typer.echo(f"train@{model}: {exc}", err=True)
        raise typer.Exit(2) from None
    # [distributed] train.nproc_per_node > 1: become `torchrun --nproc_per_node N` running this command
    from maskpipe.training import distributed

    if distributed.should_relaunch(all_params.get("train")):
        distributed.relaunch(distributed.nproc_per_node(all_params.get("train")), sys.argv)
    try:
        train_model(model, all_params, TrainPaths(crops_index, synth_index, models_dir, plots_dir))
    except ConfigError as exc:
        typer.echo(f"train@{model}: {exc}", err=True)
        raise typer.Exit(2) from None
    except (DataError, NonFiniteLossError, PretrainedWeightsError, ArtifactError) as exc:
        typer.echo(f"train@{model}: {exc}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo(f"train@{model}: interrupted; run the stage again to resume from the last epoch", err=True)
        raise typer.Exit(130) from None


if __name__ == "__main__":
    sys.exit(typer.run(main))
