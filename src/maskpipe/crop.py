"""Face crops from every enabled dataset, one PNG per face, plus an index with splits.

Flow (`run_crop`): collect the faces of each dataset by its `format` (collectors/) -> crop
them in a process pool, one task per source image (geometry: crop_geometry.py) ->
perceptual hashes -> train/val/test by source image (splits.py), with near-duplicates kept
together -> index.csv, skipped.csv, duplicates.csv (schemas.py) written into a temp folder
that replaces the output folder only when everything worked. Settings: crop_config.py;
counts for metrics/data.json: crop_summary.py.
"""

from __future__ import annotations

import multiprocessing
import time
import warnings
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image

from maskpipe import dedup, splits
from maskpipe.collectors import collect_all
from maskpipe.collectors.base import SourceImage, natural_key, skip_row
from maskpipe.crop_config import CropConfig, SplitConfig
from maskpipe.crop_geometry import Box, box_problem, crop_face
from maskpipe.crop_summary import summarize
from maskpipe.imaging import ImageReadError, open_rgb
from maskpipe.io import atomic_dir
from maskpipe.schemas import CROP_BOX_COLUMNS, CROP_DUPLICATE_COLUMNS, CROP_INDEX_COLUMNS, CROP_SKIP_COLUMNS

INDEX = list(CROP_INDEX_COLUMNS)


# --------------------------------------------------------------------------- cropping (worker)


def _read_problem(exc: ImageReadError) -> str:
    text = str(exc).lower()
    if "not found" in text:
        return "image_missing"
    if "pixel limit" in text:
        return "image_too_large"
    if "truncated" in text:
        return "image_truncated"
    return "image_corrupt"


def crop_source(
    source: SourceImage, cfg: CropConfig, out_dir: Path, prefix: str
) -> tuple[list[dict], list[dict]]:
    """Crop every face of one source image into out_dir; returns (index rows, skip rows). Never raises
    for bad images or boxes: those become skip rows. Images over ``cfg.max_pixels`` are refused
    from their header, before decoding."""
    try:
        with warnings.catch_warnings():
            # our own cap applies (checked from the header); Pillow's bomb warning at ~89 Mpx is noise
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = open_rgb(source.path, max_pixels=cfg.max_pixels)
    except ImageReadError as exc:
        return [], [skip_row(source.source_image, source.dataset, _read_problem(exc), str(exc))]
    width, height = img.size
    rows: list[dict] = []
    skips: list[dict] = []
    for face in source.faces:
        if face.box is None:
            box: Box = (0.0, 0.0, float(width), float(height))
        elif face.box_frame and tuple(face.box_frame) != (width, height):
            sx, sy = width / face.box_frame[0], height / face.box_frame[1]
            box = (face.box[0] * sx, face.box[1] * sy, face.box[2] * sx, face.box[3] * sy)
        else:
            box = tuple(float(v) for v in face.box)  # type: ignore[assignment]
        problem = box_problem(box, width, height, cfg.min_face)
        if problem:
            skips.append(
                skip_row(source.source_image, source.dataset, problem, f"image {width}x{height}", box)
            )
            continue
        crop, pad = crop_face(img, box, cfg)
        rel = f"{source.dataset}/{face.label}/{face.face_id}.png"
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        crop.save(target, format="PNG", compress_level=cfg.png_compress_level)
        rows.append(
            {
                "face_id": face.face_id,
                "crop_path": f"{prefix}/{rel}",
                "dataset": source.dataset,
                "source_image": source.source_image,
                "label": face.label,
                "box_xmin": box[0], "box_ymin": box[1], "box_xmax": box[2], "box_ymax": box[3],
                "pad_xmin": pad[0], "pad_ymin": pad[1], "pad_xmax": pad[2], "pad_ymax": pad[3],
                "group": f"{source.dataset}:{source.group}",
                "phash": dedup.phash_int(crop),
            }
        )  # fmt: skip
    return rows, skips


class _Worker:
    """Picklable callable for Pool.imap."""

    def __init__(self, cfg: CropConfig, out_dir: Path, prefix: str):
        self.cfg, self.out_dir, self.prefix = cfg, out_dir, prefix

    def __call__(self, source: SourceImage) -> tuple[list[dict], list[dict], int]:
        rows, skips = crop_source(source, self.cfg, self.out_dir, self.prefix)
        return rows, skips, len(source.faces)


