"""The `maskpipe` command: predict on images / folders / videos, serve over HTTP, package for MLflow.

Settings come from params.yaml (`predict:` and the crop geometry of `crop:`) when run inside the
repository, else from built-in defaults; options override them.
"""

from __future__ import annotations

import json
import os
import sys
import warnings
from pathlib import Path

import typer

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Face-mask detection with the models of the maskpipe pipeline.",
)

MODEL_HELP = (
    "a model name (data/models/<name>/model.pt, else the registered MLflow model maskpipe-<name>), "
    "a model.pt path or folder, or a models:/ URI; default: the 3-class model ranked first "
    "in metrics/report.json"
)


def _fail(message: str) -> None:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(1)


def _model_or_default(model: str | None) -> str:
    """``model`` as given, else the report's best 3-class model (said on stderr)."""
    if model:
        return model
    from maskpipe.default_model import default_model
    from maskpipe.paths import repo_root

    choice = default_model(repo_root())
    typer.echo(f"maskpipe: no --model given; using {choice.describe()}", err=True)
    return choice.model


def _settings(**overrides):
    from maskpipe.predict import PredictSettings

    return PredictSettings.from_repo(**overrides)


def _user_errors() -> tuple[type[BaseException], ...]:
    from maskpipe.detect import DetectorUnavailable
    from maskpipe.dlib_models import DlibUnavailable
    from maskpipe.imaging import ImageReadError
    from maskpipe.params import ParamsError
    from maskpipe.predict import PredictError

    return (
        PredictError,
        ImageReadError,
        DetectorUnavailable,
        DlibUnavailable,
        ParamsError,
        ValueError,
        OSError,
    )


@app.command()
def predict(
    path: Path = typer.Argument(..., help="an image, a folder of images (searched recursively) or a video"),
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    output: Path | None = typer.Option(None, "--output", "-o", help="write the full results as JSON here"),
    save_viz: Path | None = typer.Option(None, "--save-viz", help="folder for annotated images / video"),
    detector: str | None = typer.Option(
        None, help="retinaface | mtcnn | dlib_hog | dlib_cnn (default: params predict.detector)"
    ),
    upsample: int | None = typer.Option(None, help="dlib detectors: image doublings before detection"),
    every_n_frames: int | None = typer.Option(
        None, "--every-n-frames", help="video: classify every N-th frame"
    ),
    batch_size: int | None = typer.Option(None, help="images per batch"),
    threads: int = typer.Option(2, help="CPU threads for the classifier"),
    quiet: bool = typer.Option(False, "--quiet", "-q", help="print only the summary line"),
) -> None:
    """Find faces and classify each: label, confidence and all class probabilities per face.

    In a folder, a file that cannot be used gets an error line naming it and the others are
    still predicted and written; files that are not images are listed as skipped. The exit
    status is 0 whenever the run got that far (the summary line counts errors and skips), 1 for
    an unusable model, settings or input path.
    """
    try:
        import torch

        torch.set_num_threads(max(1, threads))
        from maskpipe.io import write_json
        from maskpipe.predict import Predictor, predict_path, report_lines
        from maskpipe.video import TruncatedVideoWarning

        settings = _settings(
            detector=detector, upsample=upsample, video_every_n_frames=every_n_frames, batch_size=batch_size
        )
        predictor = Predictor.from_model(_model_or_default(model), settings)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", TruncatedVideoWarning)  # in the report, printed below
            report = predict_path(path, predictor, viz_dir=save_viz, every_n=every_n_frames)
    except _user_errors() as exc:
        _fail(str(exc))
    lines = report_lines(report)
    for line in lines[-1:] if quiet else lines:
        typer.echo(line)
    for entry in report["inputs"]:
        for warning in entry.get("warnings") or []:
            typer.echo(f"warning: {entry['source']}: {warning}", err=True)
    if output is not None:
        write_json(output, report)
        typer.echo(f"results: {output}", err=True)
    if save_viz is not None:
        typer.echo(f"annotated: {save_viz}", err=True)


