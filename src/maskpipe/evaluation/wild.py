"""Whole-photo evaluation: detector + classifier on the Kaggle test-split photos, scored like a detector.

What a user runs (``maskpipe predict photo.png``) is scored against the annotated VOC boxes of the
photos the crop stage put in the **test** split (split by source image, so no face of these photos
was trained on):

- per-class AP and mAP at IoU 0.5: COCO's 101-point interpolated AP (pycocotools' COCOeval, the
  reference implementation; the issue's figures used 11-point VOC AP: not the same number). Scored
  the way detectors are (torchvision's detection models, YOLOv5's ``val.py --multi-label``): every
  found face is a candidate of every class, scored detector score x that class's probability, so a
  face the classifier is unsure about still ranks in the right class's list (``map50``). What
  ``maskpipe predict`` shows, one top label per face, is scored too (``map50_top_label``);
- detection recall / precision (class-agnostic, greedy one-to-one matching at IoU >= 0.5, the same
  rule as ``maskpipe.detect.detection_recall``) and recall by annotated face width;
- end-to-end accuracy: of the matched faces, the share labelled right (``accuracy_matched``), and
  of all annotated faces, the share found *and* labelled right (``labelled_right``).

Outputs: ``metrics/wild/<model>.json``, and in ``metrics/plots/<model>/wild/``: ``pr_<class>.csv``
(recall, precision: DVC plot data), ``pr_curves.png`` and ``photos.png`` (annotated test photos:
predictions in colour, annotated boxes in thin white).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from maskpipe.detect import SIZE_BUCKETS, iou, size_bucket
from maskpipe.settings import Section, option

Box = tuple[float, float, float, float]
KAGGLE = "kaggle_face_mask_detection"


@dataclass(frozen=True)
class EvaluateWildConfig(Section):
    """params.yaml `evaluate_wild:`."""

    models: list[str] = option(
        [], doc="3-class models scored, one stage each (dvc.yaml foreach); the stage is given one"
    )
    dataset: str = option(KAGGLE, doc="dataset whose photos (and VOC boxes) are scored")
    split: str = option("test", choices=("train", "val", "test"), doc="the crop stage's split of the photos")
    iou_threshold: float = option(0.5, gt=0, le=1, doc="a found face matches an annotated one at IoU >= this")
    grid_size: int = option(9, ge=1, doc="annotated photos in photos.png")
    batch_size: int = option(8, ge=1, doc="photos per predict batch")
    num_threads: int = option(2, ge=1, doc="torch threads")


class WildError(ValueError):
    """Missing or unusable input; the message names the file and the problem."""


@dataclass
class Photo:
    path: Path
    source_image: str
    boxes: list[Box] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ inputs
def _natural(text: str) -> tuple:
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text))


def _annotation_for(image: Path, root: Path) -> Path:
    for candidate in (root / "annotations" / f"{image.stem}.xml", image.with_suffix(".xml")):
        if candidate.is_file():
            return candidate
    found = sorted(root.rglob(f"{image.stem}.xml"))
    if not found:
        raise WildError(f"{image}: no VOC annotation {image.stem}.xml under {root}")
    return found[0]


def split_photos(
    crops_index: Path, raw_root: Path, dataset: str = KAGGLE, split: str = "test", limit: int | None = None
) -> list[Photo]:
    """The photos of ``dataset`` that the crop stage put in ``split``, with ALL their annotated boxes.

    The split comes from the crop index (one split per source image); the boxes come from the VOC
    file, so faces the crop stage skipped (e.g. too small to crop) still count as faces to find.
    """
    import pandas as pd

    from maskpipe.labels import normalize_label
    from maskpipe.voc import VocError, parse_voc

    crops_index, raw_root = Path(crops_index), Path(raw_root)
    try:
        index = pd.read_csv(crops_index, usecols=["dataset", "source_image", "split"])
    except FileNotFoundError as exc:
        raise WildError(f"{crops_index}: crop index not found (run `dvc repro crop`)") from exc
    except ValueError as exc:
        raise WildError(f"{crops_index}: not a crop index ({exc})") from exc
    names = sorted(
        set(index.loc[(index.dataset == dataset) & (index.split == split), "source_image"]), key=_natural
    )
    if not names:
        raise WildError(f"{crops_index}: no {dataset} photos in the {split!r} split")
    photos = []
    for name in names[:limit]:
        path = raw_root / name
        if not path.is_file():
            raise WildError(
                f"{path}: photo listed in {crops_index} is missing (run `dvc repro download@{dataset}`)"
            )
        try:
            ann = parse_voc(_annotation_for(path, raw_root))
        except VocError as exc:
            raise WildError(str(exc)) from exc
        photo = Photo(path, name)
        for obj in ann.objects:
            photo.boxes.append(tuple(float(v) for v in obj.box))
            photo.labels.append(normalize_label(obj.name))
        photos.append(photo)
    return photos


# ------------------------------------------------------------------------------ matching
def greedy_match(
    truth: Sequence[Box], predicted: Sequence[Box], iou_threshold: float = 0.5
) -> list[tuple[int, int]]:
    """(truth index, prediction index) pairs: highest IoU first, each box used once, IoU >= threshold."""
    pairs = sorted(
        ((iou(g, p), gi, pi) for gi, g in enumerate(truth) for pi, p in enumerate(predicted)), reverse=True
    )
    used_g: set[int] = set()
    used_p: set[int] = set()
    out = []
    for score, gi, pi in pairs:
        if score < iou_threshold:
            break
        if gi in used_g or pi in used_p:
            continue
        used_g.add(gi)
        used_p.add(pi)
        out.append((gi, pi))
    return out


def detection_stats(
    photos: Sequence[Photo], predictions: Sequence[Sequence[dict]], iou_threshold: float = 0.5
) -> dict[str, Any]:
    """Class-agnostic detection recall / precision, recall by face width, end-to-end label accuracy."""
    faces = detections = matched = right = 0
    buckets: dict[str, list[int]] = {}
    confusion: dict[str, dict[str, int]] = {}
    for photo, preds in zip(photos, predictions, strict=True):
        pairs = greedy_match(photo.boxes, [tuple(p["box"]) for p in preds], iou_threshold)
        found = {gi: pi for gi, pi in pairs}
        faces += len(photo.boxes)
        detections += len(preds)
        matched += len(pairs)
        for gi, (box, label) in enumerate(zip(photo.boxes, photo.labels, strict=True)):
            b = buckets.setdefault(size_bucket(box[2] - box[0]), [0, 0])
            b[0] += 1
            if gi in found:
                b[1] += 1
                got = preds[found[gi]]["label"]
                right += got == label
                row = confusion.setdefault(label, {})
                row[got] = row.get(got, 0) + 1
    order = [size_bucket(lo) for lo, _ in SIZE_BUCKETS]
    nan = float("nan")
    return {
        "faces": faces,
        "detections": detections,
        "matched": matched,
        "recall": matched / faces if faces else nan,
        "precision": matched / detections if detections else nan,
        "accuracy_matched": right / matched if matched else nan,
        "labelled_right": right / faces if faces else nan,
        "by_width": {
            k: {"faces": buckets[k][0], "recall": buckets[k][1] / buckets[k][0]}
            for k in order
            if k in buckets
        },
        "confusion_matched": confusion,  # annotated label -> predicted label -> count
    }


# ------------------------------------------------------------------------------ AP
def _score(pred: dict) -> float:
    conf = pred.get("confidence")
    return float(pred.get("detector_score", 1.0)) * (1.0 if conf is None else float(conf))


SCORINGS = ("per_class", "top_label")


def _candidates(face: dict, scoring: str) -> list[tuple[str, float]]:
    """(class, score) pairs one found face contributes to the AP lists."""
    probabilities = face.get("probabilities") or {}
    if scoring == "per_class" and probabilities:
        det = float(face.get("detector_score", 1.0))
        return [(c, det * float(p)) for c, p in probabilities.items()]
    return [(face["label"], _score(face))]


def average_precision(
    photos: Sequence[Photo],
    predictions: Sequence[Sequence[dict]],
    classes: Sequence[str],
    iou_threshold: float = 0.5,
    scoring: str = "per_class",
) -> dict[str, Any]:
    """Per-class AP, mAP and PR curves: COCO's evaluation (pycocotools' COCOeval, 101-point interpolation).

    ``scoring``: ``per_class`` (a face with class probabilities is one candidate per class, scored
    detector score x probability) or ``top_label`` (one candidate: its label, detector score x
    confidence). COCO matches each class separately, so per-class candidates never compete.

    Returns ``{"map": float, "ap": {class: AP or None}, "pr": {class: (recall[], precision[])},
    "faces_per_class": {...}}``; a class with no annotated face has AP None and is left out of mAP
    (COCO's rule). At most 1000 detections per photo count (COCO's default of 100 is below the
    number of faces in some crowd photos). pycocotools directly rather than torchmetrics' wrapper
    of it: importing torchmetrics took 15-20 s here.
    """
    import contextlib
    import io

    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    if scoring not in SCORINGS:
        raise WildError(f"scoring {scoring!r}: expected one of {', '.join(SCORINGS)}")
    ids = {c: i + 1 for i, c in enumerate(classes)}  # COCO ids start at 1 (0 means "unmatched")
    unknown = sorted({lab for p in photos for lab in p.labels} - set(ids))
    if unknown:
        raise WildError(f"annotated labels {unknown} are not classes of the model ({', '.join(classes)})")
    images, truth, dets = [], [], []
    for image_id, (photo, faces) in enumerate(zip(photos, predictions, strict=True), start=1):
        images.append({"id": image_id})
        for box, label in zip(photo.boxes, photo.labels, strict=True):
            w, h = box[2] - box[0], box[3] - box[1]
            truth.append(
                {
                    "id": len(truth) + 1,
                    "image_id": image_id,
                    "category_id": ids[label],
                    "bbox": [box[0], box[1], w, h],
                    "area": w * h,
                    "iscrowd": 0,
                }
            )
        for f in faces:
            x0, y0, x1, y1 = (float(v) for v in f["box"])
            for label, score in _candidates(f, scoring):
                if label in ids:
                    dets.append(
                        {
                            "image_id": image_id,
                            "category_id": ids[label],
                            "bbox": [x0, y0, x1 - x0, y1 - y0],
                            "score": score,
                        }
                    )
    counts = {c: sum(lab == c for p in photos for lab in p.labels) for c in classes}
    ap: dict[str, float | None] = {c: (0.0 if counts[c] else None) for c in classes}
    pr: dict[str, tuple[list[float], list[float]]] = {}
    if dets:
        with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress
            gt = COCO()
            gt.dataset = {
                "images": images,
                "annotations": truth,
                "categories": [{"id": i} for i in ids.values()],
            }
            gt.createIndex()
            evaluation = COCOeval(gt, gt.loadRes(dets), iouType="bbox")
            evaluation.params.iouThrs = np.array([iou_threshold])
            evaluation.params.maxDets = [1, 100, 1000]
            evaluation.evaluate()
            evaluation.accumulate()
        # precision: (iou thresholds, 101 recall points, categories, area ranges, max-dets); area 0 = all,
        # max-dets -1 = 1000; -1 entries: a category without annotated faces
        precision = evaluation.eval["precision"][0, :, :, 0, -1]
        recall_points = np.asarray(evaluation.params.recThrs)
        for axis, cid in enumerate(evaluation.params.catIds):
            name, curve = classes[cid - 1], precision[:, axis]
            if counts[name] == 0:
                continue
            ap[name] = float(curve.mean())
            pr[name] = (recall_points.tolist(), curve.tolist())
    defined = [v for v in ap.values() if v is not None]
    return {
        "map": float(np.mean(defined)) if defined else float("nan"),
        "ap": ap,
        "pr": pr,
        "faces_per_class": counts,
    }


# ------------------------------------------------------------------------------ run
def predict_photos(
    photos: Sequence[Photo], predictor, batch_size: int = 8, progress: bool | None = None
) -> list[list[dict]]:
    """Faces per photo from the project's Predictor (detect, crop like the crop stage, classify)."""
    from tqdm import tqdm

    from maskpipe.imaging import open_rgb

    out: list[list[dict]] = []
    with tqdm(
        total=len(photos),
        unit="photo",
        desc="evaluate_wild",
        disable=None if progress is None else not progress,
    ) as bar:
        for start in range(0, len(photos), batch_size):
            chunk = photos[start : start + batch_size]
            out.extend(predictor.predict_images([open_rgb(p.path) for p in chunk]))
            bar.update(len(chunk))
    return out


