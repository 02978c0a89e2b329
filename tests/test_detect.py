"""Face detection: geometry, the detectors on real photos, recall on the 200 Kaggle images."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from maskpipe.detect import (
    CALIBRATION,
    DetectorSettings,
    FaceDetector,
    calibrate_box,
    clip_box,
    detection_recall,
    get_detector,
    iou,
    kaggle_samples,
)
from maskpipe.imaging import open_rgb

KAGGLE = "kaggle-face-mask-detection"


def test_calibrate_box_shifts_centre_and_scales_sides():
    assert calibrate_box((10, 20, 30, 60), (0.0, 0.0, 1.0, 1.0)) == (10, 20, 30, 60)
    # width 20, height 40: centre moves 0.5*20 right and 0.25*40 down, sides x2 and x0.5
    assert calibrate_box((10, 20, 30, 60), (0.5, 0.25, 2.0, 0.5)) == pytest.approx((10, 40, 50, 60))


def test_clip_box_and_iou():
    assert clip_box((-5, -1, 120, 50), 100, 40) == (0, 0, 100, 40)
    assert iou((0, 0, 10, 10), (0, 0, 10, 10)) == 1.0
    assert iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(50 / 150)
    assert iou((0, 0, 10, 10), (20, 20, 30, 30)) == 0.0


def test_settings_validation():
    assert DetectorSettings.from_params({"detector": "dlib_hog", "upsample": 2}).upsample == 2
    with pytest.raises(ValueError, match="unknown detector 'haar'"):
        DetectorSettings.from_params({"detector": "haar"})
    with pytest.raises(ValueError, match="upsample"):
        DetectorSettings.from_params({"upsample": 7})
    assert DetectorSettings.from_params({"upscale": 3, "score_threshold": 0.7}).upscale == 3.0
    with pytest.raises(ValueError, match="upscale"):
        DetectorSettings.from_params({"upscale": 10})
    with pytest.raises(ValueError, match="score_threshold"):
        DetectorSettings.from_params({"score_threshold": 1.5})


def test_params_yaml_default_is_the_measured_retinaface_setting():
    """The README's figures are for retinaface at 2x, score 0.5: params.yaml must select that."""
    from maskpipe.paths import repo_root
    from maskpipe.predict import PredictSettings

    det = PredictSettings.from_repo(repo_root() / "params.yaml").detector
    assert (det.name, det.upscale, det.score_threshold) == ("retinaface", 2.0, 0.5)
    assert DetectorSettings().name == "retinaface"


def test_retinaface_session_has_bounded_threads():
    det = FaceDetector(DetectorSettings(name="retinaface", threads=1))
    assert det._impl.session.get_session_options().intra_op_num_threads == 1


def test_blank_picture_has_no_faces():
    for name in ("retinaface", "mtcnn", "dlib_hog"):
        assert get_detector(DetectorSettings(name=name))(Image.new("RGB", (200, 160), (128, 128, 128))) == []


TINY_SIZES = [(1, 1), (12, 12), (19, 19), (500, 15), (15, 500), (2, 300), (300, 19)]


def _noise(width: int, height: int) -> Image.Image:
    rng = np.random.default_rng(width * 1000 + height)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


@pytest.mark.parametrize("name", ["mtcnn", "dlib_hog", "dlib_cnn"])
def test_images_smaller_than_the_search_window_have_zero_faces(name):
    # Before issue 13: mtcnn raised "torch.cat(): expected a non-empty list of Tensors" for any
    # side under min_face, dlib_cnn raised (or segfaulted) for sides of 1-9 px.
    detector = get_detector(DetectorSettings(name=name))
    for width, height in TINY_SIZES:
        assert detector(_noise(width, height)) == [], (width, height)
    assert detector(Image.new("L", (20, 20), 0)) == []  # at min_face: searched, nothing found


def test_mtcnn_min_side_follows_min_face():
    detector = get_detector(DetectorSettings(name="mtcnn", min_face=40))
    assert detector(_noise(300, 39)) == []
    assert detector(_noise(300, 40)) == []  # searchable: runs the network, finds nothing in noise


@pytest.mark.shared
def test_dlib_hog_finds_unmasked_frontal_faces(shared):
    """HOG is made for frontal unmasked faces: the centred LFW faces are nearly all found."""
    files = sorted((shared / "lfw-subset").rglob("*.jpg"))[:20]
    detector = get_detector(DetectorSettings(name="dlib_hog"))
    found = 0
    for path in files:
        faces = detector(open_rgb(path))
        # LFW photos are 250x250 with the face in the middle (the crop stage's lfw_box 68..182)
        found += any(iou(f.box, (68, 68, 182, 182)) >= 0.3 for f in faces)
    print(f"dlib_hog on LFW: {found}/{len(files)}")
    assert found >= 0.8 * len(files)


