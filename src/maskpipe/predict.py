"""Prediction on whole pictures: detect faces, crop them like the crop stage, classify them.

    predictor = Predictor.from_model("mask_cnn")              # or a path / models:/ URI
    faces = predictor.predict_image(pil_image)                # list of face dicts (below)
    report = predict_path(Path("photos/"), predictor)          # image, folder or video

A face dict (the JSON of `maskpipe predict`, `maskpipe serve` and the MLflow pyfunc model):

    {"box": [xmin, ymin, xmax, ymax],          # face box in image pixels (detector, calibrated)
     "padded_box": [...],                      # the region classified (crop stage padding)
     "detector_score": 0.998,
     "label": "with_mask", "confidence": 0.93,
     "probabilities": {"with_mask": 0.93, "without_mask": 0.05, ...}}

One-class (autoencoder) models have no class probabilities: ``label`` is the trained class when
the reconstruction error is at most the threshold (the ``threshold_percentile``-th percentile
of the training errors stored in the artifact) and ``anomaly`` otherwise; ``confidence`` is
null and ``anomaly_score`` / ``threshold`` are given instead.
"""

from __future__ import annotations

import atexit
import io
import os
import shutil
import tempfile
import warnings
from collections import Counter
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from maskpipe.detect import DetectorSettings, get_detector
from maskpipe.imaging import IMAGE_EXTENSIONS, ImageReadError, is_image_file, open_rgb, to_rgb

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"}
ANOMALY = "anomaly"
LABEL_COLORS = {
    "with_mask": (34, 160, 70),
    "without_mask": (215, 40, 40),
    "mask_weared_incorrect": (240, 150, 0),
    ANOMALY: (150, 60, 200),
}


class PredictError(ValueError):
    """A user-facing problem (missing model, unusable input); the message says what to do."""


class ImageTooLarge(ImageReadError):
    """An image over the pixel limit (a 413 in the HTTP app)."""


class NotAnImage(ImageReadError):
    """Bytes in no image format Pillow knows (a 415 in the HTTP app)."""