def wild_metrics(
    photos: Sequence[Photo],
    predictions: Sequence[Sequence[dict]],
    classes: Sequence[str],
    iou_threshold: float = 0.5,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """(flat metrics for metrics/wild/<model>.json, the AP result with PR curves)."""
    stats = detection_stats(photos, predictions, iou_threshold)
    ap = average_precision(photos, predictions, classes, iou_threshold, scoring="per_class")
    top = average_precision(photos, predictions, classes, iou_threshold, scoring="top_label")
    metrics: dict[str, Any] = {
        "photos": len(photos),
        "faces": stats["faces"],
        "detections": stats["detections"],
        "map50": _round(ap["map"]),
        **{f"ap50/{c}": _round(v) for c, v in ap["ap"].items()},
        "map50_top_label": _round(top["map"]),
        **{f"ap50_top_label/{c}": _round(v) for c, v in top["ap"].items()},
        "detection/recall": _round(stats["recall"]),
        "detection/precision": _round(stats["precision"]),
        **{f"detection/recall_{k}": _round(v["recall"]) for k, v in stats["by_width"].items()},
        "accuracy_matched": _round(stats["accuracy_matched"]),
        "labelled_right": _round(stats["labelled_right"]),
    }
    return metrics, {**ap, "stats": stats}


def _round(v: float | None) -> float | None:
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(float(v), 6)


def write_pr_data(pr: dict[str, tuple[list[float], list[float]]], folder: Path) -> list[Path]:
    import pandas as pd

    from maskpipe.io import write_csv

    paths = []
    for name, (rec, prec) in pr.items():
        path = Path(folder) / f"pr_{name}.csv"
        write_csv(path, pd.DataFrame({"recall": np.round(rec, 4), "precision": np.round(prec, 6)}))
        paths.append(path)
    return paths


def pr_png(ap: dict[str, Any], path: Path, title: str) -> Path:
    from matplotlib.figure import Figure

    from maskpipe.evaluation.plots import _save
    from maskpipe.predict import LABEL_COLORS

    fig = Figure(figsize=(5.5, 4.2))
    ax = fig.add_subplot()
    for name, (rec, prec) in ap["pr"].items():
        color = tuple(v / 255 for v in LABEL_COLORS.get(name, (40, 110, 230)))
        ax.plot(
            rec,
            prec,
            color=color,
            label=f"{name} AP {ap['ap'][name]:.3f} ({ap['faces_per_class'][name]} faces)",
        )
    ax.set(
        xlim=(0, 1),
        ylim=(0, 1.02),
        xlabel="recall",
        ylabel="precision",
        title=f"{title}: mAP@0.5 {ap['map']:.3f}",
    )
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    return _save(fig, path)


def photo_grid_png(
    photos: Sequence[Photo],
    predictions: Sequence[Sequence[dict]],
    path: Path,
    size: int = 9,
    cell: int = 360,
    columns: int = 3,
) -> Path:
    """The first ``size`` photos: annotated boxes in thin white, predictions drawn by predict.annotate."""
    from PIL import Image, ImageDraw

    from maskpipe.imaging import open_rgb
    from maskpipe.io import atomic_path
    from maskpipe.predict import annotate

    chosen = list(zip(photos, predictions, strict=True))[:size]
    if not chosen:
        raise WildError("no photos to draw")
    rows = math.ceil(len(chosen) / columns)
    sheet = Image.new("RGB", (columns * cell, rows * cell), (255, 255, 255))
    for i, (photo, faces) in enumerate(chosen):
        img = open_rgb(photo.path)
        draw = ImageDraw.Draw(img)
        for box in photo.boxes:
            draw.rectangle(box, outline=(255, 255, 255), width=1)
        img = annotate(img, faces)
        img.thumbnail((cell - 6, cell - 6))
        x, y = (i % columns) * cell, (i // columns) * cell
        sheet.paste(img, (x + (cell - img.width) // 2, y + (cell - img.height) // 2))
    with atomic_path(path, suffix=".png") as tmp:
        sheet.save(tmp, format="PNG")
    return Path(path)


def evaluate_wild(
    model: str,
    predictor,
    photos: Sequence[Photo],
    metrics_path: Path,
    out_dir: Path,
    iou_threshold: float = 0.5,
    grid_size: int = 9,
    batch_size: int = 8,
    details_path: Path | None = None,
) -> dict[str, Any]:
    """Run predictions on the photos and write every output; returns the metrics written.

    ``out_dir`` holds only plots (PR curve data and PNGs: dvc.yaml declares it as one plots
    folder); ``details_path`` (default ``out_dir/details.json``) gets the detail tables."""
    from maskpipe.io import write_json

    if not predictor.task.probabilities or not set(p for ph in photos for p in ph.labels) <= set(
        predictor.classes
    ):
        raise WildError(
            f"{model}: classes {predictor.classes} cannot label the annotated faces "
            f"({sorted({lab for ph in photos for lab in ph.labels})}); "
            "list only models trained on all three classes in evaluate_wild.models"
        )
    predictions = predict_photos(photos, predictor, batch_size=batch_size)
    metrics, ap = wild_metrics(photos, predictions, predictor.classes, iou_threshold)
    out_dir = Path(out_dir)
    write_pr_data(ap["pr"], out_dir)
    pr_png(ap, out_dir / "pr_curves.png", model)
    photo_grid_png(photos, predictions, out_dir / "photos.png", size=grid_size)
    write_json(
        details_path or out_dir / "details.json",
        {
            "by_width": ap["stats"]["by_width"],
            "confusion_matched": ap["stats"]["confusion_matched"],
            "faces_per_class": ap["faces_per_class"],
            "detector": predictor.settings.detector.to_dict(),
            "photos": [p.source_image for p in photos],
        },
    )
    write_json(metrics_path, metrics)
    return metrics
