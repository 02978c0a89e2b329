"""DVC stage `crossval`: grouped k-fold cross-validation of one classifier (opt-in).

    dvc exp run -S crossval.folds=5                 # params.yaml crossval.model, 5 folds
    python stages/crossval.py --folds 2 --profile tiny

-> metrics/cv.json (cv/<metric>_mean / _std / _min / _max over the folds; cv/pooled/<metric> with
   _lo / _hi over every held-out face; cv/<extra set>/... for the model's evaluate.extra_sets),
   metrics/plots/cv/folds.csv (one row per fold) and metrics/plots/cv/predictions.csv (every
   held-out face's scores, to pool or slice as you like). ``crossval.folds: 0`` (the default) trains
   nothing and writes ``{"cv/folds": 0}``. Fold models live in data/cv/ (git-ignored scratch).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import typer

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def main(
    params_file: Path = typer.Option(Path("params.yaml"), help="parameters file"),
    folds: int = typer.Option(None, help="override crossval.folds"),
    model: str = typer.Option(None, help="override crossval.model"),
    profile: str = typer.Option(None, help="override train.profile (e.g. tiny for a quick check)"),
    crops_index: Path = typer.Option(Path("data/crops/index.csv")),
    synth_index: Path = typer.Option(Path("data/synthetic/index.csv")),
    work_dir: Path = typer.Option(Path("data/cv"), help="fold indexes, models and tensor cache"),
    metrics_file: Path = typer.Option(Path("metrics/cv.json")),
    folds_file: Path = typer.Option(Path("metrics/plots/cv/folds.csv")),
    predictions_file: Path = typer.Option(Path("metrics/plots/cv/predictions.csv")),
) -> None:
    import pandas as pd

    from maskpipe.evaluation.crossval import (
        CrossValidationError,
        check_train_fraction,
        cross_validate,
        summary_lines,
    )
    from maskpipe.io import write_csv, write_json
    from maskpipe.params import ParamsError, load_params
    from maskpipe.training.config import ConfigError
    from maskpipe.training.data import DataError

    try:
        all_params = load_params(params_file)
        cfg = all_params.get("crossval") or {}
        unknown = sorted(set(cfg) - {"folds", "model", "train_fraction"})
        if unknown:
            raise CrossValidationError(
                f"params.yaml: crossval has unknown keys {unknown} (folds, model, train_fraction)"
            )
        fraction = cfg.get("train_fraction", 1.0)
        check_train_fraction(fraction)
        k = int(folds if folds is not None else cfg.get("folds", 0))
        name = model or cfg.get("model")
        if profile:
            all_params.setdefault("train", {})["profile"] = profile
        if k == 0:
            write_json(metrics_file, {"cv/folds": 0})
            write_csv(folds_file, pd.DataFrame(columns=["fold", "n", "accuracy", "macro_f1"]))
            write_csv(predictions_file, pd.DataFrame(columns=["fold", "set", "path", "label", "predicted"]))
            typer.echo("crossval: off (crossval.folds is 0)")
            return
        if not name:
            raise CrossValidationError("params.yaml: crossval.model names no model")
        shutil.rmtree(work_dir / name, ignore_errors=True)  # fold models of an earlier run: never resumed
        cv = cross_validate(
            name,
            all_params,
            k,
            crops_index=crops_index,
            synth_index=synth_index,
            work_dir=work_dir / name,
            train_fraction=fraction,
        )
    except (ParamsError, ConfigError, DataError, CrossValidationError, ValueError) as exc:
        typer.echo(f"crossval: {exc}", err=True)
        raise typer.Exit(1) from None
    write_json(metrics_file, cv.metrics)
    write_csv(folds_file, cv.folds)
    write_csv(predictions_file, cv.predictions)
    for line in summary_lines(cv.metrics, name):
        typer.echo(line)


if __name__ == "__main__":
    typer.run(main)
