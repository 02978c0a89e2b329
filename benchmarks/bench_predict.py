"""Faces/s of `maskpipe predict` on CPU per detector x model, next to the detector alone and the classifier alone.

    python benchmarks/bench_predict.py [--images 30] [--models mask_cnn,cae_oneclass] [--detectors retinaface,mtcnn]

Images: the first N mirrored Kaggle images (../shared/datasets). Models: data/models/<m>/model.pt
when trained; otherwise the architecture and image size of params.yaml (active profile) with
untrained weights, saved and loaded through the same artifact path (speed does not depend on
the weights). Prints, per detector: faces/s of the detector alone (run as predict runs it, a batch
of images at a time), then per model faces/s of the whole predict and of the classifier alone, and
the ratio of predict's time to the detector-only baseline measured in the same run.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))

from maskpipe.crop_geometry import crop_face  # noqa: E402
from maskpipe.detect import get_detector  # noqa: E402
from maskpipe.params import load_params  # noqa: E402
from maskpipe.predict import Predictor, PredictSettings  # noqa: E402

SHARED = REPO.parent / "shared" / "datasets" / "kaggle-face-mask-detection" / "images"


def model_file(name: str, all_params: dict, tmp: Path) -> tuple[Path, str]:
    trained = REPO / "data" / "models" / name / "model.pt"
    if trained.is_file():
        return trained, "trained"
    from maskpipe.training.artifact import save_model
    from maskpipe.training.config import normalization, resolve_model_config
    from maskpipe.training.models import build_model

    params = resolve_model_config(all_params, name)
    model = build_model(params, load_weights=False).eval()
    mean, std = normalization(params)
    extra = {"error_percentiles": [i / 100 for i in range(101)]} if params.task == "oneclass" else {}
    path = tmp / name / "model.pt"
    save_model(path, model, params, mean=mean, std=std, epoch=0, best_metric=None, extra=extra)
    return path, "untrained"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=30)
    ap.add_argument("--models", default="", help="comma-separated; default: every model in params.yaml")
    ap.add_argument("--detectors", default="retinaface,mtcnn", help="comma-separated detector names")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=1, help="passes over the images per measurement")
    args = ap.parse_args()

    if not SHARED.is_dir():
        sys.exit(f"{SHARED}: Kaggle mirror not found")
    torch.set_num_threads(args.threads)
    all_params = load_params(REPO / "params.yaml")
    names = [m for m in args.models.split(",") if m] or list(all_params["models"])
    from maskpipe.imaging import open_rgb

    images = [
        open_rgb(p) for p in sorted(SHARED.glob("*.png"), key=lambda p: (len(p.stem), p.stem))[: args.images]
    ]
    print(f"{len(images)} Kaggle images, {args.threads} classifier threads, torch {torch.__version__}")
    print(
        f"{'detector':11} {'model':26} {'weights':9} {'arch':20} {'size':>4} {'faces':>5} {'predict faces/s':>16} "
        f"{'detector faces/s':>17} {'classifier faces/s':>19} {'predict / detector time':>24}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        files = {name: model_file(name, all_params, Path(tmp)) for name in names}
        for det_name in [d for d in args.detectors.split(",") if d]:
            settings = PredictSettings.from_params(
                all_params.get("predict"), all_params.get("crop"), detector=det_name
            )
            detector = get_detector(settings.detector)
            detector(images[0])  # warm-up (model load, first-call allocation)
            # the detector alone, as predict runs it: a batch of images at a time (detect_many)
            t0 = time.perf_counter()
            for _ in range(args.repeat):
                detections = []
                for start in range(0, len(images), settings.batch_size):
                    detections += detector.detect_many(images[start : start + settings.batch_size])
            base = (time.perf_counter() - t0) / args.repeat
            n_faces = sum(len(d) for d in detections)
            crops = [
                crop_face(img, d.box, settings.crop_settings())[0]
                for img, dets in zip(images, detections, strict=True)
                for d in dets
            ]
            print(
                f"{det_name:11} {'(detector alone)':26} {'':9} {'':20} {'':>4} {n_faces:>5} {'':>16} "
                f"{n_faces / base:>17.1f} {'':>19} {'':>24}   {1000 * base / len(images):.0f} ms/image"
            )
            for name in names:
                path, kind = files[name]
                predictor = Predictor.from_path(path, settings)
                predictor.predict_images(images[:1])  # warm-up
                t0 = time.perf_counter()
                for _ in range(args.repeat):
                    for start in range(0, len(images), settings.batch_size):
                        predictor.predict_images(images[start : start + settings.batch_size])
                total = (time.perf_counter() - t0) / args.repeat
                t0 = time.perf_counter()
                for _ in range(args.repeat):
                    predictor.classify(crops)
                cls = (time.perf_counter() - t0) / args.repeat
                meta = predictor.meta
                print(
                    f"{det_name:11} {name:26} {kind:9} {meta['arch']:20} {meta['image_size']:>4} {n_faces:>5} "
                    f"{n_faces / total:>16.1f} {n_faces / base:>17.1f} {n_faces / cls:>19.1f} {total / base:>23.2f}x",
                    flush=True,
                )


if __name__ == "__main__":
    main()
