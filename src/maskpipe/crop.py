"""Face crops from every enabled dataset, one PNG per face, plus an index with splits.

Flow (`run_crop`): collect the faces of each dataset by its `format`
(voc / folders / lfw / mafa) -> crop them in a process pool, one task per source
image -> perceptual hashes -> train/val/test by source image (splits.py), with
near-duplicates kept together -> index.csv, skipped.csv, duplicates.csv written
into a temp folder that replaces the output folder only when everything worked.

Geometry: boxes are (xmin, ymin, xmax, ymax) in pixels of the decoded,
EXIF-rotated image, half-open. A box is skipped when it is empty, negative
(max < min), entirely outside the image, or - after clipping to the image -
narrower or shorter than `min_face`. Otherwise it is padded by `padding` x its
width / height on each side, clipped to the image, and resized to
`size` x `size`: `stretch` (default; a padded face box is roughly square, and a
detector box at prediction time gets the same treatment) or `letterbox`
(aspect kept, black borders).
"""

from __future__ import annotations

import hashlib
import math
import multiprocessing
import re
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import pandas as pd
from PIL import Image

from maskpipe import dedup, splits
from maskpipe.download import dataset_enabled
from maskpipe.imaging import ImageReadError, is_image_file, open_rgb
from maskpipe.io import atomic_dir
from maskpipe.labels import LABELS, WITH_MASK, WITHOUT_MASK, normalize_label
from maskpipe.voc import VocError, parse_voc

INDEX_COLUMNS = [
    "face_id", "crop_path", "dataset", "source_image", "label",
    "box_xmin", "box_ymin", "box_xmax", "box_ymax",
    "pad_xmin", "pad_ymin", "pad_xmax", "pad_ymax",
    "split",
]  # fmt: skip
SKIP_COLUMNS = ["source", "dataset", "box", "reason", "detail"]
DUPLICATE_COLUMNS = [
    "face_id_a", "face_id_b", "distance", "split_a", "split_b", "cross_split",
    "dataset_a", "dataset_b", "crop_path_a", "crop_path_b",
]  # fmt: skip
CROP_FORMATS = ("voc", "folders", "lfw", "mafa")
RESIZE_MODES = ("stretch", "letterbox")

Box = tuple[float, float, float, float]


class CropConfigError(ValueError):
    pass


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class CropSettings:
    padding: float = 0.10
    size: int = 256
    min_face: int = 12
    resize: str = "stretch"
    png_compress_level: int = 1

    @classmethod
    def from_params(cls, cfg: dict[str, Any]) -> "CropSettings":
        settings = cls(
            padding=float(cfg.get("padding", cls.padding)),
            size=int(cfg.get("size", cls.size)),
            min_face=int(cfg.get("min_face", cls.min_face)),
            resize=str(cfg.get("resize", cls.resize)),
            png_compress_level=int(cfg.get("png_compress_level", cls.png_compress_level)),
        )
        if settings.padding < 0:
            raise CropConfigError(f"crop.padding must be >= 0, got {settings.padding}")
        if settings.size < 8:
            raise CropConfigError(f"crop.size must be >= 8, got {settings.size}")
        if settings.resize not in RESIZE_MODES:
            raise CropConfigError(f"crop.resize must be one of {', '.join(RESIZE_MODES)}, got {settings.resize!r}")
        return settings


# --------------------------------------------------------------------------- geometry


def box_problem(box: Box, width: int, height: int, min_face: int) -> str | None:
    """Why a box cannot be cropped (a skip reason), or None when it can."""
    if not all(math.isfinite(v) for v in box):
        return "invalid_box"
    xmin, ymin, xmax, ymax = box
    if xmax < xmin or ymax < ymin:
        return "negative_box"
    if xmax == xmin or ymax == ymin:
        return "empty_box"
    cx0, cy0, cx1, cy1 = max(xmin, 0), max(ymin, 0), min(xmax, width), min(ymax, height)
    if cx1 <= cx0 or cy1 <= cy0:
        return "out_of_image"
    if cx1 - cx0 < min_face or cy1 - cy0 < min_face:
        return "too_small"
    return None


