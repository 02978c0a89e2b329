"""DVC stage resolve@<model>: what training and evaluating <model> read of params.yaml, resolved.

    python stages/resolve.py mask_cnn   ->   data/resolved/mask_cnn.json, data/resolved/mask_cnn.evaluate.json

The model's `models:` entry merged with the active profile (`train.profile`: its `all` and `<model>`
layers) and the seed, plus the `train:` section (maskpipe.training.config.training_inputs). train@<model>
depends on this file rather than on the whole of `profiles`, so `dvc exp run -S
profiles.cpu.mask_cnn.epochs=8` retrains mask_cnn alone: the other models' files come out byte-identical.
<model>.evaluate.json is the part of `evaluate:` that evaluate@<model> reads
(maskpipe.evaluation.config.evaluate_inputs): `dvc exp run -S evaluate.pretrained_knn=10` re-evaluates
the one-class model only, and a new extra set of one model re-evaluates that model.
"""

from __future__ import annotations

from pathlib import Path

import typer


def main(
    model: str = typer.Argument(..., help="a key of `models:` in params.yaml"),
    params_file: Path = typer.Option(Path("params.yaml"), help="parameters file"),
    out_dir: Path = typer.Option(
        Path("data/resolved"), help="writes <out_dir>/<model>.json and <out_dir>/<model>.evaluate.json"
    ),
) -> None:
    from maskpipe.evaluation.config import evaluate_inputs
    from maskpipe.io import write_json
    from maskpipe.params import ParamsError, load_params
    from maskpipe.settings import ConfigError
    from maskpipe.training.config import training_inputs

    try:
        params = load_params(params_file)
        inputs = training_inputs(params, model)
        evaluation = evaluate_inputs(params, model)
    except (ParamsError, ConfigError) as exc:  # a typo in params.yaml: one line, exit 2
        typer.echo(f"resolve@{model}: {exc}", err=True)
        raise typer.Exit(2) from None
    write_json(out_dir / f"{model}.json", inputs)
    write_json(out_dir / f"{model}.evaluate.json", evaluation)


if __name__ == "__main__":
    typer.run(main)
