"""DVC stage `crossval`: grouped k-fold cross-validation of one classifier (opt-in).

    dvc exp run -S crossval.folds=5                 # params.yaml crossval.model, 5 folds
    python stages/crossval.py --folds 2 --profile tiny

-> metrics/cv.json (cv/<metric>_mean / _std / _min / _max over the folds) and
   metrics/plots/cv/folds.csv (one row per fold). ``crossval.folds: 0`` (the default) trains
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
) -> None:
    import pandas as pd

    from maskpipe.evaluation.crossval import CrossValidationError, cross_validate
    from maskpipe.io import write_csv, write_json
    from maskpipe.params import ParamsError, load_params
    from maskpipe.training.config import ConfigError
    from maskpipe.training.data import DataError

    try:
        all_params = load_params(params_file)
        cfg = all_params.get("crossval") or {}
        k = int(folds if folds is not None else cfg.get("folds", 0))
        name = model or cfg.get("model")
        if profile:
            all_params.setdefault("train", {})["profile"] = profile
        if k == 0:
            write_json(metrics_file, {"cv/folds": 0})
            write_csv(folds_file, pd.DataFrame(columns=["fold", "n", "accuracy", "macro_f1"]))
            typer.echo("crossval: off (crossval.folds is 0)")
            return
        if not name:
            raise CrossValidationError("params.yaml: crossval.model names no model")
        shutil.rmtree(work_dir / name, ignore_errors=True)  # fold models of an earlier run: never resumed
        cv = cross_validate(
            name, all_params, k, crops_index=crops_index, synth_index=synth_index, work_dir=work_dir / name
        )
    except (ParamsError, ConfigError, DataError, CrossValidationError, ValueError) as exc:
        typer.echo(f"crossval: {exc}", err=True)
        raise typer.Exit(1) from None
    write_json(metrics_file, cv.metrics)
    write_csv(folds_file, cv.folds)
    m = cv.metrics
    typer.echo(
        f"crossval {name}, {k} folds: macro_f1 {m.get('cv/macro_f1_mean')} +- {m.get('cv/macro_f1_std')}; "
        + ", ".join(
            f"{key[3:-5]} {v} +- {m.get(key[:-5] + '_std')}"
            for key, v in m.items()
            if key.startswith("cv/recall/") and key.endswith("_mean")
        )
    )


if __name__ == "__main__":
    typer.run(main)
