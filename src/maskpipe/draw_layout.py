"""Where to draw face labels and the legend on an annotated picture: pure geometry, no drawing.

Crowd photos put many small faces side by side; a label drawn at each box's top-left corner then
covers its neighbours' labels, and labels of faces at the border run off the picture. The drawing
code (CLI, HTTP page, video writer) measures its label texts and asks here where to put them:

    spots = place_labels(face_boxes, label_sizes, (width, height))   # one (x, y) per label
    entries = legend_entries(labels)                                   # [("with_mask", 3), ...]
    corner = place_legend(legend_size, (width, height), face_boxes)    # (x, y) of the legend box

Boxes are (x0, y0, x1, y1) in pixels; a size is (width, height); a spot is the top-left corner.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence

Box = tuple[float, float, float, float]
Size = tuple[float, float]

LEGEND_ORDER = ("with_mask", "without_mask", "mask_weared_incorrect", "anomaly")


def overlap(a: Box, b: Box) -> float:
    """Area shared by two boxes (0 when apart or only touching)."""
    w = min(a[2], b[2]) - max(a[0], b[0])
    h = min(a[3], b[3]) - max(a[1], b[1])
    return w * h if w > 0 and h > 0 else 0.0


def clamp_into(x: float, y: float, size: Size, image: Size) -> tuple[float, float]:
    """Move a box of ``size`` with top-left (x, y) inside the image (top-left wins when it is too big)."""
    w, h = size
    return max(0.0, min(x, image[0] - w)), max(0.0, min(y, image[1] - h))


def _candidates(face: Box, size: Size, gap: float) -> list[tuple[float, float]]:
    x0, y0, x1, y1 = face
    w, h = size
    return [
        (x0, y0 - h - gap),  # above, left-aligned (the usual place)
        (x0, y1 + gap),  # below, left-aligned
        (x1 - w, y0 - h - gap),  # above, right-aligned
        (x1 - w, y1 + gap),  # below, right-aligned
        (x1 + gap, y0),  # right of the box
        (x0 - w - gap, y0),  # left of the box
        (x0, y0),  # inside the box, top
        (x0, y1 - h),  # inside the box, bottom
    ]


def place_labels(
    faces: Sequence[Box], sizes: Sequence[Size], image: Size, gap: float = 1.0
) -> list[tuple[float, float]]:
    """Top-left corner of each face's label: inside the image, not over other labels where possible.

    Faces are placed top to bottom, left to right; each label takes the first candidate spot
    (above its box, below, right-aligned, beside, inside) that covers no placed label and no other
    face; failing that, the spot covering the least of them (labels weigh more than faces).
    """
    if len(faces) != len(sizes):
        raise ValueError(f"{len(faces)} faces but {len(sizes)} label sizes")
    order = sorted(range(len(faces)), key=lambda i: (faces[i][1], faces[i][0]))
    placed: list[Box] = []
    out: dict[int, tuple[float, float]] = {}
    for i in order:
        w, h = sizes[i]
        best, best_cost = None, None
        for cx, cy in _candidates(faces[i], sizes[i], gap):
            x, y = clamp_into(cx, cy, sizes[i], image)
            rect = (x, y, x + w, y + h)
            cost = 3 * sum(overlap(rect, p) for p in placed) + sum(
                overlap(rect, f) for j, f in enumerate(faces) if j != i
            )
            if best_cost is None or cost < best_cost:
                best, best_cost = (x, y), cost
            if cost == 0:
                break
        out[i] = best
        placed.append((best[0], best[1], best[0] + w, best[1] + h))
    return [out[i] for i in range(len(faces))]


def legend_entries(labels: Iterable[str]) -> list[tuple[str, int]]:
    """(label, count) per label present: known classes in a fixed order, then others by name."""
    counts = Counter(labels)
    known = [(k, counts[k]) for k in LEGEND_ORDER if counts.get(k)]
    rest = sorted((k, v) for k, v in counts.items() if k not in LEGEND_ORDER)
    return known + rest


def legend_text(entries: Sequence[tuple[str, int]]) -> list[str]:
    """One line per entry, and a total line: ``with_mask: 3``."""
    return [f"{label}: {count}" for label, count in entries] + (
        [f"faces: {sum(c for _, c in entries)}"] if entries else []
    )


def place_legend(
    size: Size, image: Size, faces: Sequence[Box] = (), margin: float = 4.0
) -> tuple[float, float]:
    """Top-left corner of the legend: the image corner (bottom-left, bottom-right, top-left,
    top-right) where it covers the least face area; inside the image."""
    w, h = size
    W, H = image
    corners = [
        (margin, H - h - margin),
        (W - w - margin, H - h - margin),
        (margin, margin),
        (W - w - margin, margin),
    ]
    best, best_cost = None, None
    for cx, cy in corners:
        x, y = clamp_into(cx, cy, size, image)
        cost = sum(overlap((x, y, x + w, y + h), f) for f in faces)
        if best_cost is None or cost < best_cost:
            best, best_cost = (x, y), cost
    return best
