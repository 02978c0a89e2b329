"""The synthesize stage's library: masked faces drawn on unmasked face crops.

One synthetic image per source face. What a face gets (label, wear, mask type, colour,
texture) is drawn from a generator seeded by ``seed`` and the face id, so the result does
not depend on worker scheduling or on which other faces are in the run.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import re
from collections import Counter
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from PIL import Image, ImageColor

from maskpipe.imaging import ImageReadError, open_rgb
from maskpipe.io import atomic_dir, write_csv
from maskpipe.labels import INCORRECT, WITH_MASK, WITHOUT_MASK
from maskpipe.schemas import CROP_INDEX_COLUMNS, SYNTH_INDEX_COLUMNS, SYNTH_SKIP_COLUMNS
from maskpipe.synth.landmarks import BOX, DLIB68, Landmarks, face_rect_in_crop, find_landmarks, is_letterboxed
from maskpipe.synth.placement import (
    BELOW_NOSE,
    BELOW_NOSE_DEPTH,
    CORRECT,
    MOUTH_OUTER,
    NOSTRILS,
    ON_CHIN,
    PlacementError,
    apply_homography,
    face_anchor_points,
    fit_homography,
    fold_check,
    scale_for,
    template_side,
    warp_template,
    wear_clip,
    yaw_degrees,
)
from maskpipe.synth.templates import TemplateSet, load_texture, paint_color, paint_texture

COVERED = 0.5  # alpha at or above this counts as covered (also the binary mask threshold)


class SynthesisError(ValueError):
    """Bad input to the stage (params, crop index); the message says which and why."""


class SkipFace(Exception):
    """This face gets no synthetic image. ``code`` is a fixed phrase (counted in the metrics),
    the message adds the measured details (skipped.csv)."""

    def __init__(self, code: str, detail: str = ""):
        super().__init__(f"{code} ({detail})" if detail else code)
        self.code = code


# --------------------------------------------------------------------------- settings


@dataclass(frozen=True)
class Settings:
    sources: tuple[str, ...]
    mask_types: tuple[str, ...]
    colors: tuple[str, ...] = ()
    color_weight: float = 0.5
    color_fraction: float = 0.0
    textures: tuple[str, ...] = ()
    texture_weight: float = 0.5
    texture_fraction: float = 0.0
    paint_types: tuple[str, ...] = ()
    incorrect_fraction: float = 0.25
    incorrect_wear: tuple[str, ...] = (BELOW_NOSE, ON_CHIN)
    # relative frequency of each incorrect_wear entry (params: a mapping wear -> weight); () = uniform
    incorrect_wear_weights: tuple[float, ...] = ()
    # below_nose top edge, drawn per face in [low, high]: 0 = right under the nose, 1 = at the lip
    below_nose_depth: tuple[float, float] = (BELOW_NOSE_DEPTH, BELOW_NOSE_DEPTH)
    # resample each image to its source face's own pixel size and back: a small face from a
    # crowd photo was enlarged to `size`, so a mask drawn at `size` would be sharp on a blurry face
    native_resolution: bool = False
    tilt_threshold_deg: float = 15.0
    brightness_match: float = 0.5
    saturation_match: float = 0.5
    max_outside_box: float = 0.15
    max_misfit: float = 0.2
    detector_upsample: int = 1
    size: int = 256
    max_faces: int | None = None
    workers: int = 2
    preview_pairs: int = 24
    # masked versions drawn per source face (each its own mask type, colour, wear and depth): the
    # rare class needs more faces than there are unmasked sources
    variants: int = 1
    seed: int = 0

    @classmethod
    def from_params(
        cls, section: dict[str, Any], seed: int, where: str = "params.yaml synthesize"
    ) -> Settings:
        known = set(cls.__dataclass_fields__) - {"seed", "incorrect_wear_weights"}
        unknown = sorted(set(section) - known)
        if unknown:
            raise SynthesisError(f"{where}: unknown key(s) {', '.join(unknown)}")
        values: dict[str, Any] = {}
        for key, value in section.items():
            default = cls.__dataclass_fields__[key].default
            if key == "below_nose_depth":
                if not (
                    isinstance(value, (list, tuple))
                    and len(value) == 2
                    and all(isinstance(v, (int, float)) for v in value)
                ):
                    raise SynthesisError(f"{where}.{key}: expected [low, high], got {value!r}")
                value = (float(value[0]), float(value[1]))
            elif key == "incorrect_wear" and isinstance(value, dict):  # {below_nose: 3, chin: 1}
                weights = list(value.values())
                if not all(isinstance(w, (int, float)) and w >= 0 for w in weights) or sum(weights) <= 0:
                    raise SynthesisError(f"{where}.{key}: weights must be numbers >= 0, not all 0: {value!r}")
                values["incorrect_wear_weights"] = tuple(float(w) / sum(weights) for w in weights)
                value = tuple(str(k) for k in value)
            elif isinstance(default, tuple) or key in ("sources", "mask_types"):
                if not isinstance(value, (list, tuple)):
                    raise SynthesisError(f"{where}.{key}: expected a list, got {value!r}")
                value = tuple(str(v) for v in value)
            values[key] = value
        settings = cls(seed=int(seed), **values)
        settings.validate(where)
        return settings

    def validate(self, where: str = "params.yaml synthesize") -> None:
        if not self.sources:
            raise SynthesisError(f"{where}.sources: empty")
        if not self.mask_types:
            raise SynthesisError(f"{where}.mask_types: empty")
        for key in ("color_weight", "color_fraction", "texture_weight", "texture_fraction",
                    "incorrect_fraction", "brightness_match", "saturation_match", "max_outside_box", "max_misfit"):  # fmt: skip
            value = getattr(self, key)
            if not isinstance(value, (int, float)) or not 0 <= value <= 1:
                raise SynthesisError(f"{where}.{key}: expected a number in [0, 1], got {value!r}")
        if self.color_fraction + self.texture_fraction > 1:
            raise SynthesisError(f"{where}: color_fraction + texture_fraction exceeds 1")
        if self.color_fraction > 0 and not self.colors:
            raise SynthesisError(f"{where}.colors: empty while color_fraction > 0")
        if self.texture_fraction > 0 and not self.textures:
            raise SynthesisError(f"{where}.textures: empty while texture_fraction > 0")
        for color in self.colors:
            try:
                ImageColor.getrgb(color)
            except ValueError:
                raise SynthesisError(f"{where}.colors: {color!r} is not a colour") from None
        bad_wear = [w for w in self.incorrect_wear if w not in (BELOW_NOSE, ON_CHIN)]
        if bad_wear or (self.incorrect_fraction > 0 and not self.incorrect_wear):
            raise SynthesisError(f"{where}.incorrect_wear: use {BELOW_NOSE} and/or {ON_CHIN}")
        low, high = self.below_nose_depth
        if not 0 <= low <= high <= 1:
            raise SynthesisError(
                f"{where}.below_nose_depth: expected 0 <= low <= high <= 1, got {[low, high]}"
            )
        unknown_paint = sorted(set(self.paint_types) - set(self.mask_types))
        if unknown_paint:
            raise SynthesisError(f"{where}.paint_types: {', '.join(unknown_paint)} not in mask_types")
        if not 0 <= float(self.tilt_threshold_deg) <= 90:
            raise SynthesisError(f"{where}.tilt_threshold_deg: expected 0-90")
        if int(self.size) < 32:
            raise SynthesisError(f"{where}.size: at least 32 px")
        if self.max_faces is not None and int(self.max_faces) < 1:
            raise SynthesisError(f"{where}.max_faces: null or >= 1")
        if int(self.workers) < 1:
            raise SynthesisError(f"{where}.workers: at least 1")
        if not isinstance(self.variants, int) or self.variants < 1:
            raise SynthesisError(f"{where}.variants: an integer >= 1, got {self.variants!r}")


# --------------------------------------------------------------------------- per-face plan


@dataclass(frozen=True)
class Plan:
    label: str
    wear: str
    mask_type: str
    color: str = ""
    texture: str = ""
    depth: float = BELOW_NOSE_DEPTH  # below_nose: where the top edge sits (placement.wear_clip_level)


def face_seed(seed: int, face_id: str) -> int:
    """A 64-bit seed from the run seed and the face id (stable across processes and runs)."""
    digest = hashlib.sha256(f"{seed}:{face_id}".encode()).digest()
    return int.from_bytes(digest[:8], "little")


def plan_for(face_id: str, settings: Settings) -> Plan:
    rng = np.random.default_rng(face_seed(settings.seed, face_id))
    incorrect = rng.random() < settings.incorrect_fraction
    weights = list(settings.incorrect_wear_weights) or None
    wear = str(rng.choice(list(settings.incorrect_wear), p=weights)) if incorrect else CORRECT
    mask_type = str(rng.choice(list(settings.mask_types)))
    paint = rng.random()
    color = texture = ""
    if mask_type in settings.paint_types:
        if paint < settings.color_fraction:
            color = str(rng.choice(list(settings.colors)))
        elif paint < settings.color_fraction + settings.texture_fraction:
            texture = str(rng.choice(list(settings.textures)))
    # drawn last, so the draws above (and with them every earlier run's plans) stay the same
    depth = float(rng.uniform(*settings.below_nose_depth))
    return Plan(INCORRECT if incorrect else WITH_MASK, wear, mask_type, color, texture, depth)


def wear_attempts(plan: Plan, settings: Settings) -> list[Plan]:
    """The planned wear first; an incorrectly worn mask may fall back to the other incorrect
    wear (a crop cut at the chin has no room for a mask on the chin, but one under the nose
    fits). The label never changes."""
    attempts = [plan]
    if plan.wear != CORRECT:
        attempts += [replace(plan, wear=w) for w in settings.incorrect_wear if w != plan.wear]
    return attempts


# --------------------------------------------------------------------------- drawing one face


@dataclass
class FaceResult:
    image: Image.Image  # RGB
    mask: Image.Image  # L, 0 / 255
    landmarks: Landmarks
    tilt: float
    template: str
    coverage: dict[str, float] = field(default_factory=dict)


def sample_alpha(alpha: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear alpha at ``points`` (0 outside the image: a point off the crop is not covered)."""
    h, w = alpha.shape
    out = np.zeros(len(points))
    for i, (x, y) in enumerate(points):
        if not (0 <= x <= w - 1 and 0 <= y <= h - 1):
            continue
        x0, y0 = int(np.floor(x)), int(np.floor(y))
        x1, y1 = min(x0 + 1, w - 1), min(y0 + 1, h - 1)
        fx, fy = x - x0, y - y0
        top = alpha[y0, x0] * (1 - fx) + alpha[y0, x1] * fx
        bottom = alpha[y1, x0] * (1 - fx) + alpha[y1, x1] * fx
        out[i] = top * (1 - fy) + bottom * fy
    return out


