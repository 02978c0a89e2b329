"""DVC stage `evaluate_wild@<model>`: python stages/evaluate_wild.py MODEL

Detector + classifier on the whole Kaggle photos of the crop stage's test split, scored against
their annotated boxes (see maskpipe.evaluation.wild):
-> metrics/wild/MODEL.json (+ MODEL.details.json) and metrics/plots/MODEL/wild/ (pr_<class>.csv,
   pr_curves.png, photos.png). The detector and crop geometry are params.yaml `predict:` / `crop:`, as for
   `maskpipe predict`, so a detector change shows up here as a change in mAP. Its own section,
   `evaluate_wild:`, is read as maskpipe.evaluation.wild.EvaluateWildConfig (a bad key or value: exit 2).
"""

from __future__ import annotations

from pathlib import Path

import typer

from maskpipe.params import ParamsError, load_params


def main(
    model: str = typer.Argument(..., help="a 3-class model, listed in params.yaml evaluate_wild.models"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    models_dir: Path = typer.Option(Path("data/models"), help="folder of <model>/model.pt"),
    crops: Path = typer.Option(Path("data/crops/index.csv"), help="crop index (its split column)"),
    raw_dir: Path = typer.Option(Path("data/raw"), help="folder of <dataset>/ (the download stage's output)"),
    metrics_dir: Path = typer.Option(Path("metrics/wild"), help="where <model>.json goes"),
    plots_dir: Path = typer.Option(Path("metrics/plots"), help="where <model>/wild/ goes"),
) -> None:
    import torch

    from maskpipe.evaluation.wild import EvaluateWildConfig, WildError, evaluate_wild, split_photos
    from maskpipe.predict import PredictError, Predictor, PredictSettings
    from maskpipe.settings import ConfigError

    try:
        all_params = load_params(params)
        cfg = EvaluateWildConfig.from_mapping(all_params.get("evaluate_wild"), "evaluate_wild")
        settings = PredictSettings.from_params(all_params.get("predict"), all_params.get("crop"))
    except (ParamsError, ConfigError) as exc:  # a params value: exit 2, like a bad command-line option
        typer.echo(f"evaluate_wild: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        torch.set_num_threads(cfg.num_threads)
        photos = split_photos(crops, raw_dir / cfg.dataset, dataset=cfg.dataset, split=cfg.split)
        predictor = Predictor.from_path(models_dir / model / "model.pt", settings)
        m = evaluate_wild(
            model,
            predictor,
            photos,
            metrics_dir / f"{model}.json",
            plots_dir / model / "wild",
            iou_threshold=cfg.iou_threshold,
            grid_size=cfg.grid_size,
            batch_size=cfg.batch_size,
            details_path=metrics_dir / f"{model}.details.json",
        )
    except (WildError, PredictError, ValueError) as exc:
        typer.echo(f"evaluate_wild: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"{model} + {settings.detector.name} on {m['photos']} {cfg.split} photos ({m['faces']} faces): "
        f"mAP@0.5 {m['map50']}, detection recall {m['detection/recall']} precision "
        f"{m['detection/precision']}, matched faces labelled right {m['accuracy_matched']}"
    )


if __name__ == "__main__":
    typer.run(main)
