"""MaskTheFace mask templates: masks.cfg anchors, RGBA images, colours and textures.

masks.cfg is an INI file with one section per template::

    [surgical]
    template: masks/templates/surgical.png
    mask_a: 21, 97      # top left: where the nose-tip line meets the jaw
    mask_b: 307, 22     # top centre: the nose bridge
    mask_c: 600, 99     # top right
    mask_d: 25, 322     # bottom left: where the lower-lip line meets the jaw
    mask_e: 295, 470    # bottom centre: the chin
    mask_f: 600, 323    # bottom right

(MaskTheFace's mask_face() pairs [a, b, c, f, e, d] with the same-named face points, so
each letter means the same place on the template and on the face; "left" is the image
left.) Template paths are relative to the MaskTheFace repository root; in a copied
dataset folder ``masks/templates/x.png`` lives at ``templates/x.png``. Sections without
a template (MaskTheFace's ``empty`` and ``inpaint``: faces with no mask drawn) are not
mask types here: nothing unmasked is ever written under a masked label.
"""

from __future__ import annotations

import configparser
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageColor

ANCHOR_KEYS = ("mask_a", "mask_b", "mask_c", "mask_d", "mask_e", "mask_f")
SIDES = ("front", "left", "right")
# Templates are kept at most this wide in memory; a face is at most a few hundred px wide.
WORKING_WIDTH = 640


class TemplateError(ValueError):
    """A bad masks.cfg or template file; the message names the file and the problem."""


@dataclass(frozen=True)
class MaskTemplate:
    name: str
    image: Image.Image  # RGBA, alpha = the mask's shape
    anchors: np.ndarray  # (6, 2) float: mask_a .. mask_f in image pixels


def _parse_point(cfg_path: Path, section: str, key: str, text: str) -> tuple[float, float]:
    parts = [p.strip() for p in text.split(",")]
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise TemplateError(f"{cfg_path}: [{section}] {key} = {text!r} is not 'x, y'") from None


def _template_file(root: Path, cfg_path: Path, section: str, declared: str) -> Path:
    """``masks/templates/x.png`` (MaskTheFace repo layout) -> ``<root>/templates/x.png``."""
    declared_path = Path(declared.strip())
    candidates = [root / declared_path]
    if declared_path.parts and declared_path.parts[0] == "masks":
        candidates.insert(0, root / Path(*declared_path.parts[1:]))
    candidates.append(root / "templates" / declared_path.name)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise TemplateError(f"{cfg_path}: [{section}] template {declared!r} not found under {root}")


def read_mask_config(cfg_path: str | Path) -> dict[str, tuple[Path, np.ndarray]]:
    """{template name: (image path, (6, 2) anchors)} for every section with a template."""
    cfg_path = Path(cfg_path)
    if not cfg_path.is_file():
        raise TemplateError(f"{cfg_path}: mask config not found")
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    parser.optionxform = str  # keys and section names are case-sensitive (N95, KN95)
    try:
        parser.read(cfg_path, encoding="utf-8")
    except configparser.Error as exc:
        raise TemplateError(f"{cfg_path}: not a valid INI file ({exc.__class__.__name__}: {exc})") from exc
    root = cfg_path.parent
    out: dict[str, tuple[Path, np.ndarray]] = {}
    for section in parser.sections():
        entries = parser[section]
        if "template" not in entries:
            continue  # empty / inpaint: no mask is drawn, so not a mask type here
        missing = [key for key in ANCHOR_KEYS if key not in entries]
        if missing:
            raise TemplateError(f"{cfg_path}: [{section}] lacks {', '.join(missing)}")
        anchors = np.array([_parse_point(cfg_path, section, key, entries[key]) for key in ANCHOR_KEYS])
        # The homography needs four points in general position; the top and bottom rows
        # must not collapse onto one line.
        spread = np.linalg.svd(anchors - anchors.mean(axis=0), compute_uv=False)
        if spread[-1] < 1.0:
            raise TemplateError(f"{cfg_path}: [{section}] anchors lie on one line")
        out[section] = (_template_file(root, cfg_path, section, entries["template"]), anchors)
    if not out:
        raise TemplateError(f"{cfg_path}: no section with a template")
    return out