def coverage_problem(alpha: np.ndarray, points: np.ndarray, wear: str) -> tuple[str, dict[str, float]]:
    """'' when the mask sits as ``wear`` says, else why not; plus the measured coverage.

    correct:    nose tip and the whole outer lip line covered
    below_nose: mouth covered, nose tip free (the nostrils may be partly covered, as
                with a real mask pulled under the nose)
    chin:       chin covered, nose tip and mouth free
    """
    nose_tip = float(sample_alpha(alpha, points[[30]])[0])
    # For a lowered mask the visible tip must be free: the tip and halfway down to the nose base.
    tip_region = float(sample_alpha(alpha, np.array([points[30], (points[30] + points[33]) / 2])).max())
    nostrils = float(sample_alpha(alpha, points[NOSTRILS]).max())
    mouth = sample_alpha(alpha, points[MOUTH_OUTER])
    chin = float(sample_alpha(alpha, points[[8]])[0])
    measured = {"nose_tip": nose_tip, "nose_tip_region": tip_region, "nostrils": nostrils, "mouth_min": float(mouth.min()),
                "mouth_max": float(mouth.max()), "chin": chin}  # fmt: skip
    if wear == CORRECT:
        if nose_tip < COVERED:
            return "mask leaves the nose tip uncovered", measured
        if mouth.min() < COVERED:
            return "mask leaves part of the mouth uncovered", measured
    elif wear == BELOW_NOSE:
        if tip_region >= COVERED:
            return "lowered mask still covers the nose tip", measured
        if mouth.min() < COVERED:
            return "lowered mask leaves part of the mouth uncovered", measured
    else:
        if tip_region >= COVERED:
            return "chin mask still covers the nose", measured
        if mouth.max() >= COVERED:
            return "chin mask still covers part of the mouth", measured
        if chin < COVERED:
            return "chin mask leaves the chin uncovered", measured
    return "", measured


