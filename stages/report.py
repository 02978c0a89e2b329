"""DVC stage `report`: python stages/report.py MODEL [MODEL ...]

-> metrics/report.md and metrics/report.json: a leaderboard across the models, the test-set
   sizes and the params that differ between models.
"""

from __future__ import annotations

from pathlib import Path
from typing import List

import typer

from maskpipe.io import write_json, write_text
from maskpipe.params import ParamsError, section


def main(
    models: List[str] = typer.Argument(..., help="model names to compare"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    metrics_dir: Path = typer.Option(Path("metrics"), help="folder of <model>.json"),
    plots_dir: Path = typer.Option(Path("metrics/plots"), help="folder of <model>/eval/summary.json"),
    out_md: Path = typer.Option(Path("metrics/report.md"), help="markdown report"),
    out_json: Path = typer.Option(Path("metrics/report.json"), help="JSON report"),
) -> None:
    from maskpipe.evaluation.report import ReportConfig, ReportError, build_report, load_results
    from maskpipe.settings import ConfigError

    try:
        cfg = ReportConfig.from_mapping(section("report", params), "report")
    except (ParamsError, ConfigError) as exc:
        typer.echo(f"report: {exc}", err=True)
        raise typer.Exit(2)
    try:
        results = load_results(models, metrics_dir, plots_dir)
        primary = cfg.primary_metric
        md, data = build_report(results, primary, primary in cfg.lower_is_better, cfg.columns)
    except (ParamsError, ReportError) as exc:
        typer.echo(f"report: {exc}", err=True)
        raise typer.Exit(1)
    write_text(out_md, md)
    write_json(out_json, data)
    best = data["leaderboard"][0]
    typer.echo(f"report: {len(results)} models, best by {primary}: {best['model']} ({best['primary']}) -> {out_md}")


if __name__ == "__main__":
    typer.run(main)