def _load_rgba(path: Path) -> Image.Image:
    try:
        with Image.open(path) as img:
            img.load()
            if img.mode not in ("RGBA", "LA", "PA") and not (img.mode == "P" and "transparency" in img.info):
                raise TemplateError(f"{path}: template has no alpha channel (mode {img.mode})")
            return img.convert("RGBA")
    except TemplateError:
        raise
    except Exception as exc:
        raise TemplateError(f"{path}: cannot read template ({exc.__class__.__name__}: {exc})") from exc


class TemplateSet:
    """The templates of one MaskTheFace folder, loaded on first use."""

    def __init__(self, root: str | Path, cfg_name: str = "masks.cfg"):
        self.root = Path(root)
        self.cfg_path = self.root / cfg_name
        self.entries = read_mask_config(self.cfg_path)
        self._cache: dict[str, MaskTemplate] = {}

    def check_types(self, mask_types) -> None:
        """Every requested mask type needs a front template (left / right are optional)."""
        for mask_type in mask_types:
            if mask_type not in self.entries:
                known = ", ".join(sorted(n for n in self.entries if not n.endswith(("_left", "_right"))))
                raise TemplateError(
                    f"{self.cfg_path}: no template for mask type {mask_type!r} (known: {known})"
                )

    def name_for(self, mask_type: str, side: str) -> str:
        """``surgical`` + ``left`` -> ``surgical_left`` when that template exists, else ``surgical``."""
        if side != "front" and f"{mask_type}_{side}" in self.entries:
            return f"{mask_type}_{side}"
        return mask_type

    def get(self, name: str) -> MaskTemplate:
        if name not in self._cache:
            path, anchors = self.entries[name]
            image = _load_rgba(path)
            scale = min(1.0, WORKING_WIDTH / image.width)
            if scale < 1.0:
                image = image.resize(
                    (round(image.width * scale), round(image.height * scale)), Image.LANCZOS, reducing_gap=2.0
                )
            self._cache[name] = MaskTemplate(name, image, anchors * scale)
        return self._cache[name]


def _shading(rgb: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """Per-pixel brightness relative to the mask's mean: keeps pleats and folds when painting."""
    luma = rgb @ np.array([0.299, 0.587, 0.114])
    inside = alpha > 0.5
    mean = luma[inside].mean() if inside.any() else luma.mean()
    return (luma / max(mean, 1.0))[..., None]


def paint_color(template: Image.Image, color: str, weight: float) -> Image.Image:
    """Blend ``color`` into the mask at ``weight`` (0 = template colour), keeping its shading."""
    rgba = np.asarray(template, dtype=np.float64)
    rgb, alpha = rgba[..., :3], rgba[..., 3] / 255
    tint = np.array(ImageColor.getrgb(color)[:3], dtype=np.float64)
    painted = np.clip(tint * _shading(rgb, alpha), 0, 255)
    out = (1 - weight) * rgb + weight * painted
    return Image.fromarray(np.dstack([out, rgba[..., 3]]).round().astype(np.uint8), "RGBA")


def paint_texture(
    template: Image.Image, texture: Image.Image, weight: float, tiles_across: float = 3.0
) -> Image.Image:
    """Blend a fabric texture, tiled ``tiles_across`` times over the mask width, at ``weight``."""
    rgba = np.asarray(template, dtype=np.float64)
    rgb, alpha = rgba[..., :3], rgba[..., 3] / 255
    tile_w = max(8, round(template.width / tiles_across))
    tile = texture.convert("RGB")
    tile = tile.resize((tile_w, max(8, round(tile.height * tile_w / tile.width))), Image.LANCZOS)
    reps_y = -(-template.height // tile.height)
    reps_x = -(-template.width // tile.width)
    tiled = np.tile(np.asarray(tile, dtype=np.float64), (reps_y, reps_x, 1))[
        : template.height, : template.width
    ]
    painted = np.clip(tiled * _shading(rgb, alpha), 0, 255)
    out = (1 - weight) * rgb + weight * painted
    return Image.fromarray(np.dstack([out, rgba[..., 3]]).round().astype(np.uint8), "RGBA")


def load_texture(root: str | Path, relative: str) -> Image.Image:
    path = Path(root) / "textures" / relative
    if not path.is_file():
        raise TemplateError(f"{path}: texture not found (params synthesize.textures)")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("RGB")
    except Exception as exc:
        raise TemplateError(f"{path}: cannot read texture ({exc.__class__.__name__}: {exc})") from exc