def outside_fraction(alpha: np.ndarray, rect, margin: float) -> float:
    """Share of the mask's pixels outside ``rect`` grown by ``margin`` x its size per side."""
    covered = alpha >= COVERED
    total = int(covered.sum())
    if total == 0:
        return 1.0
    x0, y0, x1, y1 = rect
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    h, w = alpha.shape
    xa, xb = max(0, int(np.floor(x0 - mx))), min(w, int(np.ceil(x1 + mx)))
    ya, yb = max(0, int(np.floor(y0 - my))), min(h, int(np.ceil(y1 + my)))
    inside = int(covered[ya:yb, xa:xb].sum())
    return 1.0 - inside / total


# How far outside the face box the mask may reach before it counts as "outside": ear loops
# and straps run to the ears and a chin-worn mask hangs below the chin, both beyond
# annotators' face boxes; the crop stage's own padding (10 % per side) is that margin.
BOX_MARGIN = 0.10


def _match_tone(warped: Image.Image, image: np.ndarray, rect, settings: Settings) -> Image.Image:
    """Move the mask's brightness and saturation towards the lower face's (MaskTheFace's idea)."""
    rgba = np.asarray(warped)
    alpha = rgba[..., 3] >= 128
    if not alpha.any() or (settings.brightness_match == 0 and settings.saturation_match == 0):
        return warped
    x0, y0, x1, y1 = (int(round(v)) for v in rect)
    lower = image[(y0 + y1) // 2 : max(y1, (y0 + y1) // 2 + 1), x0 : max(x1, x0 + 1)]
    face_hsv = np.asarray(Image.fromarray(np.ascontiguousarray(lower)).convert("HSV"), dtype=np.float64)
    mask_hsv = np.asarray(
        Image.fromarray(np.ascontiguousarray(rgba[..., :3])).convert("HSV"), dtype=np.float64
    )
    face_s, face_v = face_hsv[..., 1].mean(), face_hsv[..., 2].mean()
    mask_s, mask_v = mask_hsv[..., 1][alpha].mean(), mask_hsv[..., 2][alpha].mean()
    gain_v = np.clip(1 + settings.brightness_match * (face_v - mask_v) / 255, 0.3, 1.5)
    gain_s = np.clip(1 + settings.saturation_match * (face_s - mask_s) / 255, 0.0, 1.5)
    mask_hsv[..., 1] = np.clip(mask_hsv[..., 1] * gain_s, 0, 255)
    mask_hsv[..., 2] = np.clip(mask_hsv[..., 2] * gain_v, 0, 255)
    rgb = np.asarray(Image.fromarray(mask_hsv.round().astype(np.uint8), "HSV").convert("RGB"))
    return Image.fromarray(np.dstack([rgb, rgba[..., 3]]), "RGBA")


def template_misfit(h: np.ndarray, anchors: np.ndarray, six: np.ndarray) -> float:
    """How far the face points lie from where ``h`` puts the template's anchors, relative to
    their spread. Large when the six points are no plausible view of the template (a poor
    landmark fit, or a side template whose anchors disagree with the face), which would
    draw a twisted mask."""
    residual = np.sqrt(((apply_homography(h, anchors) - six) ** 2).sum(axis=1).mean())
    spread = np.sqrt(((six - six.mean(axis=0)) ** 2).sum(axis=1).mean())
    return float(residual / max(spread, 1e-9))


def _choose_template(templates: TemplateSet, mask_type: str, side: str, six: np.ndarray, max_misfit: float):
    """The side template for a turned head, else (or when it fits badly) the front one."""
    names = list(dict.fromkeys([templates.name_for(mask_type, side), mask_type]))
    fits = []
    for name in names:
        template = templates.get(name)
        try:
            h = fit_homography(template.anchors, six)
        except PlacementError as exc:
            fits.append(f"{name}: {exc}")
            continue
        misfit = template_misfit(h, template.anchors, six)
        if misfit <= max_misfit:
            return template, h, misfit
        fits.append(f"{name} misfit {misfit:.2f}")
    raise SkipFace("face points do not fit the template", f"{'; '.join(fits)} > {max_misfit}")


def synthesize_face(
    image: np.ndarray,
    rect: tuple[float, float, float, float],
    plan: Plan,
    templates: TemplateSet,
    textures: dict[str, Image.Image],
    settings: Settings,
    landmarks: Landmarks | None = None,
    native: tuple[int, int] | None = None,
) -> FaceResult:
    """Draw ``plan``'s mask on the face in ``rect`` of the RGB uint8 crop ``image``.

    ``native``: the crop's size in source-photo pixels; with settings.native_resolution the
    result is resampled to it and back, so the mask gets the face's own blur.
    Raises SkipFace when the mask would not sit as the label says.
    """
    if landmarks is None:
        landmarks = find_landmarks(image, rect, upsample=settings.detector_upsample)
    points = landmarks.points
    tilt = yaw_degrees(points)
    side = template_side(tilt, settings.tilt_threshold_deg)
    try:
        six = face_anchor_points(points, plan.wear, plan.depth)
    except PlacementError as exc:
        raise SkipFace("unusable anchor points", str(exc)) from None
    problem = fold_check(six)
    if problem:
        raise SkipFace("unusable anchor points", problem)
    template, h, misfit = _choose_template(templates, plan.mask_type, side, six, settings.max_misfit)
    picture, anchors = template.image, template.anchors
    # Shrink the template close to its final size first: the perspective warp samples
    # without low-pass filtering, so a large reduction there would alias.
    scale = scale_for(anchors, six)
    if scale < 0.5:
        factor = min(1.0, 2 * scale)
        size = (max(1, round(picture.width * factor)), max(1, round(picture.height * factor)))
        shrink = np.diag([picture.width / size[0], picture.height / size[1], 1.0])
        picture = picture.resize(size, Image.LANCZOS)
        h = h @ shrink  # the same mapping, from the smaller template's pixels
    if plan.color:
        picture = paint_color(picture, plan.color, settings.color_weight)
    elif plan.texture:
        picture = paint_texture(picture, textures[plan.texture], settings.texture_weight)
    size = (image.shape[1], image.shape[0])
    warped = warp_template(picture, h, size)
    warped = _match_tone(warped, image, rect, settings)
    rgba = np.asarray(warped, dtype=np.float64)
    alpha = wear_clip(rgba[..., 3] / 255, points, plan.wear, plan.depth)
    problem, coverage = coverage_problem(alpha, points, plan.wear)
    if problem:
        raise SkipFace(problem, ", ".join(f"{k} {v:.2f}" for k, v in coverage.items()))
    outside = outside_fraction(alpha, rect, BOX_MARGIN)
    coverage["outside_box"] = outside
    coverage["misfit"] = misfit
    if outside > settings.max_outside_box:
        raise SkipFace("mask reaches outside the face box", f"{outside:.0%} of it")
    out = image.astype(np.float64) * (1 - alpha[..., None]) + rgba[..., :3] * alpha[..., None]
    result = Image.fromarray(out.round().clip(0, 255).astype(np.uint8), "RGB")
    if (
        image.ndim == 3
        and np.array_equal(image[..., 0], image[..., 1])
        and np.array_equal(image[..., 1], image[..., 2])
    ):
        # A grayscale photo (LFW) stays grayscale: colour must not give the label away.
        result = result.convert("L").convert("RGB")
    mask = Image.fromarray(((alpha >= COVERED) * 255).astype(np.uint8), "L")
    if settings.native_resolution and native is not None:
        result = to_native_resolution(result, native)
    if result.size != (settings.size, settings.size):
        result = result.resize((settings.size, settings.size), Image.LANCZOS)
        mask = mask.resize((settings.size, settings.size), Image.NEAREST)
    return FaceResult(result, mask, landmarks, tilt, template.name, coverage)


def to_native_resolution(image: Image.Image, native: tuple[int, int]) -> Image.Image:
    """``image`` shrunk to ``native`` (w, h) and enlarged back as the crop stage enlarges crops
    (bicubic); unchanged when it is not larger than ``native``."""
    w, h = max(1, int(round(native[0]))), max(1, int(round(native[1])))
    if w >= image.width and h >= image.height:
        return image
    small = image.resize((min(w, image.width), min(h, image.height)), Image.Resampling.BOX)
    return small.resize(image.size, Image.Resampling.BICUBIC)


# --------------------------------------------------------------------------- the crop index


def read_crop_index(index_csv: Path) -> pd.DataFrame:
    index_csv = Path(index_csv)
    if not index_csv.is_file():
        raise SynthesisError(f"{index_csv}: crop index not found (run the crop stage first)")
    try:
        frame = pd.read_csv(
            index_csv, dtype={"face_id": str, "crop_path": str, "dataset": str, "label": str, "split": str}
        )
    except Exception as exc:
        raise SynthesisError(f"{index_csv}: cannot read CSV ({exc.__class__.__name__}: {exc})") from exc
    missing = [c for c in CROP_INDEX_COLUMNS if c not in frame.columns]
    if missing:
        raise SynthesisError(f"{index_csv}: missing column(s) {', '.join(missing)}")
    if frame["face_id"].duplicated().any():
        dup = frame.loc[frame["face_id"].duplicated(), "face_id"].iloc[0]
        raise SynthesisError(f"{index_csv}: face_id {dup!r} appears more than once")
    return frame


def select_faces(frame: pd.DataFrame, settings: Settings) -> pd.DataFrame:
    """Unmasked faces from the source datasets, in face_id order (capped by max_faces)."""
    chosen = frame[(frame["label"] == WITHOUT_MASK) & frame["dataset"].isin(settings.sources)]
    chosen = chosen.sort_values("face_id", kind="stable").reset_index(drop=True)
    if settings.max_faces is not None and len(chosen) > settings.max_faces:
        # A seeded sample, so a small cap still mixes every source dataset.
        rng = np.random.default_rng(face_seed(settings.seed, "max_faces"))
        keep = np.sort(rng.choice(len(chosen), size=int(settings.max_faces), replace=False))
        chosen = chosen.iloc[keep].reset_index(drop=True)
    return chosen


@dataclass(frozen=True)
class CropFace:
    image: np.ndarray  # RGB uint8
    rect: tuple[float, float, float, float]  # the face box in crop pixels
    native: tuple[int, int] | None = None  # the crop's (w, h) in source-photo pixels (the padded box)


def load_crop_face(row: dict[str, Any], base: Path | None = None) -> CropFace:
    """The crop and the face box inside it."""
    path = Path(row["crop_path"])
    if not path.is_absolute():
        path = (base or Path.cwd()) / path
    image = np.asarray(open_rgb(path))
    box = tuple(float(row[k]) for k in ("box_xmin", "box_ymin", "box_xmax", "box_ymax"))
    pad = tuple(float(row[k]) for k in ("pad_xmin", "pad_ymin", "pad_xmax", "pad_ymax"))
    if not all(np.isfinite(box + pad)):
        raise ImageReadError(f"{path}: index row has no face box / padded box")
    letterbox = is_letterboxed(image, pad)
    try:
        rect = face_rect_in_crop((image.shape[1], image.shape[0]), box, pad, letterbox)
    except ValueError as exc:
        raise ImageReadError(f"{path}: {exc}") from None
    native = (int(round(pad[2] - pad[0])), int(round(pad[3] - pad[1])))
    return CropFace(image, rect, native)


def iter_source_faces(index_csv: Path, sources: tuple[str, ...] | None = None):
    """Rows (dicts) of the unmasked faces in a crop index, for tools such as mean_shape."""
    frame = read_crop_index(index_csv)
    chosen = frame[frame["label"] == WITHOUT_MASK]
    if sources:
        chosen = chosen[chosen["dataset"].isin(sources)]
    yield from chosen.sort_values("face_id").to_dict("records")


# --------------------------------------------------------------------------- the run

_SAFE = re.compile(r"[^A-Za-z0-9_.-]+")


def synth_id_for(face_id: str) -> str:
    """A file-name-safe id, unique even when two face ids sanitise alike."""
    digest = hashlib.sha1(face_id.encode("utf-8")).hexdigest()[:8]
    return f"{_SAFE.sub('_', face_id).strip('_.')[:80]}_{digest}"


_WORKER: dict[str, Any] = {}


def _init_worker(masktheface: str, settings: Settings, base: str, out_tmp: str, out_rel: str) -> None:
    templates = TemplateSet(masktheface)
    _WORKER.update(
        templates=templates,
        textures={t: load_texture(masktheface, t) for t in settings.textures},
        settings=settings,
        base=Path(base),
        out_tmp=Path(out_tmp),
        out_rel=out_rel,
    )


def variant_key(face_id: str, variant: int) -> str:
    """The id a synthetic face's plan and file name come from: the source face id for the first
    version (so ``variants: 1`` gives the files it always gave), ``<face id>#v<k>`` after it."""
    return face_id if variant == 0 else f"{face_id}#v{variant}"


def _process(row: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Every masked version of one source face: its crop is read and its landmarks are found once
    (the landmark search is most of a face's time), then each version is drawn from its own plan."""
    settings: Settings = _WORKER["settings"]
    face_id = str(row["face_id"])
    skip = {"source_face_id": face_id, "source_crop": row["crop_path"], "source_dataset": row["dataset"],
            "split": row["split"], "landmark_method": ""}  # fmt: skip
    try:
        crop = load_crop_face(row, _WORKER["base"])
    except ImageReadError as exc:
        return [("skip", {**skip, "reason_code": "unreadable crop", "reason": str(exc)})] * settings.variants
    landmarks = find_landmarks(
        crop.image, crop.rect, upsample=settings.detector_upsample, dataset=str(row["dataset"])
    )
    skip["landmark_method"] = landmarks.method
    skip["detector_agreed"] = landmarks.detector_agreed
    return [_draw_version(row, crop, landmarks, variant, skip) for variant in range(settings.variants)]


def _draw_version(
    row: dict[str, Any], crop: CropFace, landmarks: Landmarks, variant: int, skip: dict[str, Any]
) -> tuple[str, dict[str, Any]]:
    settings: Settings = _WORKER["settings"]
    face_id = str(row["face_id"])
    key = variant_key(face_id, variant)
    plan = plan_for(key, settings)
    image, rect = crop.image, crop.rect
    result, failures = None, []
    for attempt in wear_attempts(plan, settings):
        try:
            result = synthesize_face(
                image,
                rect,
                attempt,
                _WORKER["templates"],
                _WORKER["textures"],
                settings,
                landmarks,
                native=crop.native,
            )
            plan = attempt
            break
        except SkipFace as exc:
            failures.append((attempt.wear, exc))
    if result is None:
        reason = "; ".join(f"{wear}: {exc}" for wear, exc in failures)
        return "skip", {**skip, "reason_code": failures[0][1].code, "reason": reason, "label": plan.label,
                        "wear": plan.wear, "mask_type": plan.mask_type}  # fmt: skip
    synth_id = synth_id_for(key)
    out_tmp: Path = _WORKER["out_tmp"]
    result.image.save(out_tmp / plan.label / f"{synth_id}.png")
    result.mask.save(out_tmp / "masks" / f"{synth_id}.png")
    out_rel = _WORKER["out_rel"]
    return "ok", {
        "synth_id": synth_id,
        "path": f"{out_rel}/{plan.label}/{synth_id}.png",
        "mask_path": f"{out_rel}/masks/{synth_id}.png",
        "source_face_id": face_id,
        "source_crop": row["crop_path"],
        "source_dataset": row["dataset"],
        "label": plan.label,
        "mask_type": plan.mask_type,
        "color": plan.color,
        "texture": plan.texture,
        "tilt": round(result.tilt, 1),
        "landmark_method": landmarks.method,
        "wear": plan.wear,
        "split": row["split"],
        "variant": variant,
        "template": result.template,
        "detector_agreed": landmarks.detector_agreed,
    }


def _relative_out(out_dir: Path, base: Path) -> str:
    """``out_dir`` as written in index.csv: relative to the repo when inside it (the contract's
    ``data/synthetic/...``), absolute otherwise."""
    try:
        return out_dir.resolve().relative_to(base.resolve()).as_posix()
    except ValueError:
        return out_dir.resolve().as_posix()


@dataclass
class RunResult:
    faces: int
    records: pd.DataFrame
    skipped: pd.DataFrame


def run_synthesis(
    crops_index: Path,
    masktheface: Path,
    out_dir: Path,
    settings: Settings,
    base: Path | None = None,
    progress: bool | None = None,
) -> RunResult:
    """Synthesize masked faces for every selected crop; replaces ``out_dir`` atomically."""
    base = Path(base or Path.cwd())
    templates = TemplateSet(masktheface)  # fails early, naming the bad file
    templates.check_types(settings.mask_types)
    for name in {templates.name_for(t, s) for t in settings.mask_types for s in ("front", "left", "right")}:
        templates.get(name)
    for texture in settings.textures:
        load_texture(masktheface, texture)
    faces = select_faces(read_crop_index(crops_index), settings)
    if faces.empty:
        raise SynthesisError(
            f"{crops_index}: no {WITHOUT_MASK} faces from {', '.join(settings.sources)} (params synthesize.sources)"
        )
    rows = faces.to_dict("records")  # one task per source face: its versions share its landmarks
    out_dir = Path(out_dir)
    out_rel = _relative_out(out_dir, base)
    from tqdm import tqdm

    with atomic_dir(out_dir) as tmp:
        for sub in (WITH_MASK, INCORRECT, "masks"):
            (tmp / sub).mkdir()
        init_args = (str(masktheface), settings, str(base), str(tmp), out_rel)
        bar = tqdm(
            total=len(rows) * settings.variants,
            desc="synthesize",
            unit="face",
            disable=None if progress is None else not progress,
        )
        outcomes: list[tuple[str, dict[str, Any]]] = []

        def collect(versions: list[tuple[str, dict[str, Any]]]) -> None:
            outcomes.extend(versions)
            bar.update(len(versions))

        with bar:
            if settings.workers > 1 and len(rows) > 1:
                # fork keeps the parent's imported dlib; each worker loads the models once.
                context = multiprocessing.get_context(
                    "fork" if "fork" in multiprocessing.get_all_start_methods() else None
                )
                with context.Pool(settings.workers, initializer=_init_worker, initargs=init_args) as pool:
                    for versions in pool.imap(_process, rows, chunksize=max(1, 4 // settings.variants)):
                        collect(versions)
            else:
                _init_worker(*init_args)
                for row in rows:
                    collect(_process(row))
        records = pd.DataFrame([r for kind, r in outcomes if kind == "ok"])
        skipped = pd.DataFrame([r for kind, r in outcomes if kind == "skip"])
        records = records.reindex(columns=[*SYNTH_INDEX_COLUMNS, "template", "detector_agreed"])
        skipped = skipped.reindex(
            columns=[*SYNTH_SKIP_COLUMNS, "label", "wear", "mask_type", "detector_agreed"]
        )
        records = records.sort_values("synth_id", kind="stable").reset_index(drop=True)
        skipped = skipped.sort_values("source_face_id", kind="stable").reset_index(drop=True)
        write_csv(tmp / "index.csv", records)
        write_csv(tmp / "skipped.csv", skipped)
    return RunResult(len(rows) * settings.variants, records, skipped)  # faces: source faces x variants


def _counts(series: pd.Series) -> dict[str, int]:
    return {str(k): int(v) for k, v in sorted(Counter(series.fillna("").astype(str)).items())}


def synthesis_metrics(result: RunResult) -> dict[str, Any]:
    """Counts only (no timings), so the same params and seed give the same file."""
    rec, skip = result.records, result.skipped
    methods = pd.concat([rec["landmark_method"], skip["landmark_method"]], ignore_index=True)
    agreed = pd.concat([rec["detector_agreed"], skip["detector_agreed"]], ignore_index=True)
    faces = result.faces
    painted = rec.apply(lambda r: "color" if r["color"] else ("texture" if r["texture"] else "plain"), axis=1) \
        if len(rec) else pd.Series(dtype=str)  # fmt: skip
    rec = rec.fillna({"color": "", "texture": ""})
    return {
        "faces_in": faces,
        "written": int(len(rec)),
        "skipped": int(len(skip)),
        "written_rate": round(len(rec) / faces, 4) if faces else 0.0,
        "landmark_rate": round(float((methods == DLIB68).sum()) / faces, 4) if faces else 0.0,
        "detector_agreement_rate": round(float(agreed.fillna(False).astype(bool).sum()) / faces, 4)
        if faces
        else 0.0,
        "by_label": _counts(rec["label"]),
        "by_wear": _counts(rec["wear"]),
        "by_mask_type": _counts(rec["mask_type"]),
        "by_template": _counts(rec["template"]),
        "by_landmark_method": {DLIB68: int((methods == DLIB68).sum()), BOX: int((methods == BOX).sum())},
        "by_source_dataset": _counts(rec["source_dataset"]),
        "by_split": _counts(rec["split"]),
        "by_paint": _counts(painted),
        "skip_reasons": _counts(skip["reason_code"]),
    }
