"""Where a mask goes on a face: six anchor points, head turn, homography, warp.

The six face points follow MaskTheFace (utils/aux_functions.py, get_six_points):
  a, c  the line through the nose tip, parallel to the eyes, where it meets the jaw
  b     the middle of the nose bridge
  d, f  the line through the bottom of the lower lip, where it meets the jaw
  e     the chin (landmark 8)
The template's mask_a..mask_f are mapped onto them by a least-squares homography.

Incorrectly worn masks slide the same mask down the face and fold away what would still
lie above the new top edge (wear_clip): "below_nose" has its top edge under the
nostrils, over the mouth; "chin" under the lower lip, over the chin.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from maskpipe.synth.landmarks import CHIN, JAW, NOSE_TIP, eye_frame

CORRECT = "correct"
BELOW_NOSE = "below_nose"
ON_CHIN = "chin"
WEARS = (CORRECT, BELOW_NOSE, ON_CHIN)
BELOW_NOSE_DEPTH = 0.33  # default top edge of a below_nose mask: a third from the nose base to the lip

NOSTRILS = slice(31, 36)
SUBNASAL = 33
UPPER_LIP_TOP = 51
LOWER_LIP_BOTTOM = 57
MOUTH_OUTER = slice(48, 60)
LOWER_LIP = (55, 56, 57, 58, 59)


class PlacementError(ValueError):
    """The anchors do not give a usable mask placement (the face is skipped, with this reason)."""


def _jaw_u_at(points: np.ndarray, centre, along, down, level: float) -> tuple[float, float]:
    """Where the line ``v = level`` (parallel to the eyes) meets the jaw, left and right.

    Each half of the jaw (0-8, 8-16) is interpolated as u(v). Lower than three quarters of
    the way down the jaw the width is held, so a line near or under the chin keeps a
    mask's width instead of collapsing to a point.
    """
    rel = points[JAW] - centre
    u, v = rel @ along, rel @ down
    sides = []
    for half in (slice(0, 9), slice(8, 17)):
        hu, hv = u[half], v[half]
        order = np.argsort(hv)
        hv, hu = hv[order], hu[order]
        limit = hv[-1] - 0.25 * (hv[-1] - hv[0])
        sides.append(float(np.interp(min(level, limit), hv, hu)))
    return sides[0], sides[1]


def face_anchor_points(
    points: np.ndarray, wear: str = CORRECT, depth: float = BELOW_NOSE_DEPTH
) -> np.ndarray:
    """The six face points a..f (crop pixels) for a mask worn as ``wear`` (``depth``: see wear_clip_level)."""
    if wear not in WEARS:
        raise ValueError(f"unknown wear {wear!r}; known: {', '.join(WEARS)}")
    centre, along, down, iod = eye_frame(points)
    if iod <= 0:
        raise PlacementError("eyes coincide")

    def uv(p):
        rel = np.asarray(p, dtype=np.float64) - centre
        return float(rel @ along), float(rel @ down)

    def xy(u, v):
        return centre + u * along + v * down

    nose_length = float(np.hypot(*(points[30] - points[27])))
    bridge_u, bridge_v = uv((points[27] + points[30]) / 2)
    lip_level = max(uv(points[i])[1] for i in LOWER_LIP)
    chin_u, chin_v = uv(points[CHIN])

    # Levels (distance below the eye line) of the top centre b, the top corners a/c, the
    # bottom corners d/f and the bottom centre e, as MaskTheFace places them: the eye line
    # moved down by the nose length meets the jaw at a/c.
    b_v, ac_v, df_v, e_v = bridge_v, nose_length, lip_level, chin_v
    # Incorrect wear slides the whole mask down (its lower part then hangs below the chin, as
    # a pulled-down mask does); wear_clip() then folds away what is left above the nose / lip.
    shift = wear_shift(points, wear, depth)
    # On the chin the lower part slides less: the fabric bunches under the jaw instead of
    # hanging a whole nose length below it.
    bottom_shift = shift * (0.6 if wear == ON_CHIN else 1.0)
    b_v, ac_v, df_v, e_v = b_v + shift, ac_v + shift, df_v + bottom_shift, e_v + bottom_shift
    a_u, c_u = _jaw_u_at(points, centre, along, down, ac_v)
    d_u, f_u = _jaw_u_at(points, centre, along, down, df_v)
    six = np.array(
        [xy(a_u, ac_v), xy(bridge_u, b_v), xy(c_u, ac_v), xy(d_u, df_v), xy(chin_u, e_v), xy(f_u, df_v)]
    )
    if not np.isfinite(six).all():
        raise PlacementError("anchor points not finite")
    return six


def _levels(points: np.ndarray) -> dict[str, float]:
    """Distances below the eye line of the features the wear variants refer to."""
    centre, _, down, _ = eye_frame(points)

    def level(p):
        return float((np.asarray(p, dtype=np.float64) - centre) @ down)

    lower_lip = level(points[LOWER_LIP_BOTTOM])
    return {
        "nose_tip": level(points[NOSE_TIP]),
        "subnasal": level(points[SUBNASAL]),
        "lip_top": level(points[UPPER_LIP_TOP]),
        "lower_lip": lower_lip,
        "lip_to_chin": max(level(points[CHIN]) - lower_lip, 1.0),
        "nose_length": float(np.hypot(*(points[30] - points[27]))),
    }


def wear_clip_level(points: np.ndarray, wear: str, depth: float = BELOW_NOSE_DEPTH) -> float | None:
    """Level below which an incorrectly worn mask starts (its top edge), None when correct.

    below_nose: ``depth`` of the way from under the nose to the top of the upper lip (default a
    third; 0 = right under the nose, where most real lowered masks in crowd photos sit);
    chin: a fifth of the way from the bottom of the lower lip to the chin.
    """
    if wear == CORRECT:
        return None
    lv = _levels(points)
    if wear == BELOW_NOSE:
        return lv["subnasal"] + float(depth) * (lv["lip_top"] - lv["subnasal"])
    return lv["lower_lip"] + 0.2 * lv["lip_to_chin"]


def wear_shift(points: np.ndarray, wear: str, depth: float = BELOW_NOSE_DEPTH) -> float:
    """How far (px, down the face) an incorrectly worn mask slides from the correct place.

    The top corners a/c (at nose-tip level when worn correctly) end just under the nose
    (below_nose: the mask's sides still cover the mouth corners) or at the top edge
    (chin: the mask covers the chin and hangs below it).
    """
    if wear == CORRECT:
        return 0.0
    lv = _levels(points)
    top_corners = lv["nose_length"]  # where face_anchor_points puts a/c for a correct mask
    return (
        wear_clip_level(points, wear, depth)
        - top_corners
        + (0.0 if wear == BELOW_NOSE else 0.1 * lv["lip_to_chin"])
    )


def wear_clip(
    alpha: np.ndarray, points: np.ndarray, wear: str, depth: float = BELOW_NOSE_DEPTH
) -> np.ndarray:
    """``alpha`` with everything above the wear's top edge removed (a 1 px soft edge).

    A lowered mask's top is pulled straight under the nose (or lip); the template's nose
    bridge bump would otherwise stick up over the nose tip.
    """
    level = wear_clip_level(points, wear, depth)
    if level is None:
        return alpha
    centre, _, down, _ = eye_frame(points)
    h, w = alpha.shape
    ys, xs = np.mgrid[0:h, 0:w]
    depth = (xs - centre[0]) * down[0] + (ys - centre[1]) * down[1] - level
    return alpha * np.clip(depth + 0.5, 0.0, 1.0)


def yaw_degrees(points: np.ndarray) -> float:
    """Head turn from the nose tip's place between the jaw edges (cylinder model).

    Negative: the nose points to the image left (the face turns to the image left).
    """
    centre, along, down, _ = eye_frame(points)
    level = float((points[NOSE_TIP] - centre) @ down)
    left_u, right_u = _jaw_u_at(points, centre, along, down, level)
    nose_u = float((points[NOSE_TIP] - centre) @ along)
    width = right_u - left_u
    if width <= 1e-6:
        return 0.0
    ratio = ((nose_u - left_u) - (right_u - nose_u)) / width
    return float(np.degrees(np.arcsin(np.clip(ratio, -1.0, 1.0))))


def template_side(yaw: float, threshold_deg: float) -> str:
    """front / left / right template for a head turned ``yaw`` degrees."""
    if yaw < -threshold_deg:
        return "left"
    if yaw > threshold_deg:
        return "right"
    return "front"


def fit_homography(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """3x3 H with dst ~ H @ src, least squares over >= 4 point pairs (normalised DLT)."""
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    if src.shape != dst.shape or src.shape[0] < 4 or src.shape[1] != 2:
        raise PlacementError("a homography needs >= 4 matching 2-D points")

    def normaliser(pts):
        mean = pts.mean(axis=0)
        scale = np.sqrt(2) / max(np.sqrt(((pts - mean) ** 2).sum(axis=1)).mean(), 1e-12)
        return np.array([[scale, 0, -scale * mean[0]], [0, scale, -scale * mean[1]], [0, 0, 1]])

    t_src, t_dst = normaliser(src), normaliser(dst)
    s = np.column_stack([src, np.ones(len(src))]) @ t_src.T
    d = np.column_stack([dst, np.ones(len(dst))]) @ t_dst.T
    rows = []
    for (x, y, w), (u, v, z) in zip(s, d, strict=True):
        rows.append([0, 0, 0, -z * x, -z * y, -z * w, v * x, v * y, v * w])
        rows.append([z * x, z * y, z * w, 0, 0, 0, -u * x, -u * y, -u * w])
    _, singular, vt = np.linalg.svd(np.asarray(rows))
    if singular[-2] < 1e-9:
        raise PlacementError("anchor points are degenerate (no unique homography)")
    h = np.linalg.inv(t_dst) @ vt[-1].reshape(3, 3) @ t_src
    if abs(h[2, 2]) < 1e-12:
        raise PlacementError("homography maps the template to infinity")
    return h / h[2, 2]


def apply_homography(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    pts = np.asarray(pts, dtype=np.float64)
    hom = np.column_stack([pts, np.ones(len(pts))]) @ h.T
    return hom[:, :2] / hom[:, 2:3]


def warp_template(template: Image.Image, h: np.ndarray, size: tuple[int, int]) -> Image.Image:
    """The RGBA template warped by ``h`` onto a ``size`` canvas.

    PIL's PERSPECTIVE transform takes the inverse mapping (output pixel -> template
    pixel). Interpolation runs on premultiplied alpha so edges do not go dark.
    """
    inverse = np.linalg.inv(h)
    inverse = inverse / inverse[2, 2]
    coeffs = tuple(inverse.flatten()[:8])
    warped = template.convert("RGBa").transform(size, Image.PERSPECTIVE, coeffs, Image.BICUBIC)
    return warped.convert("RGBA")


def scale_for(anchors: np.ndarray, six: np.ndarray) -> float:
    """How much the homography shrinks the template (ratio of anchor spreads)."""

    def spread(pts):
        return float(np.sqrt(((pts - pts.mean(axis=0)) ** 2).sum(axis=1)).mean())

    return spread(six) / max(spread(anchors), 1e-9)


def fold_check(six: np.ndarray) -> str:
    """'' when a..f keep the template's layout (top row above the bottom row, left of right)."""
    a, b, c, d, e, f = six
    across = c - a
    down = np.array([-across[1], across[0]])
    if np.hypot(*across) < 2:
        return "mask corners coincide"
    if (d - a) @ down <= 0 or (f - c) @ down <= 0 or (e - b) @ down <= 0:
        return "mask turned upside down"
    if (f - d) @ across <= 0:
        return "mask mirrored"
    return ""