@app.command()
def serve(
    model: str | None = typer.Option(None, "--model", "-m", help=MODEL_HELP),
    host: str | None = typer.Option(None, help="interface to bind (default 127.0.0.1: this machine only)"),
    port: int | None = typer.Option(None, help="port (default: params predict.serve.port, 8000)"),
    max_body_mb: float | None = typer.Option(None, help="largest accepted upload in MB"),
    detector: str | None = typer.Option(None, help="retinaface | mtcnn | dlib_hog | dlib_cnn"),
    threads: int = typer.Option(2, help="CPU threads for the classifier"),
    workers: int | None = typer.Option(
        None, help="decode/predict threads (default: params predict.serve.workers, 2)"
    ),
) -> None:
    """Serve the model over HTTP: a web page at /, POST /predict, GET /health."""
    try:
        import torch

        torch.set_num_threads(max(1, threads))
        from maskpipe.predict import Predictor, PredictSettings, repo_params
        from maskpipe.serve import ServeSettings
        from maskpipe.serve import serve as run_server

        params = repo_params()  # read once, for the serve and the predict settings alike
        predict_cfg = params.get("predict") or {}
        serve_settings = ServeSettings.from_params(
            predict_cfg.get("serve"), host=host, port=port, max_body_mb=max_body_mb, workers=workers
        )
        settings = PredictSettings.from_params(predict_cfg, params.get("crop"), detector=detector)
        predictor = Predictor.from_model(_model_or_default(model), settings)
    except _user_errors() as exc:
        _fail(str(exc))
    if serve_settings.host not in ("127.0.0.1", "localhost", "::1"):
        typer.echo(f"warning: listening on {serve_settings.host}: reachable from other machines", err=True)
    typer.echo(
        f"maskpipe: serving {predictor.meta['model_name']} on http://{serve_settings.host}:{serve_settings.port}/",
        err=True,
    )
    run_server(predictor, serve_settings)


@app.command()
def package(
    model: str = typer.Argument(..., help=MODEL_HELP),
    name: str | None = typer.Option(None, help="registered model name (default maskpipe-<model name>)"),
) -> None:
    """Log a trained model as one MLflow pyfunc model (detector + preprocessing + labels) and register it.

    Logged into the model's training run when data/models/<model>/mlflow_run.json names one.
    Serve it with: mlflow models serve -m models:/maskpipe-<model>/latest --env-manager local
    """
    try:
        from maskpipe import tracking
        from maskpipe.predict import resolve_model
        from maskpipe.pyfunc import log_pyfunc_model
        from maskpipe.training.artifact import read_artifact

        path, _ = resolve_model(model)
        model_name = read_artifact(path)["model_name"]
        registered = name or f"maskpipe-{model_name}"
        with tracking.model_run(path.parent, run_name=f"package/{model_name}"):
            info = log_pyfunc_model(path, registered)
    except _user_errors() as exc:
        _fail(str(exc))
    typer.echo(f"registered {registered} version {info.registered_model_version} ({info.model_uri})")
    typer.echo(
        f"serve: mlflow models serve -m models:/{registered}/latest --env-manager local -h 127.0.0.1 -p 5001"
    )


@app.command()
def version() -> None:
    """Print the maskpipe version and the versions of the libraries it runs on."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as v

    out = {}
    for dist in (
        "maskpipe",
        "torch",
        "torchvision",
        "mlflow",
        "dvc",
        "dlib-bin",
        "facenet-pytorch",
        "fastapi",
    ):
        try:
            out[dist] = v(dist)
        except PackageNotFoundError:
            out[dist] = None
    typer.echo(json.dumps(out, indent=2))


def main() -> None:  # python -m maskpipe.cli
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    app()


if __name__ == "__main__":
    sys.exit(main())