# ------------------------------------------------------------------------------ settings
def repo_params(params_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """params.yaml as a dict: ``params_path``, else the workspace's, else the repo root's; {} if none."""
    from maskpipe.params import load_params
    from maskpipe.paths import repo_root

    # the workspace's params first: under `dvc exp run --temp` that is the experiment's copy
    local = Path("params.yaml")
    path = Path(params_path) if params_path else (local if local.is_file() else repo_root() / "params.yaml")
    return load_params(path) if path.is_file() else {}


@dataclass(frozen=True)
class PredictSettings:
    """params.yaml `predict:` plus the crop geometry of `crop:` (padding, size, resize).

    The crop geometry must match what the models were trained on, so it is read from the crop
    section, not repeated here; a packaged pyfunc model stores the settings it was built with.
    """

    detector: DetectorSettings = field(default_factory=DetectorSettings)
    padding: float = 0.10
    crop_size: int = 256
    resize: str = "stretch"
    batch_size: int = 32
    video_every_n_frames: int = 10
    max_pixels: int = 40_000_000
    threshold_percentile: int = 75

    @classmethod
    def from_params(cls, predict_cfg: dict[str, Any] | None = None,
                    crop_cfg: dict[str, Any] | None = None, **overrides: Any) -> "PredictSettings":
        p, c = dict(predict_cfg or {}), dict(crop_cfg or {})
        det = {k: p[k] for k in ("detector", "upsample", "min_face", "min_score", "calibrate") if k in p}
        det.update({k: v for k, v in overrides.items() if k in ("detector", "upsample", "min_face", "min_score")
                    and v is not None})
        values = {
            "padding": float(c.get("padding", cls.padding)),
            "crop_size": int(c.get("size", cls.crop_size)),
            "resize": str(c.get("resize", cls.resize)),
            "batch_size": int(p.get("batch_size", cls.batch_size)),
            "video_every_n_frames": int(p.get("video_every_n_frames", cls.video_every_n_frames)),
            "max_pixels": int(p.get("max_pixels", cls.max_pixels)),
            "threshold_percentile": int(p.get("threshold_percentile", cls.threshold_percentile)),
        }
        values.update({k: v for k, v in overrides.items() if k in values and v is not None})
        settings = cls(detector=DetectorSettings.from_params(det), **values)
        settings.validate()
        return settings

    @classmethod
    def from_repo(cls, params_path: str | os.PathLike | None = None, **overrides: Any) -> "PredictSettings":
        """Settings from params.yaml (the repo's, when there is one), else the defaults."""
        params = repo_params(params_path)
        return cls.from_params(params.get("predict"), params.get("crop"), **overrides)

    def validate(self) -> None:
        if self.batch_size < 1:
            raise PredictError(f"batch_size must be >= 1, got {self.batch_size}")
        if self.video_every_n_frames < 1:
            raise PredictError(f"video_every_n_frames must be >= 1, got {self.video_every_n_frames}")
        if not 0 <= self.threshold_percentile <= 100:
            raise PredictError(f"threshold_percentile must be 0..100, got {self.threshold_percentile}")
        if self.max_pixels < 1:
            raise PredictError(f"max_pixels must be >= 1, got {self.max_pixels}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "PredictSettings":
        data = dict(data)
        det = DetectorSettings(**data.pop("detector", {}))
        return cls(detector=det, **data)

    def crop_settings(self):
        from maskpipe.crop import CropSettings

        # from_params validates (e.g. an unknown resize mode would otherwise silently letterbox)
        return CropSettings.from_params({"padding": self.padding, "size": self.crop_size, "resize": self.resize})


# ------------------------------------------------------------------------------ models
def resolve_model(spec: str | os.PathLike) -> tuple[Path, str]:
    """Find the model.pt for ``--model``; returns (path, where it came from).

    Accepted, in this order:
    1. a path: a model.pt file, a folder holding model.pt (data/models/<m>/), or a packaged
       pyfunc model folder (its artifacts/model.pt);
    2. ``models:/<name>/<version|latest>`` or ``runs:/<id>/<path>``: downloaded from the MLflow
       store of maskpipe.tracking.tracking_uri();
    3. a model name: ``data/models/<name>/model.pt`` in the repo when it exists (the DVC output
       of train@<name>), else the registered model ``maskpipe-<name>`` (or ``<name>``), latest version.
    """
    from maskpipe.paths import repo_root

    text = str(spec)
    path = Path(os.path.expanduser(text))
    if path.exists():
        found = _model_file_in(path)
        if found is None:
            raise PredictError(f"{path}: no model.pt there (expected data/models/<model>/model.pt)")
        return found, str(path)
    if text.startswith(("models:/", "runs:/")):
        return _download_model(text), text
    if "/" not in text and "\\" not in text:
        local = repo_root() / "data" / "models" / text / "model.pt"
        if local.is_file():
            return local, str(local)
        names = [text] if text.startswith("maskpipe-") else [f"maskpipe-{text}", text]
        for name in names:
            if _registered(name):
                uri = f"models:/{name}/latest"
                return _download_model(uri), uri
    local_models = sorted(p.parent.name for p in (repo_root() / "data" / "models").glob("*/model.pt"))
    hint = f"local models: {', '.join(local_models)}" if local_models else "no trained models in data/models/"
    raise PredictError(f"model {text!r} not found as a path, in data/models/ or in the MLflow registry ({hint}); "
                       "train one with `dvc repro train@<model>`")


def _model_file_in(path: Path) -> Path | None:
    if path.is_file():
        return path
    for candidate in (path / "model.pt", path / "artifacts" / "model.pt"):
        if candidate.is_file():
            return candidate
    found = sorted(path.rglob("model.pt"))
    return found[0] if found else None


def _registered(name: str) -> bool:
    from maskpipe import tracking

    tracking_db = tracking.tracking_uri()
    if tracking_db.startswith("sqlite:///") and not Path(tracking_db[len("sqlite:///"):]).is_file():
        return False  # no store yet: do not create an empty mlflow.db as a side effect
    mlflow = tracking.configure()
    try:
        return bool(mlflow.MlflowClient().search_model_versions(f"name = '{name}'", max_results=1))
    except Exception:
        return False


def _download_model(uri: str) -> Path:
    from maskpipe import tracking

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # a few small files
    mlflow = tracking.configure()
    dst = Path(tempfile.mkdtemp(prefix="maskpipe-model-"))
    atexit.register(shutil.rmtree, dst, ignore_errors=True)  # the model is loaded by then
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(dst)))
    except Exception as exc:
        raise PredictError(f"{uri}: cannot fetch from the MLflow store {tracking.tracking_uri()} ({exc})") from exc
    found = _model_file_in(local)
    if found is None:
        raise PredictError(f"{uri}: the MLflow model has no model.pt (log it with maskpipe.pyfunc.log_pyfunc_model)")
    return found


