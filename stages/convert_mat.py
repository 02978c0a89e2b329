"""Stage convert_mat: MAFA LabelTrainAll.mat / LabelTestAll.mat -> data/interim/mafa_{train,test}.csv."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from maskpipe import mafa
from maskpipe.download import SourceInfoError, dataset_enabled
from maskpipe.io import write_csv
from maskpipe.params import ParamsError, section
from maskpipe.settings import ConfigError


def main(
    raw: Path = typer.Option(Path("data/raw/mafa"), help="MAFA folder written by the download stage"),
    out: Path = typer.Option(Path("data/interim"), help="where mafa_train.csv / mafa_test.csv go"),
    params: Path = typer.Option(Path("params.yaml"), help="parameters file"),
) -> None:
    started = time.perf_counter()
    try:
        cfg = mafa.ConvertMatConfig.from_mapping(section("convert_mat", params), "convert_mat")
    except (ParamsError, ConfigError) as exc:
        print(f"convert_mat: error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from None
    try:
        files = {"train": cfg.train_file, "test": cfg.test_file}
        variables = {"train": cfg.train_variable, "test": cfg.test_variable}
        frames, notes = mafa.convert(
            raw, files, variables, enabled=dataset_enabled(raw)
        )  # source.json from download
        for split, frame in frames.items():
            write_csv(out / f"mafa_{split}.csv", frame)
    except (mafa.MafaFormatError, SourceInfoError, ParamsError) as exc:
        print(f"convert_mat: error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    for note in notes:
        print(f"convert_mat: {note}")
    print(
        f"convert_mat: wrote {out}/mafa_train.csv, {out}/mafa_test.csv in {time.perf_counter() - started:.2f} s"
    )


if __name__ == "__main__":
    typer.run(main)
