"""Stage synthesize: MaskTheFace-style masks on unmasked face crops -> data/synthetic/.

Reads data/crops/index.csv (without_mask faces of the datasets in synthesize.sources)
and the MaskTheFace templates in data/raw/masktheface; writes
data/synthetic/{with_mask,mask_weared_incorrect,masks}/*.png, index.csv, skipped.csv,
metrics/synthesis.json and the preview grid metrics/plots/synthesis_preview.png.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import typer

from maskpipe.imaging import ImageReadError
from maskpipe.io import write_json
from maskpipe.params import ParamsError, load_params
from maskpipe.synth.preview import write_preview
from maskpipe.synth.synthesize import Settings, SynthesisError, run_synthesis, synthesis_metrics
from maskpipe.synth.templates import TemplateError


def main(
    crops: Path = typer.Option(Path("data/crops/index.csv"), help="crop index written by the crop stage"),
    templates: Path = typer.Option(
        Path("data/raw/masktheface"), help="MaskTheFace folder (masks.cfg, templates/, textures/)"
    ),
    out: Path = typer.Option(Path("data/synthetic"), help="output folder (replaced as a whole)"),
    metrics: Path = typer.Option(Path("metrics/synthesis.json"), help="counts"),
    preview: Path = typer.Option(Path("metrics/plots/synthesis_preview.png"), help="preview grid"),
    params: Path = typer.Option(Path("params.yaml"), help="parameters file"),
) -> None:
    started = time.perf_counter()
    try:
        all_params = load_params(params)
        if "synthesize" not in all_params:
            raise ParamsError(f"{params}: missing section 'synthesize'")
        settings = Settings.from_params(
            all_params["synthesize"] or {}, all_params.get("seed", 0), f"{params} synthesize"
        )
        result = run_synthesis(crops, templates, out, settings, base=Path.cwd())
        summary = synthesis_metrics(result)
        write_json(metrics, summary)
        title = (
            f"synthesize: {summary['written']} of {summary['faces_in']} faces masked "
            f"({summary['by_label'].get('with_mask', 0)} with_mask, "
            f"{summary['by_label'].get('mask_weared_incorrect', 0)} incorrect), "
            f"landmark rate {summary['landmark_rate']:.1%}, {summary['skipped']} skipped"
        )
        write_preview(result.records, Path.cwd(), settings.preview_pairs, title, preview)
    except (SynthesisError, TemplateError, ParamsError, ImageReadError) as exc:
        print(f"synthesize: error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from None
    elapsed = time.perf_counter() - started
    print(
        f"synthesize: {summary['written']} images from {summary['faces_in']} faces "
        f"({summary['skipped']} skipped, see {out}/skipped.csv), landmark rate {summary['landmark_rate']:.1%}, "
        f"{summary['faces_in'] / max(elapsed, 1e-9):.1f} faces/s"
    )


if __name__ == "__main__":
    typer.run(main)
