"""DVC stage `download`: python stages/download.py NAME  ->  data/raw/NAME/ (+ source.json)."""

from __future__ import annotations

from pathlib import Path

import typer

from maskpipe.download import DatasetConfigError, DatasetUnavailable, fetch_dataset
from maskpipe.params import ParamsError, section


def main(
    name: str = typer.Argument(..., help="dataset name, a key of params.yaml `datasets:`"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    out: Path | None = typer.Option(None, help="output folder (default data/raw/NAME)"),
) -> None:
    try:
        datasets = section("datasets", params)
        if not isinstance(datasets, dict) or name not in datasets:
            known = ", ".join(sorted(datasets)) if isinstance(datasets, dict) else "none"
            raise DatasetConfigError(f"{params}: no dataset '{name}' under datasets: (known: {known})")
        info = fetch_dataset(name, datasets[name], out or Path("data/raw") / name)
    except (ParamsError, DatasetConfigError) as exc:  # a params.yaml problem: one line, exit 2
        typer.echo(f"download: {exc}", err=True)
        raise typer.Exit(2) from None
    except DatasetUnavailable as exc:
        typer.echo(f"download: {exc}", err=True)
        raise typer.Exit(1) from None
    if not info["enabled"]:
        typer.echo(f"{name}: disabled (enable with: dvc exp run -S datasets.{name}.enabled=true)")
        return
    failed = [a for a in info["tried"] if not a["ok"]]
    note = f" after {len(failed)} failed source(s), see source.json" if failed else ""
    typer.echo(
        f"{name}: {info['files']} files, {info['bytes'] / 1e6:.1f} MB from {info['source']['spec']}"
        f"{note} ({info['checksum'][:19]}...)"
    )


if __name__ == "__main__":
    typer.run(main)
