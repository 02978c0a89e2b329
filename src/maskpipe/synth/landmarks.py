"""68-point facial landmarks for a face crop whose face box is already known.

The crop stage has already found the face, so detection is only a check here:
dlib's shape predictor is started from the HOG detector's boxes that agree with
the known face box (if any) and from the known box itself, on the crop and on the
crop turned by +-25 degrees. Its output must pass geometric sanity checks and a
stability check (a fit locked on a face barely moves when the start box is
jittered; a fit on something that is not a face follows the box). Only when no
start gives such a fit do we fall back to a mean face shape placed in the box
(method "box"). A face is never dropped because the detector missed it.

Point numbering is the iBUG 300-W 68-point scheme: 0-16 jaw (image left to
right), 17-26 brows, 27-30 nose bridge (30 = nose tip), 31-35 nostrils,
36-41 / 42-47 the eyes on the image left / right, 48-67 mouth (48 and 54 the
corners, 51 top of the upper lip, 57 bottom of the lower lip).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from maskpipe.synth.mean_shape import DETECTOR_BOX, mean_shape

DLIB68 = "dlib68"
BOX = "box"

JAW = slice(0, 17)
NOSE_TIP = 30
CHIN = 8
EYE_LEFT = slice(36, 42)
EYE_RIGHT = slice(42, 48)
MOUTH = slice(48, 68)
INNER = slice(27, 68)  # nose, eyes, mouth: the points the stability check follows

# Stability check: the start box is shifted / scaled by these fractions of its size.
# A fit locked on facial features moves far less than the box does.
_JITTERS = ((0.08, 0.0, 1.0), (-0.08, 0.0, 1.0), (0.0, 0.08, 1.0), (0.0, 0.0, 0.88))
# Measured on the mirror (mean movement of points 27-67 over the four jittered starts, in
# inter-ocular distances): fits started from a HOG detection on real faces, median 0.02,
# 95th percentile 0.09; the predictor run on non-faces (mask templates, textures, random
# background patches) 0.08-0.40, median 0.2. A fit started from a confident detection
# (independent evidence of a face there) may move a little more: small, blurred faces.
MAX_JITTER_IOD = 0.10
MAX_JITTER_DETECTED = 0.15
# HOG detections down to this score are tried as predictor starts (dlib's default cut-off is 0).
LOW_DETECTION_THRESHOLD = -0.6


@dataclass(frozen=True)
class Landmarks:
    points: np.ndarray  # (68, 2) float, crop pixel coordinates
    method: str  # "dlib68" | "box"
    detector_agreed: bool  # the HOG detector found this face (a check, never a requirement)
    reason: str = ""  # why the box fallback was used
    jitter: float = field(default=float("nan"))  # stability score of the dlib fit (IOD units)
    detection: tuple[float, float, float, float] | None = None  # confident HOG box, crop pixels


def face_rect_in_crop(
    crop_size: tuple[int, int],
    box: tuple[float, float, float, float],
    pad: tuple[float, float, float, float],
    letterbox: bool = False,
) -> tuple[float, float, float, float]:
    """The face box in crop pixels.

    A crop is the padded box ``pad`` (clipped to the image) resized to ``crop_size``:
    stretched (the crop stage's default), or scaled to fit and centred (``letterbox``).
    """
    width, height = crop_size
    px0, py0, px1, py1 = (float(v) for v in pad)
    bx0, by0, bx1, by1 = (float(v) for v in box)
    if px1 <= px0 or py1 <= py0:
        raise ValueError(f"padded box {pad} is empty")
    sx = width / (px1 - px0)
    sy = height / (py1 - py0)
    ox = oy = 0.0
    if letterbox:
        sx = sy = min(sx, sy)
        ox = (width - round((px1 - px0) * sx)) // 2
        oy = (height - round((py1 - py0) * sy)) // 2
    x0 = max(0.0, ox + (bx0 - px0) * sx)
    y0 = max(0.0, oy + (by0 - py0) * sy)
    x1 = min(float(width), ox + (bx1 - px0) * sx)
    y1 = min(float(height), oy + (by1 - py0) * sy)
    if x1 - x0 < 2 or y1 - y0 < 2:
        raise ValueError(f"face box {box} lies outside its padded box {pad}")
    return (x0, y0, x1, y1)


def is_letterboxed(image: np.ndarray, pad: tuple[float, float, float, float]) -> bool:
    """True when the crop has the pure-black bars a letterbox resize of ``pad`` leaves.

    The synthesize stage reads only its own params, so it tells the crop stage's two
    resize modes apart from the pixels: a stretched crop has picture content there.
    """
    height, width = image.shape[:2]
    pw, ph = float(pad[2] - pad[0]), float(pad[3] - pad[1])
    if pw <= 0 or ph <= 0:
        return False
    scale = min(width / pw, height / ph)
    bar_x = (width - round(pw * scale)) // 2
    bar_y = (height - round(ph * scale)) // 2
    if bar_x < 2 and bar_y < 2:
        return False  # square box: both modes give the same crop
    bars = (
        [image[:, :bar_x], image[:, width - bar_x :]]
        if bar_x >= 2
        else [image[:bar_y], image[height - bar_y :]]
    )
    return all(b.size and not b.any() for b in bars)


def eye_frame(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(centre between the eyes, unit vector along the eyes, unit vector down the face, IOD)."""
    left = points[EYE_LEFT].mean(axis=0)
    right = points[EYE_RIGHT].mean(axis=0)
    along = right - left
    iod = float(np.hypot(*along))
    if iod < 1e-6:
        along = np.array([1.0, 0.0])
        iod = 0.0
    else:
        along = along / iod
    down = np.array([-along[1], along[0]])  # +90 degrees in image coordinates (y down)
    return (left + right) / 2, along, down, iod


def sanity_problem(points: np.ndarray, start, face_rect) -> str:
    """'' when the 68 points look like a face started from ``start`` inside ``face_rect``."""
    if points.shape != (68, 2) or not np.isfinite(points).all():
        return "landmarks not finite"
    start_width = start[2] - start[0]
    centre, along, down, iod = eye_frame(points)
    if iod < 0.15 * start_width or iod > 0.8 * start_width:
        return f"inter-ocular distance {iod:.1f}px implausible for a {start_width:.0f}px face"
    roll = np.degrees(np.arctan2(along[1], along[0]))
    if abs(roll) > 45:
        return f"eye line rolled {roll:.0f} degrees"
    v = (points - centre) @ down
    u = (points - centre) @ along
    eyes, nose, mouth, chin = 0.0, v[NOSE_TIP], v[MOUTH].mean(), v[CHIN]
    if not (eyes + 0.2 * iod < nose < mouth - 0.1 * iod < chin - 0.2 * iod):
        return "eyes, nose tip, mouth and chin out of order"
    if not (u[0] < u[36] and u[45] < u[16] and u[48] < u[54]):
        return "jaw, eyes and mouth corners out of left-right order"
    if not (u[0] < u[NOSE_TIP] < u[16]):
        return "nose tip outside the jaw line"
    inner = points[INNER].mean(axis=0)
    x0, y0, x1, y1 = face_rect
    margin_x, margin_y = 0.1 * (x1 - x0), 0.1 * (y1 - y0)
    if not (x0 - margin_x <= inner[0] <= x1 + margin_x and y0 - margin_y <= inner[1] <= y1 + margin_y):
        return "landmarks centred outside the face box"
    return ""


def _to_dlib_rect(rect):
    import dlib

    x0, y0, x1, y1 = rect
    return dlib.rectangle(int(round(x0)), int(round(y0)), int(round(x1)), int(round(y1)))


def _predict(predictor, image: np.ndarray, rect) -> np.ndarray:
    shape = predictor(image, _to_dlib_rect(rect))
    return np.array([(shape.part(i).x, shape.part(i).y) for i in range(68)], dtype=np.float64)


def jitter_score(predictor, image: np.ndarray, rect, points: np.ndarray) -> float:
    """Mean movement of the inner-face points (IOD units) when the start box is jittered."""
    _, _, _, iod = eye_frame(points)
    if iod <= 0:
        return float("inf")
    x0, y0, x1, y1 = rect
    width, height = x1 - x0, y1 - y0
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    moves = []
    for dx, dy, scale in _JITTERS:
        half_w, half_h = width * scale / 2, height * scale / 2
        ncx, ncy = cx + dx * width, cy + dy * height
        jittered = _predict(predictor, image, (ncx - half_w, ncy - half_h, ncx + half_w, ncy + half_h))
        moves.append(np.linalg.norm(jittered[INNER] - points[INNER], axis=1).mean() / iod)
    return float(np.mean(moves))


def _overlap(a, b) -> float:
    """Intersection over the smaller area: a detection inside the known box counts as agreement."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    smaller = min((a[2] - a[0]) * (a[3] - a[1]), (b[2] - b[0]) * (b[3] - b[1]))
    return ix * iy / smaller if smaller > 0 else 0.0


# The HOG window is 80 px; a face box shrunk to about this width is still found reliably
# and the detector runs several times faster than on a full crop.
DETECT_FACE_WIDTH = 120


def _detect(detector, image: np.ndarray, rect, upsample: int, threshold: float):
    """(rectangle, score, scale) of HOG detections; scale maps crop pixels to the rectangle's.

    First on the crop shrunk so the known face box is about DETECT_FACE_WIDTH wide (crops
    are mostly face), then, unless that found a confident face, at full size with
    ``upsample`` (a small face in a whole-photo box).
    """
    from PIL import Image

    scale = min(1.0, DETECT_FACE_WIDTH / max(1.0, rect[2] - rect[0]))
    if scale < 0.9:
        small = Image.fromarray(image).resize(
            (max(1, round(image.shape[1] * scale)), max(1, round(image.shape[0] * scale))), Image.BILINEAR
        )
        rects, scores, _ = detector.run(np.asarray(small), 0, threshold)
        found = [(r, s, scale) for r, s in zip(rects, scores, strict=True)]
        if any(s >= 0 for s in scores):
            return found
    else:
        found = []
    rects, scores, _ = detector.run(image, int(upsample), threshold)
    return found + [(r, s, 1.0) for r, s in zip(rects, scores, strict=True)]


def detections_in_box(
    detector, image: np.ndarray, rect, upsample: int = 1, threshold: float = LOW_DETECTION_THRESHOLD
) -> list[tuple[tuple[float, float, float, float], float]]:
    """HOG detections (box, score) that lie on the known face box, best score first.

    The threshold is below the detector's own (0): a near-miss on a turned face is still
    a good start for the predictor, whose fit is checked independently.
    """
    face_area = max(1.0, (rect[2] - rect[0]) * (rect[3] - rect[1]))
    found = []
    for det, score, scale in _detect(detector, image, rect, upsample, threshold):
        cand = (det.left() / scale, det.top() / scale, det.right() / scale, det.bottom() / scale)
        area_ratio = (cand[2] - cand[0]) * (cand[3] - cand[1]) / face_area
        # Same face: mostly inside the known box and not tiny (with a whole-image box the face
        # may be small, but it is still the one face the crop is about).
        if _overlap(cand, rect) >= 0.6 and 0.02 <= area_ratio <= 4.0:
            found.append((cand, float(score)))
    return sorted(found, key=lambda item: -item[1])


def box_landmarks(rect, dataset: str | None = None) -> np.ndarray:
    """The dataset's mean face shape (box-relative, see mean_shape.py) placed in ``rect``."""
    x0, y0, x1, y1 = rect
    shape = mean_shape(dataset)
    return np.column_stack([x0 + shape[:, 0] * (x1 - x0), y0 + shape[:, 1] * (y1 - y0)])


def _padded(image: np.ndarray, fraction: float) -> tuple[np.ndarray, int]:
    """The image with an edge-replicated border: tight crops (forehead to lips) leave the
    detector no context and the predictor nowhere to put a jaw that the crop cut off."""
    border = int(round(fraction * max(image.shape[:2])))
    if border <= 0:
        return image, 0
    return np.pad(image, ((border, border), (border, border), (0, 0)), mode="edge"), border


def _shift(rect, offset: float):
    return tuple(v + offset for v in rect)


def _rotation(angle_deg: float, centre: tuple[float, float]) -> np.ndarray:
    """2x3 matrix turning points of the original canvas into the canvas rotated by
    ``angle_deg`` counter-clockwise on screen about ``centre`` (what PIL's rotate does)."""
    a = np.radians(angle_deg)
    cos, sin = np.cos(a), np.sin(a)
    cx, cy = centre
    # On screen (y down) a counter-clockwise turn is x' = c + R(x - c) with R = [[cos, sin], [-sin, cos]].
    rot = np.array([[cos, sin], [-sin, cos]])
    return np.hstack([rot, (np.array([cx, cy]) - rot @ np.array([cx, cy]))[:, None]])


def _fit(predictor, detector, canvas, face, upsample):
    """Try the detections on ``face`` and then ``face`` itself as predictor starts."""
    detections = detections_in_box(detector, canvas, face, upsample)
    agreed = any(score >= 0 for _, score in detections)
    problems = []
    starts = [(det, score >= 0) for det, score in detections[:3]] + [(face, False)]
    for start, confident in starts:
        points = _predict(predictor, canvas, start)
        problem = sanity_problem(points, start, face)
        if not problem:
            score = jitter_score(predictor, canvas, start, points)
            # A confident detection is independent evidence of a face there, so its fit may
            # be a little less stable (small, blurred faces) than one started from the box.
            if score <= (MAX_JITTER_DETECTED if confident else MAX_JITTER_IOD):
                return points, agreed, score, detections, problems
            problem = f"unstable fit ({score:.2f} IOD per jittered start)"
        problems.append(problem)
    return None, agreed, float("nan"), detections, problems


def find_landmarks(
    image: np.ndarray,
    rect: tuple[float, float, float, float],
    predictor=None,
    detector=None,
    upsample: int = 1,
    border: float = 0.25,
    rotations: tuple[float, ...] = (25.0, -25.0),
    dataset: str | None = None,
) -> Landmarks:
    """Landmarks of the face in ``rect`` (crop pixels) of the RGB uint8 ``image`` (a crop).

    Tries the upright crop, then the crop turned by each of ``rotations`` degrees: the
    detector and predictor miss strongly tilted heads. (Undoing the crop stage's stretch
    of non-square boxes was tried and measured: same landmark rate, fewer detections.)
    """
    from PIL import Image

    from maskpipe.dlib_models import face_detector, shape_predictor

    predictor = predictor or shape_predictor()
    detector = detector or face_detector()
    canvas, offset = _padded(np.ascontiguousarray(image), border)
    face = _shift(rect, offset)
    points, agreed, score, detections, problems = _fit(predictor, detector, canvas, face, upsample)
    confident = [det for det, s in detections if s >= 0]
    detection = _shift(confident[0], -offset) if confident else None
    if points is not None:
        return Landmarks(points - offset, DLIB68, agreed, "", score, detection)
    centre = (canvas.shape[1] / 2, canvas.shape[0] / 2)
    corners = np.array([[face[0], face[1]], [face[2], face[1]], [face[0], face[3]], [face[2], face[3]]])
    for angle in rotations:
        turn = _rotation(angle, centre)
        turned = np.asarray(Image.fromarray(canvas).rotate(angle, resample=Image.BILINEAR, center=centre))
        moved = corners @ turn[:, :2].T + turn[:, 2]
        turned_face = (*moved.min(axis=0), *moved.max(axis=0))
        points, agreed_turned, score, _, more = _fit(predictor, detector, turned, turned_face, upsample)
        problems += [f"{p} (turned {angle:+.0f})" for p in more]
        if points is not None:
            back = np.linalg.inv(np.vstack([turn, [0, 0, 1]]))[:2]
            points = points @ back[:, :2].T + back[:, 2]
            return Landmarks(points - offset, DLIB68, agreed or agreed_turned, "", score, detection)
    reason = "; ".join(dict.fromkeys(problems))
    if detection is not None:
        # The detector's box is tighter and more consistent than dataset boxes (a whole photo
        # in a folder dataset): place the mean shape relative to it.
        return Landmarks(box_landmarks(detection, DETECTOR_BOX), BOX, agreed, reason, detection=detection)
    return Landmarks(box_landmarks(rect, dataset), BOX, agreed, reason)