# ------------------------------------------------------------------------------ images
def decode_image(data: bytes, max_pixels: int | None = None, name: str = "upload") -> Image.Image:
    """Bytes -> RGB (EXIF orientation applied, fully decoded), like imaging.open_rgb for files.

    Raises ImageTooLarge over ``max_pixels`` (checked from the header, before decoding) and
    ImageReadError for anything that is not a complete image.
    """
    if not data:
        raise NotAnImage(f"{name}: empty file")
    try:
        with warnings.catch_warnings():
            # our own limit applies; PIL's bomb warning (at ~89 Mpx) is no error
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as img:
                if max_pixels and img.width * img.height > max_pixels:
                    raise ImageTooLarge(f"{name}: {img.width}x{img.height} exceeds the {max_pixels} pixel limit")
                img.load()
                return to_rgb(ImageOps.exif_transpose(img))
    except ImageReadError:
        raise
    except Image.DecompressionBombError as exc:
        raise ImageTooLarge(f"{name}: {exc}") from exc
    except UnidentifiedImageError as exc:
        raise NotAnImage(f"{name}: not an image (no known image format)") from exc
    except Exception as exc:
        raise ImageReadError(f"{name}: not a readable image ({exc.__class__.__name__}: {exc})") from exc


def annotate(img: Image.Image, faces: Sequence[dict]) -> Image.Image:
    """A copy of the image with each face's box and ``label confidence`` drawn on it."""
    out = to_rgb(img).copy()
    draw = ImageDraw.Draw(out)
    line = max(2, round(min(out.size) / 200))
    font_size = max(11, round(min(out.size) / 28))
    try:
        font = ImageFont.load_default(size=font_size)
    except TypeError:  # Pillow without FreeType
        font = ImageFont.load_default()
    for face in faces:
        x0, y0, x1, y1 = face["box"]
        color = LABEL_COLORS.get(face["label"], (40, 110, 230))
        draw.rectangle([x0, y0, x1, y1], outline=color, width=line)
        conf = face.get("confidence")
        text = face["label"] if conf is None else f"{face['label']} {conf:.2f}"
        tb = draw.textbbox((0, 0), text, font=font)
        tw, th = tb[2] - tb[0], tb[3] - tb[1]
        ty = y0 - th - 4 if y0 - th - 4 >= 0 else min(y1 + 1, out.height - th - 4)
        tx = min(max(0, x0), max(0, out.width - tw - 4))
        draw.rectangle([tx, ty, tx + tw + 4, ty + th + 4], fill=color)
        draw.text((tx + 2 - tb[0], ty + 2 - tb[1]), text, fill=(255, 255, 255), font=font)
    return out


