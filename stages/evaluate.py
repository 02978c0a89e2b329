"""DVC stage `evaluate@<model>`: python stages/evaluate.py MODEL

-> metrics/models/MODEL.json (metrics), metrics/eval/MODEL/ (summary.json, predictions),
   metrics/plots/MODEL/{roc,confusion,images}/ (DVC plots, one folder per kind), and the same
   metrics and PNGs in the model's MLflow run (data/models/MODEL/mlflow_run.json).
It reads the part of `evaluate:` that resolve@MODEL wrote to data/resolved/MODEL.evaluate.json, the
file dvc.yaml lists as its params dependency, and refuses to run when that file is stale.
"""

from __future__ import annotations

import os
from pathlib import Path

import typer

from maskpipe.params import ParamsError, check_resolved, load_params


def main(
    model: str = typer.Argument(..., help="model name, a key of params.yaml `models:`"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    models_dir: Path = typer.Option(Path("data/models"), help="folder of <model>/model.pt"),
    crops: Path = typer.Option(Path("data/crops/index.csv"), help="crop index"),
    synthetic: Path = typer.Option(Path("data/synthetic/index.csv"), help="synthetic index"),
    metrics_dir: Path = typer.Option(Path("metrics/models"), help="where <model>.json goes"),
    eval_dir: Path = typer.Option(Path("metrics/eval"), help="where <model>/summary.json goes"),
    plots_dir: Path = typer.Option(Path("metrics/plots"), help="where <model>/{roc,confusion,images}/ go"),
    mlflow: bool = typer.Option(True, help="log metrics and PNGs into the model's MLflow run"),
    resolved_dir: Path = typer.Option(
        Path("data/resolved"), help="resolve@<model>'s output, checked against params.yaml when present"
    ),
) -> None:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    from maskpipe.evaluation.config import evaluate_config, evaluate_inputs
    from maskpipe.evaluation.evaluate import EvaluationError, evaluate_model
    from maskpipe.evaluation.oneclass_scores import BASELINES
    from maskpipe.settings import ConfigError
    from maskpipe.training.artifact import ArtifactError
    from maskpipe.training.data import DataError

    model_dir = models_dir / model
    try:
        all_params = load_params(params)
        eval_config = evaluate_config(all_params)
        check_resolved(
            resolved_dir / f"{model}.evaluate.json", evaluate_inputs(all_params, model), params, model
        )
    except (ParamsError, ConfigError) as exc:
        typer.echo(f"evaluate: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        out = evaluate_model(
            model,
            model_path=model_dir / "model.pt",
            crops_index=crops,
            synthetic_index=synthetic,
            eval_params=eval_config,
            metrics_path=metrics_dir / f"{model}.json",
            out_dir=eval_dir / model,
            mlflow_run_file=(model_dir / "mlflow_run.json") if mlflow else None,
            plots_dir=plots_dir / model,
        )
    except (ParamsError, EvaluationError, ArtifactError, DataError, FileNotFoundError) as exc:
        typer.echo(f"evaluate: {exc}", err=True)
        raise typer.Exit(1) from None
    m = out.metrics
    # the headline of each set, and the ROC-AUC of each one-class baseline beside the model's own score
    baselines = (f"{kind}/roc_auc" for kind in BASELINES)
    headline = ("n", "accuracy", "macro_f1", "roc_auc", *baselines)
    shown = [k for k in m if k.split("/", 1)[-1] in headline]

    def shown_value(k: str) -> str:
        lo, hi = m.get(f"{k}_lo"), m.get(f"{k}_hi")
        return f"{m[k]} [{lo}, {hi}]" if lo is not None and hi is not None else f"{m[k]}"

    typer.echo(f"{model}: " + ", ".join(f"{k}={shown_value(k)}" for k in shown))
    for note in out.summary["notes"]:
        typer.echo(f"  note: {note}")


if __name__ == "__main__":
    typer.run(main)