@pytest.mark.shared
def test_boxes_stay_inside_the_image_and_are_sorted(shared):
    img = open_rgb(shared / KAGGLE / "images" / "maksssksksss30.png")
    faces = get_detector(DetectorSettings())(img)
    assert faces
    for f in faces:
        x0, y0, x1, y1 = f.box
        assert 0 <= x0 < x1 <= img.width and 0 <= y0 < y1 <= img.height
        assert 0 < f.score <= 1
    assert [f.box[1] for f in faces] == sorted(f.box[1] for f in faces)


@pytest.mark.shared
def test_mtcnn_recall_on_the_200_kaggle_images(shared):
    """The detection rate the README quotes, measured on every mirrored Kaggle image.

    Measured: recall 0.62 (541 of 867 annotated faces at IoU >= 0.5), precision 0.88; faces under
    16 px wide are mostly missed (0.17), faces >= 32 px found 8 times in 10. The floor (0.45)
    is a sanity bound: the HOG detector scores 0.10 here, and a box-mapping bug (e.g. the
    calibration applied twice or not at all) drops the rate well below it.
    """
    result = detection_recall(kaggle_samples(shared / KAGGLE), get_detector(DetectorSettings(name="mtcnn")))
    print("\nMTCNN on Kaggle (200 images):", json.dumps(result))
    assert result["images"] == 200 and result["faces"] == 867
    assert result["recall"] >= 0.45
    assert result["precision"] >= 0.7
    # the box calibration constants are what this measurement gives (re-measure if this fails)
    assert result["calibration_median"] == pytest.approx(list(CALIBRATION["mtcnn"]), abs=0.03)


@pytest.mark.shared
def test_mtcnn_beats_dlib_hog_on_masked_faces(shared):
    """Why mtcnn is the default: on the same Kaggle images HOG misses most (masked) faces."""
    samples = list(kaggle_samples(shared / KAGGLE, limit=40))
    mtcnn = detection_recall(samples, get_detector(DetectorSettings(name="mtcnn")))
    hog = detection_recall(samples, FaceDetector(DetectorSettings(name="dlib_hog", upsample=1)))
    print(
        f"\nfirst 40 Kaggle images, recall at IoU 0.5: mtcnn {mtcnn['recall']:.3f} "
        f"({mtcnn['ms_per_image']:.0f} ms/img), dlib_hog {hog['recall']:.3f} ({hog['ms_per_image']:.0f} ms/img)"
    )
    print("dlib_hog by face width:", hog["by_width"])
    assert mtcnn["recall"] > 2 * hog["recall"]


@pytest.mark.shared
def test_retinaface_recall_on_the_200_kaggle_images(shared):
    """Why retinaface (2x, score 0.5) is the default: recall >= 0.80 at IoU 0.5 (issue 10).

    Measured: recall 0.828 (718 of 867), precision 0.824; by face width <16 / 16-32 / 32-64 /
    >=64 px: 0.51 / 0.89 / 0.95 / 0.99 (MTCNN: 0.62 overall, 0.17 under 16 px). Without the box
    calibration recall drops to 0.77, so the calibration is checked as for MTCNN.
    """
    result = detection_recall(kaggle_samples(shared / KAGGLE), get_detector(DetectorSettings()))
    print("\nretinaface 2x on Kaggle (200 images):", json.dumps(result))
    assert result["detector"]["name"] == "retinaface"
    assert result["images"] == 200 and result["faces"] == 867
    assert result["recall"] >= 0.80
    assert result["precision"] >= 0.75
    assert result["by_width"]["0-16px"]["recall"] >= 0.4
    assert result["calibration_median"] == pytest.approx(list(CALIBRATION["retinaface"]), abs=0.03)


@pytest.mark.shared
def test_retinaface_upscale_maps_boxes_back_to_the_original_image(shared):
    """upscale 2 on the photo == upscale 1 on the photo enlarged 2x, boxes halved."""
    img = open_rgb(shared / KAGGLE / "images" / "maksssksksss30.png")
    big = img.resize((img.width * 2, img.height * 2), Image.BILINEAR)
    at2 = FaceDetector(DetectorSettings(name="retinaface", upscale=2.0, calibrate=False))(img)
    at1 = FaceDetector(DetectorSettings(name="retinaface", upscale=1.0, calibrate=False))(big)
    assert len(at2) == len(at1) >= 5
    for a, b in zip(at2, at1, strict=True):
        assert a.raw_box == pytest.approx([v / 2 for v in b.raw_box], abs=0.6)


@pytest.mark.shared
def test_detect_many_in_parallel_equals_one_at_a_time(shared):
    images = [open_rgb(p) for p in sorted((shared / KAGGLE / "images").glob("*.png"))[:6]]
    parallel = FaceDetector(DetectorSettings(name="retinaface", workers=2))
    serial = FaceDetector(DetectorSettings(name="retinaface", workers=1))
    many = parallel.detect_many(images)
    assert many == [serial(img) for img in images] == serial.detect_many(images)
    assert sum(len(d) for d in many) > 0
    # MTCNN is not thread-safe: detect_many runs it image by image, same result as calling it
    mtcnn = get_detector(DetectorSettings(name="mtcnn"))
    assert mtcnn.detect_many(images[:2]) == [mtcnn(img) for img in images[:2]]
