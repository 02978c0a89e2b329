"""Benchmark: faces per second of mask synthesis on real faces, against a plain baseline.

Baseline (same faces, same run): read the crop and write it back as PNG, the I/O any
stage pays. Measured: `synthesize_face` with landmarks (one core), and the whole stage
(`run_synthesis`, Pool of 2 workers, PNG output, index). Prints faces/s and the ratios.

    python benchmarks/bench_synthesize.py [--faces 60] [--shared ../shared/datasets]
"""

from __future__ import annotations

import argparse
import io
import math
import tempfile
import time
from pathlib import Path

import pandas as pd
from PIL import Image

from maskpipe.imaging import open_rgb
from maskpipe.synth.synthesize import (
    Settings,
    SkipFace,
    load_crop_face,
    plan_for,
    run_synthesis,
    synthesize_face,
    wear_attempts,
)
from maskpipe.synth.templates import TemplateSet, load_texture

REPO = Path(__file__).resolve().parents[1]


def make_crops(shared: Path, n: int, root: Path) -> Path:
    """n unmasked faces from the mirror as crops (crop stage layout) and their index.csv."""
    sources = [(p, None) for p in sorted((shared / "face-mask-folders" / "without_mask").iterdir())]
    sources += [(p, (68, 68, 182, 182)) for p in sorted((shared / "lfw-subset").glob("*/*.jpg"))]
    step = max(1, len(sources) // n)
    rows = []
    for i, (path, box) in enumerate(sources[::step][:n]):
        img = open_rgb(path)
        box = box or (0, 0, img.width, img.height)
        dx, dy = (box[2] - box[0]) * 0.1, (box[3] - box[1]) * 0.1
        pad = (max(0, math.floor(box[0] - dx)), max(0, math.floor(box[1] - dy)),
               min(img.width, math.ceil(box[2] + dx)), min(img.height, math.ceil(box[3] + dy)))  # fmt: skip
        rel = f"crops/{i:04d}.png"
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        img.crop(pad).resize((256, 256), Image.BICUBIC).save(root / rel)
        rows.append(dict(face_id=f"face-{i:04d}", crop_path=rel, dataset="bench", label="without_mask", split="train",
                         box_xmin=box[0], box_ymin=box[1], box_xmax=box[2], box_ymax=box[3],
                         pad_xmin=pad[0], pad_ymin=pad[1], pad_xmax=pad[2], pad_ymax=pad[3]))  # fmt: skip
    index = root / "index.csv"
    pd.DataFrame(rows).to_csv(index, index=False)
    return index


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--faces", type=int, default=60)
    parser.add_argument("--shared", type=Path, default=REPO.parent / "shared" / "datasets")
    args = parser.parse_args()
    masktheface = args.shared / "masktheface"
    settings = Settings(
        sources=("bench",),
        mask_types=("surgical", "surgical_blue", "surgical_green", "N95", "KN95", "cloth", "gas"),
        colors=("#2f6fb0",), color_fraction=0.3, textures=("others/polka.jpg",), texture_fraction=0.2,
        paint_types=("surgical", "cloth", "N95", "KN95"), workers=2, seed=42,
    )  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        index = make_crops(args.shared, args.faces, root)
        rows = pd.read_csv(index).to_dict("records")
        n = len(rows)

        started = time.perf_counter()
        for row in rows:
            buffer = io.BytesIO()
            Image.fromarray(load_crop_face(row, root).image).save(buffer, format="PNG")
        baseline = n / (time.perf_counter() - started)

        templates = TemplateSet(masktheface)
        textures = {t: load_texture(masktheface, t) for t in settings.textures}
        synthesize_face(
            *_first(rows, root), plan_for("warm-up", settings), templates, textures, settings
        )  # loads models
        started = time.perf_counter()
        skipped = 0
        for row in rows:
            crop = load_crop_face(row, root)
            for plan in wear_attempts(plan_for(row["face_id"], settings), settings):  # as the stage does
                try:
                    result = synthesize_face(crop.image, crop.rect, plan, templates, textures, settings)
                    result.image.save(io.BytesIO(), format="PNG")
                    break
                except SkipFace:
                    continue
            else:
                skipped += 1
        single = n / (time.perf_counter() - started)

        started = time.perf_counter()
        run_synthesis(index, masktheface, root / "synthetic", settings, base=root, progress=False)
        stage = n / (time.perf_counter() - started)

    print(f"faces: {n} (folder + LFW crops, 256 px), skipped in the single-core pass: {skipped}")
    print(f"baseline  read crop + write PNG         : {baseline:8.1f} faces/s")
    print(f"synthesize_face (landmarks + mask), 1 core: {single:8.1f} faces/s  ratio {single / baseline:.3f}")
    print(f"run_synthesis stage, Pool(2)              : {stage:8.1f} faces/s  ratio {stage / baseline:.3f}, "
          f"{stage / single:.2f}x the single core")  # fmt: skip


def _first(rows, root):
    crop = load_crop_face(rows[0], root)
    return crop.image, crop.rect


if __name__ == "__main__":
    main()
