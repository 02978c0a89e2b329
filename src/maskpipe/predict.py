"""Prediction on whole pictures: detect faces, crop them like the crop stage, classify them.

    predictor = Predictor.from_model("mask_cnn")              # or a path / models:/ URI
    faces = predictor.predict_image(pil_image)                # list of face dicts
    report = predict_path(Path("photos/"), predictor)          # image, folder or video

The parts, one job each (this module keeps their public names importable):

    predict_settings.py  params `predict:` (typed) and the resolved PredictSettings
    predict_models.py    --model -> model.pt (paths, data/models/, the MLflow registry)
    predictor.py         Predictor: detector + crop geometry (crop_geometry.py) + classifier
    decode.py            uploaded bytes -> RGB, with the pixel cap
    draw.py              boxes and labels drawn on a picture
    predict_folder.py    folders: what is in them, batches, per-file errors
    video.py             videos: every n-th frame, annotated copy, truncation warnings
    predict_report.py    face dicts, the summary and the text lines of the CLI
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from maskpipe.decode import ImageTooLarge, NotAnImage, decode_image
from maskpipe.draw import LABEL_COLORS, annotate
from maskpipe.imaging import IMAGE_EXTENSIONS, is_image_file, not_regular_reason
from maskpipe.labels import ANOMALY
from maskpipe.predict_errors import PredictError
from maskpipe.predict_folder import image_files, predict_images_in, scan_folder
from maskpipe.predict_models import resolve_model
from maskpipe.predict_report import format_face, report_lines, summarize
from maskpipe.predict_settings import PredictConfig, PredictSettings, repo_params
from maskpipe.predictor import Predictor
from maskpipe.video import VIDEO_EXTENSIONS, is_video_file, predict_video

__all__ = [
    "ANOMALY",
    "LABEL_COLORS",
    "VIDEO_EXTENSIONS",
    "ImageTooLarge",
    "NotAnImage",
    "PredictConfig",
    "PredictError",
    "PredictSettings",
    "Predictor",
    "annotate",
    "decode_image",
    "format_face",
    "image_files",
    "is_video_file",
    "predict_images_in",
    "predict_path",
    "predict_video",
    "repo_params",
    "report_lines",
    "resolve_model",
    "summarize",
]


def predict_path(
    path: str | os.PathLike,
    predictor: Predictor,
    viz_dir: str | os.PathLike | None = None,
    every_n: int | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """The report for an image, a folder of images (recursively) or a video.

    In a folder, a file that cannot be used gets an ``error`` entry naming it and the others
    still get their results (and pictures); files that are not images are listed in ``skipped``.
    """
    path = Path(path)
    viz = Path(viz_dir) if viz_dir is not None else None
    if not path.exists():
        raise PredictError(f"{path}: not found")
    if not path.is_dir() and not_regular_reason(path):  # a FIFO / device would block the open forever
        raise PredictError(f"{path}: {not_regular_reason(path)}")
    skipped: list[dict[str, str]] = []
    if path.is_dir():
        scan = scan_folder(path)
        skipped = scan.skipped
        if not scan.images:
            kinds = ", ".join(sorted({s["kind"] for s in skipped})) or "nothing"
            raise PredictError(f"{path}: no image files in this folder (found: {kinds})")
        inputs = predict_images_in(scan.images, predictor, root=path, viz_dir=viz, progress=progress)
    elif is_video_file(path):
        target = viz / f"{path.stem}.annotated.mp4" if viz is not None else None
        inputs = [predict_video(path, predictor, every_n=every_n, viz_path=target, progress=progress)]
    elif is_image_file(path):
        inputs = predict_images_in([path], predictor, root=path.parent, viz_dir=viz, progress=False)
        if inputs[0]["error"]:
            raise PredictError(inputs[0]["error"])
    else:
        raise PredictError(
            f"{path}: not an image ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
            f"or video ({', '.join(sorted(VIDEO_EXTENSIONS))})"
        )
    return {
        "model": predictor.describe(),
        "settings": predictor.settings.to_dict(),
        "inputs": inputs,
        "skipped": skipped,
        "summary": summarize(inputs, skipped),
    }
