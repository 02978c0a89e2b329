"""DVC stage `report`: python stages/report.py [MODEL ...]

-> metrics/report.md and metrics/report.json: a leaderboard across the models, the test-set
   sizes and the params that differ between models. The models are `report.models` in
   params.yaml (null = every model under `models:`), unless given on the command line.
"""

from __future__ import annotations

from pathlib import Path

import typer

from maskpipe.io import write_json, write_text
from maskpipe.params import ParamsError, load_params


def main(
    models: list[str] | None = typer.Argument(None, help="model names to compare (default: from params)"),
    params: Path = typer.Option(Path("params.yaml"), help="params file"),
    metrics_dir: Path = typer.Option(Path("metrics/models"), help="folder of <model>.json"),
    eval_dir: Path = typer.Option(Path("metrics/eval"), help="folder of <model>/summary.json"),
    wild_dir: Path = typer.Option(
        Path("metrics/wild"), help="folder of <model>.json (whole photos, when scored)"
    ),
    out_md: Path = typer.Option(Path("metrics/report.md"), help="markdown report"),
    out_json: Path = typer.Option(Path("metrics/report.json"), help="JSON report"),
) -> None:
    from maskpipe.evaluation.report import (
        ReportConfig,
        ReportError,
        build_report,
        load_results,
        report_models,
    )
    from maskpipe.settings import ConfigError

    try:
        all_params = load_params(params)
        cfg = ReportConfig.from_mapping(all_params.get("report"), "report")
        names = models or report_models(cfg.models, list(all_params.get("models") or {}))
    except (ParamsError, ConfigError, ReportError) as exc:
        typer.echo(f"report: {exc}", err=True)
        raise typer.Exit(2) from None
    try:
        results = load_results(names, metrics_dir, eval_dir, wild_dir)
        primary = cfg.primary_metric
        md, data = build_report(results, primary, primary in cfg.lower_is_better, cfg.columns)
    except (ParamsError, ReportError) as exc:
        typer.echo(f"report: {exc}", err=True)
        raise typer.Exit(1) from None
    write_text(out_md, md)
    write_json(out_json, data)
    best = data["leaderboard"][0]
    typer.echo(
        f"report: {len(results)} models, best by {primary}: {best['model']} ({best['primary']}) -> {out_md}"
    )


if __name__ == "__main__":
    typer.run(main)
