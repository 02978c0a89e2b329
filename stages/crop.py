"""Stage crop: every face of every enabled dataset -> data/crops/ (PNGs, index.csv with splits)
and a deterministic summary in metrics/data.json."""

from __future__ import annotations

import sys
from pathlib import Path

import typer

from maskpipe.crop import run_crop
from maskpipe.crop_config import CropConfig, SplitConfig
from maskpipe.crop_summary import format_summary
from maskpipe.io import write_json
from maskpipe.mafa import MafaFormatError
from maskpipe.params import ParamsError, load_params
from maskpipe.settings import ConfigError


def main(
    raw: Path = typer.Option(Path("data/raw"), help="datasets written by the download stage"),
    interim: Path = typer.Option(
        Path("data/interim"), help="mafa_train.csv / mafa_test.csv from convert_mat"
    ),
    out: Path = typer.Option(Path("data/crops"), help="output folder (replaced as a whole)"),
    metrics: Path = typer.Option(Path("metrics/data.json"), help="summary counts"),
    params: Path = typer.Option(Path("params.yaml"), help="parameters file"),
    workers: int = typer.Option(None, help="processes (default: crop.workers)"),
) -> None:
    try:
        all_params = load_params(params)
        for key in ("crop", "split", "datasets"):
            if key not in all_params:
                raise ParamsError(f"{params}: missing section '{key}'")
        # params first: a bad value stops the stage before any work, with its key named
        crop_cfg = CropConfig.from_mapping(all_params["crop"], "crop")
        split_cfg = SplitConfig.from_mapping(all_params["split"], "split")
        result = run_crop(
            raw,
            all_params["datasets"],
            crop_cfg,
            split_cfg,
            int(all_params.get("seed", 0)),
            interim,
            out,
            workers=workers,
            log=lambda msg: print(f"crop: {msg}", flush=True),
        )
    except ConfigError as exc:  # a params value: exit 2, like a bad command-line option
        print(f"crop: error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    except (ParamsError, MafaFormatError, ValueError) as exc:
        print(f"crop: error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    write_json(metrics, result.summary)
    print(format_summary(result.summary))
    print(
        f"crop: {len(result.index)} faces in {result.seconds:.1f} s ({result.faces_per_second:.1f} faces/s);"
        f" wrote {out}/index.csv, skipped.csv, duplicates.csv and {metrics}"
    )


if __name__ == "__main__":
    typer.run(main)
