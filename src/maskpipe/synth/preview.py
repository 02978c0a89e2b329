"""A preview grid of source | synthetic pairs that a person can judge at a glance."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw, ImageFont

from maskpipe.labels import INCORRECT

TILE = 128
CAPTION = 30
GAP = 6
PAIRS_PER_ROW = 4


def _font(size: int):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1
        return ImageFont.load_default()


def pick_preview(records: pd.DataFrame, pairs: int) -> pd.DataFrame:
    """A fixed, varied sample: about a third incorrectly worn, mask types mixed.

    Order comes from a hash of the synth id, so it does not change with worker count.
    """
    if records.empty or pairs <= 0:
        return records.head(0)
    order = records.assign(_key=records["synth_id"].map(lambda s: hashlib.sha1(s.encode()).hexdigest()))
    order = order.sort_values("_key")
    incorrect = order[order["label"] == INCORRECT]
    correct = order[order["label"] != INCORRECT]
    n_incorrect = min(len(incorrect), max(pairs // 3, pairs - len(correct)))
    chosen = pd.concat([correct.head(pairs - n_incorrect), incorrect.head(n_incorrect)])
    return chosen.drop(columns="_key").reset_index(drop=True)


def _thumb(path: Path) -> Image.Image:
    with Image.open(path) as img:
        return img.convert("RGB").resize((TILE, TILE), Image.LANCZOS)


def render_preview(records: pd.DataFrame, base: Path, pairs: int, title: str) -> Image.Image:
    """Rows of (source crop | synthetic image) pairs, each captioned with what was drawn."""
    chosen = pick_preview(records, pairs)
    rows = max(1, -(-len(chosen) // PAIRS_PER_ROW))
    pair_w = 2 * TILE + GAP
    width = PAIRS_PER_ROW * pair_w + (PAIRS_PER_ROW + 1) * GAP * 2
    header = 44
    height = header + rows * (TILE + CAPTION + GAP * 2) + GAP
    canvas = Image.new("RGB", (width, height), (250, 250, 250))
    draw = ImageDraw.Draw(canvas)
    draw.text((GAP * 2, 6), title, fill=(0, 0, 0), font=_font(15))
    draw.text((GAP * 2, 25), "each pair: source crop | synthetic image (caption: label / wear, mask, landmarks, head turn)",
              fill=(90, 90, 90), font=_font(12))  # fmt: skip
    small = _font(11)
    for i, row in enumerate(chosen.to_dict("records")):
        r, c = divmod(i, PAIRS_PER_ROW)
        x = GAP * 2 + c * (pair_w + GAP * 2)
        y = header + r * (TILE + CAPTION + GAP * 2)
        canvas.paste(_thumb(base / row["source_crop"]), (x, y))
        canvas.paste(_thumb(base / row["path"]), (x + TILE + GAP, y))
        incorrect = row["label"] == INCORRECT
        colour = (190, 60, 0) if incorrect else (0, 110, 40)
        label = f"INCORRECT: {row['wear'].replace('_', ' ')}" if incorrect else "with_mask"
        paint = row.get("color") or row.get("texture") or ""
        paint = f" + {Path(str(paint)).stem}" if isinstance(paint, str) and paint else ""
        draw.text((x, y + TILE + 2), label, fill=colour, font=small)
        detail = f"{row['mask_type']}{paint} | {row['landmark_method']} | {float(row['tilt']):+.0f} deg"
        draw.text((x, y + TILE + 15), detail, fill=(40, 40, 40), font=small)
    return canvas


def write_preview(records: pd.DataFrame, base: Path, pairs: int, title: str, target: Path) -> None:
    from maskpipe.io import atomic_path

    image = render_preview(records, base, pairs, title)
    with atomic_path(target) as tmp:
        image.save(tmp, format="PNG")