# ------------------------------------------------------------------------------ predictor
class Predictor:
    """Detector + crop geometry + classifier: whole pictures in, face dicts out."""

    def __init__(self, model, meta: dict, settings: PredictSettings | None = None, source: str = ""):
        self.model, self.meta = model, meta
        self.settings = settings or PredictSettings()
        self.source = source
        self.classes = list(meta["classes"])
        from maskpipe.training.tasks import get_task  # the task registry: scores -> labels

        self.task = get_task(meta["task"])
        try:  # one-class: the model's own operating point (models.<m>.threshold_percentile)
            self.threshold: float | None = self.task.threshold(meta)
        except ValueError as exc:
            raise PredictError(f"{source or meta.get('model_name')}: {exc}") from exc
        self.detector = get_detector(self.settings.detector)
        self._crop = self.settings.crop_settings()

    @classmethod
    def from_model(cls, spec: str | os.PathLike, settings: PredictSettings | None = None) -> "Predictor":
        path, source = resolve_model(spec)
        return cls.from_path(path, settings, source=source)

    @classmethod
    def from_path(cls, path: str | os.PathLike, settings: PredictSettings | None = None,
                  source: str | None = None) -> "Predictor":
        from maskpipe.training.artifact import ArtifactError, load_model  # torch.load(weights_only=True)

        try:
            model, meta = load_model(path, device="cpu")
        except ArtifactError as exc:
            raise PredictError(str(exc)) from exc
        return cls(model, meta, settings, source=source or str(path))

    def describe(self) -> dict[str, Any]:
        info = {k: self.meta.get(k) for k in ("model_name", "arch", "task", "classes", "image_size", "epoch",
                                                "best_metric", "best_metric_name")}
        info["source"] = self.source
        if self.threshold is not None:
            info["threshold"] = self.threshold
            info["threshold_percentile"] = self.meta["params"]["threshold_percentile"]
        return info

    # -- core
    def classify(self, crops: Sequence[Image.Image]) -> list[dict[str, Any]]:
        """Label, confidence and probabilities for face crops (already padded and resized)."""
        from maskpipe.training.predict import predict_proba
        from maskpipe.training.transforms import preprocess

        out: list[dict[str, Any]] = []
        size, mean, std = int(self.meta["image_size"]), self.meta["mean"], self.meta["std"]
        for start in range(0, len(crops), self.settings.batch_size):
            batch = preprocess(list(crops[start:start + self.settings.batch_size]), size, mean, std)
            scores = predict_proba(self.model, self.meta, batch)
            for row in scores:
                out.append(self._face_fields(row))
        return out

    def _face_fields(self, row: np.ndarray) -> dict[str, Any]:
        label = self.task.labels(row[None, :], self.classes, self.threshold)[0]
        if not self.task.probabilities:
            error = float(row[0])
            return {"label": label, "confidence": None, "probabilities": {},
                    "anomaly_score": round(error, 6), "threshold": round(self.threshold, 6)}
        best = int(np.argmax(row))
        return {"label": label, "confidence": round(float(row[best]), 4),
                "probabilities": {c: round(float(p), 4) for c, p in zip(self.classes, row)}}

    def predict_images(self, images: Sequence[Image.Image]) -> list[list[dict[str, Any]]]:
        """Faces per image; the crops of all images are classified in shared batches."""
        from maskpipe.crop import crop_face

        per_image: list[list[dict[str, Any]]] = []
        crops: list[Image.Image] = []
        for img in images:
            img = to_rgb(img)
            faces = []
            for det in self.detector(img):
                crop, pad = crop_face(img, det.box, self._crop)
                crops.append(crop)
                faces.append({"box": [int(round(v)) for v in det.box], "padded_box": list(pad),
                              "detector_score": round(det.score, 4)})
            per_image.append(faces)
        labels = iter(self.classify(crops))
        for faces in per_image:
            for face in faces:
                face.update(next(labels))
        return per_image

    def predict_image(self, img: Image.Image) -> list[dict[str, Any]]:
        return self.predict_images([img])[0]


# ------------------------------------------------------------------------------ inputs
def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def image_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.rglob("*") if p.is_file() and is_image_file(p)), key=lambda p: str(p))