def crop_sources(
    sources: list[SourceImage],
    cfg: CropConfig,
    out_dir: Path,
    prefix: str,
    workers: int = 1,
    progress: bool | None = None,
) -> tuple[list[dict], list[dict]]:
    """Crop all sources, in a Pool(workers) when worth it; results keep the order of `sources`."""
    from tqdm import tqdm

    worker = _Worker(cfg, out_dir, prefix)
    rows: list[dict] = []
    skips: list[dict] = []
    n_faces = sum(len(s.faces) for s in sources)
    with tqdm(
        total=n_faces, unit="face", desc="crop", disable=None if progress is None else not progress
    ) as bar:
        if workers <= 1 or len(sources) < 4:
            results: Iterable = map(worker, sources)
            pool = None
        else:
            chunksize = max(1, min(16, len(sources) // (workers * 8)))
            pool = multiprocessing.get_context().Pool(workers)
            results = pool.imap(worker, sources, chunksize=chunksize)
        try:
            for r, s, n in results:
                rows += r
                skips += s
                bar.update(n)
        except BaseException:  # Ctrl-C or a bug: stop the workers now, do not wait for them
            if pool is not None:
                pool.terminate()
            raise
        finally:
            if pool is not None:
                pool.close()
                pool.join()
    return rows, skips


# --------------------------------------------------------------------------- the whole run


@dataclass
class CropResult:
    index: pd.DataFrame
    skipped: pd.DataFrame
    duplicates: pd.DataFrame
    summary: dict[str, Any]
    notes: list[str]
    seconds: float

    @property
    def faces_per_second(self) -> float:
        return len(self.index) / self.seconds if self.seconds > 0 else 0.0


def _integral(frame: pd.DataFrame, columns: Iterable[str]) -> pd.DataFrame:
    for col in columns:
        values = frame[col].astype("float64")
        if len(values) and (values == np.round(values)).all():
            frame[col] = values.astype("int64")
    return frame


def _duplicates_frame(index: pd.DataFrame, pairs: np.ndarray) -> pd.DataFrame:
    if len(pairs) == 0:
        return pd.DataFrame(columns=list(CROP_DUPLICATE_COLUMNS))
    a, b = index.iloc[pairs[:, 0]].reset_index(drop=True), index.iloc[pairs[:, 1]].reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "face_id_a": a.face_id, "face_id_b": b.face_id, "distance": pairs[:, 2],
            "split_a": a.split, "split_b": b.split, "cross_split": a.split.values != b.split.values,
            "dataset_a": a.dataset, "dataset_b": b.dataset, "crop_path_a": a.crop_path, "crop_path_b": b.crop_path,
        }
    )  # fmt: skip
    # cross-split pairs first (those are the leaks), then the closest
    return frame.sort_values(
        ["cross_split", "distance", "face_id_a", "face_id_b"], ascending=[False, True, True, True]
    )


def run_crop(
    raw_root: str | Path,
    datasets: Mapping[str, Mapping[str, Any]],
    crop_cfg: CropConfig | Mapping[str, Any],
    split_cfg: SplitConfig | Mapping[str, Any],
    seed: int,
    interim: str | Path,
    out_dir: str | Path,
    prefix: str | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> CropResult:
    """Crop every enabled dataset into `out_dir` (replaced atomically). `prefix` starts each crop_path
    (default: `out_dir` as given, e.g. data/crops). Params are checked first (ConfigError)."""
    raw_root, interim, out_dir = Path(raw_root), Path(interim), Path(out_dir)
    prefix = (prefix if prefix is not None else out_dir.as_posix()).rstrip("/")
    cfg = crop_cfg if isinstance(crop_cfg, CropConfig) else CropConfig.from_mapping(crop_cfg, "crop")
    split = split_cfg if isinstance(split_cfg, SplitConfig) else SplitConfig.from_mapping(split_cfg, "split")
    workers = int(workers if workers is not None else cfg.workers)

    started = time.perf_counter()
    collected = collect_all(raw_root, datasets, cfg, interim)
    for note in collected.notes:
        log(note)
    with atomic_dir(out_dir) as tmp:
        rows, skips = crop_sources(collected.sources, cfg, tmp, prefix, workers, progress)
        index = pd.DataFrame(rows, columns=[*INDEX[:-1], "group", "phash"])
        pairs = dedup.near_duplicate_pairs(index["phash"].to_numpy(dtype=np.uint64), split.dedup_max_distance)
        links = pairs[:, :2].tolist() if split.group_near_duplicates else []
        index["split"] = splits.assign_splits(index, split.val, split.test, seed, links)
        duplicates = _duplicates_frame(index, pairs)
        index = _integral(index, CROP_BOX_COLUMNS)
        skipped = pd.DataFrame(collected.skips + skips, columns=list(CROP_SKIP_COLUMNS))
        skipped = skipped.sort_values(
            ["dataset", "source"], key=lambda col: col.map(natural_key), kind="stable"
        ).reset_index(drop=True)
        index[INDEX].to_csv(tmp / "index.csv", index=False)
        skipped.to_csv(tmp / "skipped.csv", index=False)
        duplicates.to_csv(tmp / "duplicates.csv", index=False)
    seconds = time.perf_counter() - started
    summary = summarize(index, skipped, duplicates, split.dedup_max_distance)
    return CropResult(index[INDEX], skipped, duplicates, summary, collected.notes, seconds)