def pad_box(box: Box, padding: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Grow the box by `padding` x its size on each side, clip to the image, whole pixels."""
    xmin, ymin, xmax, ymax = box
    dx, dy = (xmax - xmin) * padding, (ymax - ymin) * padding
    return (
        max(0, math.floor(xmin - dx)),
        max(0, math.floor(ymin - dy)),
        min(width, math.ceil(xmax + dx)),
        min(height, math.ceil(ymax + dy)),
    )


def resize_square(img: Image.Image, size: int, mode: str = "stretch") -> Image.Image:
    if mode == "stretch":
        return img.resize((size, size), Image.Resampling.BICUBIC, reducing_gap=3.0)
    scale = size / max(img.width, img.height)
    w, h = max(1, round(img.width * scale)), max(1, round(img.height * scale))
    canvas = Image.new("RGB", (size, size))
    canvas.paste(img.resize((w, h), Image.Resampling.BICUBIC, reducing_gap=3.0), ((size - w) // 2, (size - h) // 2))
    return canvas


def crop_face(img: Image.Image, box: Box, settings: CropSettings) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """Padded, clipped, resized RGB crop of one face (box assumed valid) and the padded box."""
    pad = pad_box(box, settings.padding, img.width, img.height)
    return resize_square(img.crop(pad), settings.size, settings.resize), pad


# --------------------------------------------------------------------------- sources


@dataclass
class Face:
    index: int  # position in the source's annotation (stable across runs)
    label: str
    box: Box | None  # None = the whole image (class-folder datasets)
    box_frame: tuple[int, int] | None = None  # image size the box refers to (scaled to the real size)
    face_id: str = ""


@dataclass
class SourceImage:
    dataset: str
    path: Path
    source_image: str  # relative to the dataset folder, posix
    group: str  # faces with the same group always share a split
    faces: list[Face] = field(default_factory=list)


@dataclass
class Collected:
    sources: list[SourceImage] = field(default_factory=list)
    skips: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def natural_key(text: str) -> tuple:
    """'img2' < 'img10'."""
    return tuple((0, int(t), "") if t.isdigit() else (1, 0, t) for t in re.split(r"(\d+)", text))


def _skip(source: str, dataset: str, reason: str, detail: str = "", box: Box | None = None) -> dict:
    box_text = "" if box is None else ",".join(f"{v:g}" for v in box)
    return {"source": source, "dataset": dataset, "box": box_text, "reason": reason, "detail": detail}


def image_files(root: Path) -> list[Path]:
    return sorted((p for p in root.rglob("*") if p.is_file() and is_image_file(p)), key=lambda p: natural_key(p.as_posix()))


def _image_index(root: Path) -> dict[str, Path]:
    index: dict[str, Path] = {}
    for p in image_files(root):
        index.setdefault(p.name, p)
    return index


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def collect_voc(name: str, root: Path) -> Collected:
    out = Collected()
    images = _image_index(root)
    xmls = sorted(root.rglob("*.xml"), key=lambda p: natural_key(p.as_posix()))
    for xml in xmls:
        src = _rel(xml, root)
        try:
            ann = parse_voc(xml)
        except VocError as exc:
            out.skips.append(_skip(src, name, "bad_annotation", str(exc)))
            continue
        for i, obj_name, problem in ann.bad_objects:
            out.skips.append(_skip(src, name, "bad_annotation", f"object {i} ({obj_name}): {problem}"))
        candidates = [xml.parent.parent / "images" / ann.filename, xml.parent / ann.filename]
        image = next((c for c in candidates if c.is_file()), None) or images.get(Path(ann.filename).name)
        if image is None:
            out.skips.append(
                _skip(src, name, "image_missing", f"{ann.filename} not found ({len(ann.objects)} faces annotated)")
            )
            continue
        source = SourceImage(name, image, _rel(image, root), group=_rel(image, root))
        for obj in ann.objects:
            try:
                label = normalize_label(obj.name)
            except ValueError as exc:
                out.skips.append(_skip(source.source_image, name, "unknown_label", str(exc), obj.box))
                continue
            source.faces.append(Face(obj.index, label, obj.box))
        if source.faces:
            out.sources.append(source)
    return out


def folder_label(rel_parts: Iterable[str]) -> str | None:
    """The label of the nearest enclosing folder that names a class (Train/WithMask/x.png -> with_mask)."""
    for part in reversed(list(rel_parts)):
        try:
            return normalize_label(part)
        except ValueError:
            continue
    return None


def collect_folders(name: str, root: Path) -> Collected:
    out = Collected()
    for path in image_files(root):
        rel = _rel(path, root)
        label = folder_label(Path(rel).parts[:-1])
        if label is None:
            out.skips.append(_skip(rel, name, "unknown_label", "no enclosing folder names a class"))
            continue
        out.sources.append(SourceImage(name, path, rel, group=rel, faces=[Face(0, label, None)]))
    return out


def collect_lfw(name: str, root: Path, lfw_box: Box, frame: tuple[int, int] = (250, 250)) -> Collected:
    """LFW photos are centred; every photo gets the same face box. One person = one group."""
    out = Collected()
    for path in image_files(root):
        rel = _rel(path, root)
        person = Path(rel).parts[0] if len(Path(rel).parts) > 1 else Path(rel).stem
        out.sources.append(
            SourceImage(name, path, rel, group=f"person:{person}", faces=[Face(0, WITHOUT_MASK, tuple(lfw_box), frame)])
        )
    return out


MAFA_FACE_TYPES = {"masked": 1, "unmasked": 2, "invalid": 3}  # readme-test.txt
MAFA_OCCLUDER_TYPES = {"simple": 1, "complex": 2, "human_body": 3}  # readme-train.txt


def _mafa_codes(names: Iterable[str], known: dict[str, int], param: str) -> set[int]:
    unknown = [n for n in names if n not in known]
    if unknown:
        raise CropConfigError(f"crop.mafa.{param}: unknown name(s) {', '.join(map(str, unknown))}; known: {', '.join(known)}")
    return {known[n] for n in names}


def mafa_label_policy(mafa_cfg: dict[str, Any]) -> tuple[dict[int, str], str, set[int]]:
    """(test face_type code -> our label, train label, kept train occluder type codes) from params."""
    test_types = mafa_cfg.get("test_face_types") or {}
    _mafa_codes(test_types, MAFA_FACE_TYPES, "test_face_types")
    test_map = {MAFA_FACE_TYPES[k]: normalize_label(v) for k, v in test_types.items() if v}
    train_label = normalize_label(mafa_cfg.get("train_label", WITH_MASK))
    occluders = _mafa_codes(mafa_cfg.get("train_occluder_types") or [], MAFA_OCCLUDER_TYPES, "train_occluder_types")
    return test_map, train_label, occluders


def mafa_face_label(split: str, row: dict, policy: tuple[dict[int, str], str, set[int]]) -> tuple[str | None, str]:
    """Our label for one MAFA face, or (None, why) when the label policy leaves it out.

    Test faces carry `face_type` (1 masked, 2 unmasked, 3 invalid); train faces are
    all occluded faces, labelled `train_label` when their occluder type is kept
    (1 simple, 2 complex; 3 = human body, e.g. a hand, is not a mask).
    """
    test_map, train_label, occluders = policy
    if split == "test":
        code = row.get("face_type")
        if pd.isna(code) or int(code) not in test_map:
            return None, f"test face_type {code} not mapped by crop.mafa.test_face_types"
        return test_map[int(code)], ""
    code = row.get("occluder_type")
    if pd.isna(code) or int(code) not in occluders:
        return None, f"train occluder_type {code} not in crop.mafa.train_occluder_types"
    return train_label, ""


def collect_mafa(name: str, root: Path, interim: Path, mafa_cfg: dict[str, Any], images_enabled: bool) -> Collected:
    out = Collected()
    policy = mafa_label_policy(mafa_cfg)  # checked even when unused, so a typo shows up early
    if not images_enabled:
        out.notes.append(f"{name}: labels only (datasets.{name}.images is false); no MAFA crops")
        return out
    images = _image_index(root)
    if not images:
        out.notes.append(f"{name}: datasets.{name}.images is true but {root} holds no images; no MAFA crops")
        return out
    for split in ("train", "test"):
        csv = interim / f"mafa_{split}.csv"
        if not csv.exists():
            out.notes.append(f"{name}: {csv} missing (run convert_mat); no {split} crops")
            continue
        by_image: dict[str, list[dict]] = {}
        for row in pd.read_csv(csv).to_dict("records"):
            by_image.setdefault(str(row["image"]), []).append(row)
        for image_name, rows in by_image.items():
            path = images.get(image_name)
            if path is None:
                out.skips.append(_skip(image_name, name, "image_missing", f"{len(rows)} faces in {csv.name}"))
                continue
            source = SourceImage(name, path, _rel(path, root), group=_rel(path, root))
            for row in rows:
                x, y, w, h = (float(row[k]) for k in ("face_x", "face_y", "face_w", "face_h"))
                box = (x, y, x + w, y + h)
                label, why = mafa_face_label(split, row, policy)
                if label is None:
                    out.skips.append(_skip(source.source_image, name, "label_excluded", why, box))
                    continue
                source.faces.append(Face(int(row["face_index"]), label, box))
            if source.faces:
                out.sources.append(source)
    return out


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_.") or "image"


def assign_face_ids(sources: list[SourceImage]) -> None:
    """face_id = <dataset>-<file stem>-<face index>. Where stems repeat within a dataset the
    relative path stands in for the stem, and where even those slugs clash a path hash is added."""
    stems = Counter((s.dataset, Path(s.source_image).stem) for s in sources)
    slug_of: dict[int, str] = {}
    for k, s in enumerate(sources):
        stem = Path(s.source_image).stem
        slug_of[k] = _slug(stem if stems[(s.dataset, stem)] == 1 else Path(s.source_image).with_suffix("").as_posix())
    clashes = Counter((s.dataset, slug_of[k]) for k, s in enumerate(sources))
    for k, s in enumerate(sources):
        slug = slug_of[k]
        if clashes[(s.dataset, slug)] > 1:  # "a b/x.png" vs "a_b/x.png"
            slug = f"{slug}_{hashlib.sha1(s.source_image.encode('utf-8')).hexdigest()[:8]}"
        for face in s.faces:
            face.face_id = f"{s.dataset}-{slug}-{face.index}"


def limit_sources(sources: list[SourceImage], limit: int) -> list[SourceImage]:
    """`limit` images that still cover every label: take them in turn from each label's images
    (by the rarest label of an image), rarest label first; keep the original order."""
    counts = Counter(f.label for s in sources for f in s.faces)
    buckets: dict[str, list[int]] = {}
    for i, s in enumerate(sources):
        rarest = min((f.label for f in s.faces), key=lambda lab: (counts[lab], lab))
        buckets.setdefault(rarest, []).append(i)
    order = sorted(buckets, key=lambda lab: (counts[lab], lab))
    chosen: list[int] = []
    depth = 0
    while len(chosen) < min(limit, len(sources)):
        for lab in order:
            if depth < len(buckets[lab]) and len(chosen) < limit:
                chosen.append(buckets[lab][depth])
        depth += 1
    return [sources[i] for i in sorted(chosen)]


def collect_all(
    raw_root: Path,
    datasets: dict[str, dict[str, Any]],
    crop_cfg: dict[str, Any],
    interim: Path,
) -> Collected:
    limit = crop_cfg.get("max_images_per_dataset")
    total = Collected()
    for name, spec in datasets.items():
        fmt = (spec or {}).get("format")
        if fmt not in CROP_FORMATS:
            continue  # e.g. mask templates: not faces
        root = raw_root / name
        if not root.is_dir():
            total.notes.append(f"{name}: {root} missing (run the download stage); skipped")
            continue
        if not dataset_enabled(root, bool(spec.get("enabled", True))):
            total.notes.append(f"{name}: disabled; skipped")
            continue
        if fmt == "voc":
            got = collect_voc(name, root)
        elif fmt == "folders":
            got = collect_folders(name, root)
        elif fmt == "lfw":
            got = collect_lfw(name, root, tuple(crop_cfg.get("lfw_box", (68, 68, 182, 182))))
        else:
            got = collect_mafa(name, root, interim, crop_cfg.get("mafa") or {}, bool(spec.get("images", False)))
        if limit is not None and len(got.sources) > int(limit):
            got.notes.append(f"{name}: limited to {int(limit)} of {len(got.sources)} images (crop.max_images_per_dataset)")
            got.sources = limit_sources(got.sources, int(limit))
        if not got.sources and fmt != "mafa":
            got.notes.append(f"{name}: no usable images under {root}")
        total.sources += got.sources
        total.skips += got.skips
        total.notes += got.notes
    assign_face_ids(total.sources)
    return total


# --------------------------------------------------------------------------- cropping (worker)


def _read_problem(exc: ImageReadError) -> str:
    text = str(exc).lower()
    if "not found" in text:
        return "image_missing"
    if "truncated" in text:
        return "image_truncated"
    return "image_corrupt"


def crop_source(source: SourceImage, settings: CropSettings, out_dir: Path, prefix: str) -> tuple[list[dict], list[dict]]:
    """Crop every face of one source image into out_dir; returns (index rows, skip rows). Never raises
    for bad images or boxes: those become skip rows."""
    try:
        img = open_rgb(source.path)
    except ImageReadError as exc:
        return [], [_skip(source.source_image, source.dataset, _read_problem(exc), str(exc))]
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
        problem = box_problem(box, width, height, settings.min_face)
        if problem:
            skips.append(_skip(source.source_image, source.dataset, problem, f"image {width}x{height}", box))
            continue
        crop, pad = crop_face(img, box, settings)
        rel = f"{source.dataset}/{face.label}/{face.face_id}.png"
        target = out_dir / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        crop.save(target, format="PNG", compress_level=settings.png_compress_level)
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

    def __init__(self, settings: CropSettings, out_dir: Path, prefix: str):
        self.settings, self.out_dir, self.prefix = settings, out_dir, prefix

    def __call__(self, source: SourceImage) -> tuple[list[dict], list[dict], int]:
        rows, skips = crop_source(source, self.settings, self.out_dir, self.prefix)
        return rows, skips, len(source.faces)


def crop_sources(
    sources: list[SourceImage],
    settings: CropSettings,
    out_dir: Path,
    prefix: str,
    workers: int = 1,
    progress: bool | None = None,
) -> tuple[list[dict], list[dict]]:
    """Crop all sources, in a Pool(workers) when worth it; results keep the order of `sources`."""
    from tqdm import tqdm

    worker = _Worker(settings, out_dir, prefix)
    rows: list[dict] = []
    skips: list[dict] = []
    n_faces = sum(len(s.faces) for s in sources)
    with tqdm(total=n_faces, unit="face", desc="crop", disable=None if progress is None else not progress) as bar:
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


def _integral(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    for col in columns:
        values = frame[col].astype("float64")
        if len(values) and (values == np.round(values)).all():
            frame[col] = values.astype("int64")
    return frame


def _duplicates_frame(index: pd.DataFrame, pairs: np.ndarray) -> pd.DataFrame:
    if len(pairs) == 0:
        return pd.DataFrame(columns=DUPLICATE_COLUMNS)
    a, b = index.iloc[pairs[:, 0]].reset_index(drop=True), index.iloc[pairs[:, 1]].reset_index(drop=True)
    frame = pd.DataFrame(
        {
            "face_id_a": a.face_id, "face_id_b": b.face_id, "distance": pairs[:, 2],
            "split_a": a.split, "split_b": b.split, "cross_split": a.split.values != b.split.values,
            "dataset_a": a.dataset, "dataset_b": b.dataset, "crop_path_a": a.crop_path, "crop_path_b": b.crop_path,
        }
    )  # fmt: skip
    # cross-split pairs first (those are the leaks), then the closest
    return frame.sort_values(["cross_split", "distance", "face_id_a", "face_id_b"], ascending=[False, True, True, True])


def run_crop(
    raw_root: str | Path,
    datasets: dict[str, dict[str, Any]],
    crop_cfg: dict[str, Any],
    split_cfg: dict[str, Any],
    seed: int,
    interim: str | Path,
    out_dir: str | Path,
    prefix: str | None = None,
    workers: int | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = lambda _m: None,
) -> CropResult:
    """Crop every enabled dataset into `out_dir` (replaced atomically). `prefix` starts each crop_path
    (default: `out_dir` as given, e.g. data/crops)."""
    raw_root, interim, out_dir = Path(raw_root), Path(interim), Path(out_dir)
    prefix = (prefix if prefix is not None else out_dir.as_posix()).rstrip("/")
    settings = CropSettings.from_params(crop_cfg)
    val, test = float(split_cfg.get("val", 0.15)), float(split_cfg.get("test", 0.15))
    splits.check_fractions(val, test)
    max_distance = int(split_cfg.get("dedup_max_distance", 4))
    workers = int(workers if workers is not None else crop_cfg.get("workers", 1))

    started = time.perf_counter()
    collected = collect_all(raw_root, datasets, crop_cfg, interim)
    for note in collected.notes:
        log(note)
    with atomic_dir(out_dir) as tmp:
        rows, skips = crop_sources(collected.sources, settings, tmp, prefix, workers, progress)
        index = pd.DataFrame(rows, columns=[*INDEX_COLUMNS[:-1], "group", "phash"])
        pairs = dedup.near_duplicate_pairs(index["phash"].to_numpy(dtype=np.uint64), max_distance)
        links = pairs[:, :2].tolist() if split_cfg.get("group_near_duplicates", True) else []
        index["split"] = splits.assign_splits(index, val, test, seed, links)
        duplicates = _duplicates_frame(index, pairs)
        index = _integral(index, ["box_xmin", "box_ymin", "box_xmax", "box_ymax"])
        skipped = pd.DataFrame(collected.skips + skips, columns=SKIP_COLUMNS)
        skipped = skipped.sort_values(
            ["dataset", "source"], key=lambda col: col.map(natural_key), kind="stable"
        ).reset_index(drop=True)
        index[INDEX_COLUMNS].to_csv(tmp / "index.csv", index=False)
        skipped.to_csv(tmp / "skipped.csv", index=False)
        duplicates.to_csv(tmp / "duplicates.csv", index=False)
    seconds = time.perf_counter() - started
    summary = summarize(index, skipped, duplicates, max_distance)
    return CropResult(index[INDEX_COLUMNS], skipped, duplicates, summary, collected.notes, seconds)


# --------------------------------------------------------------------------- summary


def summarize(index: pd.DataFrame, skipped: pd.DataFrame, duplicates: pd.DataFrame, max_distance: int) -> dict[str, Any]:
    """Deterministic counts for metrics/data.json (no timings: `dvc metrics diff` shows data changes only)."""
    counts: dict[str, Any] = {}
    for dataset, part in index.groupby("dataset", sort=True):
        labels = {}
        for label, lpart in part.groupby("label", sort=True):
            by_split = {s: int((lpart.split == s).sum()) for s in splits.SPLITS}
            labels[label] = {**by_split, "total": int(len(lpart))}
        counts[dataset] = {
            "faces": int(len(part)),
            "images": int(part.source_image.nunique()),
            "labels": labels,
        }
    by_split = {
        s: {"faces": int((index.split == s).sum()), **{lab: int(((index.split == s) & (index.label == lab)).sum()) for lab in LABELS}}
        for s in splits.SPLITS
    }
    cross = int(duplicates["cross_split"].sum()) if len(duplicates) else 0
    return {
        "faces": int(len(index)),
        "images": int(index[["dataset", "source_image"]].drop_duplicates().shape[0]) if len(index) else 0,
        "datasets": counts,
        "splits": by_split,
        "skipped": {
            "total": int(len(skipped)),
            "by_reason": {k: int(v) for k, v in sorted(Counter(skipped.reason).items())},
            "by_dataset": {
                d: {k: int(v) for k, v in sorted(Counter(part.reason).items())}
                for d, part in skipped.groupby("dataset", sort=True)
            },
        },
        "near_duplicates": {
            "max_distance": int(max_distance),
            "pairs": int(len(duplicates)),
            "cross_split_pairs": cross,
        },
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table for the stage log."""
    head = f"{'dataset':<28}{'label':<24}{'train':>7}{'val':>7}{'test':>7}{'total':>8}"
    lines = [head, "-" * len(head)]
    for dataset, info in summary["datasets"].items():
        for label, c in info["labels"].items():
            lines.append(f"{dataset:<28}{label:<24}{c['train']:>7}{c['val']:>7}{c['test']:>7}{c['total']:>8}")
    s = summary["splits"]
    lines.append("-" * len(head))
    lines.append(
        f"{'all':<28}{'':<24}{s['train']['faces']:>7}{s['val']['faces']:>7}{s['test']['faces']:>7}{summary['faces']:>8}"
    )
    lines.append(f"faces from {summary['images']} source images")
    skipped = summary["skipped"]
    if skipped["total"]:
        lines.append(f"skipped {skipped['total']}: " + ", ".join(f"{k} {v}" for k, v in skipped["by_reason"].items()))
    else:
        lines.append("skipped 0")
    nd = summary["near_duplicates"]
    lines.append(
        f"near-duplicate crop pairs (phash distance <= {nd['max_distance']}): {nd['pairs']},"
        f" across splits: {nd['cross_split_pairs']}"
    )
    return "\n".join(lines)