def _viz_target(viz_dir: Path, rel: Path) -> Path:
    # keep the name; PIL cannot write every format it reads
    return viz_dir / (rel if rel.suffix.lower() in {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
                      else rel.with_suffix(rel.suffix + ".png"))


def _save_image(img: Image.Image, target: Path) -> None:
    from maskpipe.io import atomic_path

    with atomic_path(target) as tmp:
        fmt = Image.registered_extensions().get(target.suffix.lower(), "PNG")
        img.save(tmp, format=fmt)


def predict_images_in(paths: Sequence[Path], predictor: Predictor, root: Path | None = None,
                      viz_dir: Path | None = None, progress: bool | None = None) -> list[dict[str, Any]]:
    """Results for image files in batches of ``batch_size`` images; unreadable files are
    reported (``error``) and skipped, never fatal."""
    from tqdm import tqdm

    results: list[dict[str, Any]] = []
    batch_size = predictor.settings.batch_size
    bar = tqdm(total=len(paths), unit="img", desc="predict", disable=None if progress is None else not progress)
    try:
        for start in range(0, len(paths), batch_size):
            chunk = paths[start:start + batch_size]
            loaded: list[tuple[Path, Image.Image]] = []
            for path in chunk:
                rel = path.relative_to(root) if root else Path(path.name)
                try:
                    loaded.append((path, open_rgb(path, max_pixels=predictor.settings.max_pixels)))
                except ImageReadError as exc:
                    results.append({"source": str(rel), "type": "image", "error": str(exc), "faces": []})
            for (path, img), faces in zip(loaded, predictor.predict_images([im for _, im in loaded])):
                rel = path.relative_to(root) if root else Path(path.name)
                entry = {"source": str(rel), "type": "image", "width": img.width, "height": img.height,
                         "faces": faces, "error": None}
                if viz_dir is not None:
                    target = _viz_target(viz_dir, rel)
                    _save_image(annotate(img, faces), target)
                    entry["visualization"] = str(target)
                results.append(entry)
            bar.update(len(chunk))
    finally:
        bar.close()
    order = {str(p.relative_to(root) if root else Path(p.name)): i for i, p in enumerate(paths)}
    return sorted(results, key=lambda r: order.get(r["source"], 0))


def _video_codec() -> str:
    import av

    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:
            continue
    raise PredictError("no H.264 or MPEG-4 encoder in this PyAV build; cannot write an annotated video")


def predict_video(path: Path, predictor: Predictor, every_n: int | None = None,
                  viz_path: Path | None = None, progress: bool | None = None) -> dict[str, Any]:
    """Faces in every ``every_n``-th frame (0, n, 2n, ...). With ``viz_path`` every frame is written
    to an annotated video, showing the latest sampled frame's boxes."""
    import av
    from tqdm import tqdm

    every_n = every_n or predictor.settings.video_every_n_frames
    try:
        container = av.open(str(path))
    except Exception as exc:
        raise PredictError(f"{path}: cannot open video ({exc.__class__.__name__}: {exc})") from exc
    frames: list[dict[str, Any]] = []
    out = ostream = None
    tmp_target = None
    try:
        if not container.streams.video:
            raise PredictError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        fps = float(rate)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > predictor.settings.max_pixels:
            raise PredictError(f"{path}: {width}x{height} frames exceed the {predictor.settings.max_pixels} pixel limit")
        if viz_path is not None:
            viz_path.parent.mkdir(parents=True, exist_ok=True)
            tmp_target = viz_path.with_name(f".{viz_path.stem}.tmp{viz_path.suffix or '.mp4'}")
            out = av.open(str(tmp_target), "w")
            ostream = out.add_stream(_video_codec(), rate=Fraction(rate).limit_denominator(1000))
            ostream.width, ostream.height = width - width % 2, height - height % 2  # yuv420p needs even sides
            ostream.pix_fmt = "yuv420p"
        last: list[dict[str, Any]] = []
        total = stream.frames or None
        bar = tqdm(total=total, unit="frame", desc=path.name, disable=None if progress is None else not progress)
        index = -1
        try:
            for index, frame in enumerate(container.decode(stream)):
                img = None
                if index % every_n == 0:
                    img = frame.to_image()
                    last = predictor.predict_image(img)
                    t = float(frame.time) if frame.time is not None else index / fps
                    frames.append({"frame": index, "time": round(t, 3), "faces": last})
                if out is not None:
                    img = img if img is not None else frame.to_image()
                    viz = annotate(img, last).crop((0, 0, ostream.width, ostream.height))
                    for packet in ostream.encode(av.VideoFrame.from_image(viz)):
                        out.mux(packet)
                bar.update(1)
        finally:
            bar.close()
        if out is not None:
            for packet in ostream.encode():
                out.mux(packet)
            out.close()
            out = None
            os.replace(tmp_target, viz_path)
        return {"source": str(path), "type": "video", "fps": round(fps, 3), "width": width, "height": height,
                "frames_total": index + 1, "every_n_frames": every_n, "frames": frames,
                "faces": sum(len(f["faces"]) for f in frames), "error": None,
                **({"visualization": str(viz_path)} if viz_path is not None else {})}
    except PredictError:
        raise
    except av.FFmpegError as exc:
        raise PredictError(f"{path}: cannot decode video ({exc})") from exc
    finally:
        container.close()
        if out is not None:
            out.close()
        if tmp_target is not None and tmp_target.exists():
            tmp_target.unlink()


def predict_path(path: str | os.PathLike, predictor: Predictor, viz_dir: str | os.PathLike | None = None,
                 every_n: int | None = None, progress: bool | None = None) -> dict[str, Any]:
    """The report for an image, a folder of images (recursively) or a video."""
    path = Path(path)
    viz = Path(viz_dir) if viz_dir is not None else None
    if not path.exists():
        raise PredictError(f"{path}: not found")
    if path.is_dir():
        files = image_files(path)
        if not files:
            raise PredictError(f"{path}: no image files in this folder")
        inputs = predict_images_in(files, predictor, root=path, viz_dir=viz, progress=progress)
    elif is_video_file(path):
        target = viz / f"{path.stem}.annotated.mp4" if viz is not None else None
        inputs = [predict_video(path, predictor, every_n=every_n, viz_path=target, progress=progress)]
    elif is_image_file(path):
        inputs = predict_images_in([path], predictor, root=path.parent, viz_dir=viz, progress=False)
        if inputs[0]["error"]:
            raise PredictError(inputs[0]["error"])
    else:
        raise PredictError(f"{path}: not an image ({', '.join(sorted(IMAGE_EXTENSIONS))}) "
                           f"or video ({', '.join(sorted(VIDEO_EXTENSIONS))})")
    return {"model": predictor.describe(), "settings": predictor.settings.to_dict(),
            "inputs": inputs, "summary": summarize(inputs)}


def _faces_of(entry: dict[str, Any]) -> Iterable[dict[str, Any]]:
    if entry.get("type") == "video":
        for frame in entry["frames"]:
            yield from frame["faces"]
    else:
        yield from entry.get("faces") or []


def summarize(inputs: Sequence[dict[str, Any]]) -> dict[str, Any]:
    labels = Counter(face["label"] for entry in inputs for face in _faces_of(entry))
    return {"inputs": len(inputs), "errors": sum(1 for e in inputs if e.get("error")),
            "faces": sum(labels.values()), "by_label": dict(sorted(labels.items()))}


def format_face(face: dict[str, Any]) -> str:
    box = ",".join(str(v) for v in face["box"])
    if face.get("confidence") is None:
        return f"box=({box})  {face['label']}  error={face['anomaly_score']:.5f} (threshold {face['threshold']:.5f})"
    probs = "  ".join(f"{c}={p:.3f}" for c, p in face["probabilities"].items())
    return f"box=({box})  {face['label']} {face['confidence']:.3f}  [{probs}]"


def report_lines(report: dict[str, Any]) -> list[str]:
    """Human-readable lines: one per face, one per input without faces."""
    lines = []
    for entry in report["inputs"]:
        if entry.get("error"):
            lines.append(f"{entry['source']}: ERROR {entry['error']}")
        elif entry["type"] == "video":
            lines.append(f"{entry['source']}: {entry['frames_total']} frames, {len(entry['frames'])} sampled "
                         f"(every {entry['every_n_frames']}), {entry['faces']} faces")
            for frame in entry["frames"]:
                for i, face in enumerate(frame["faces"], 1):
                    lines.append(f"  frame {frame['frame']} ({frame['time']:.2f}s) face {i}: {format_face(face)}")
        elif not entry["faces"]:
            lines.append(f"{entry['source']}: no faces found")
        else:
            for i, face in enumerate(entry["faces"], 1):
                lines.append(f"{entry['source']} face {i}: {format_face(face)}")
    s = report["summary"]
    by = ", ".join(f"{k} {v}" for k, v in s["by_label"].items()) or "none"
    lines.append(f"{s['inputs']} input(s), {s['faces']} face(s): {by}" + (f"; {s['errors']} unreadable" if s["errors"] else ""))
    return lines

