"""Whole-photo evaluation (maskpipe.evaluation.wild): the metric against hand-computed cases,
matching, the test-split photo list, and one real run on Kaggle test photos."""

from __future__ import annotations

import json
import shutil

import pandas as pd
import pytest
import yaml
from PIL import Image

from maskpipe.evaluation.wild import (
    EvaluateWildConfig,
    Photo,
    WildError,
    average_precision,
    detection_stats,
    evaluate_wild,
    greedy_match,
    split_photos,
)
from maskpipe.settings import ConfigError

CLASSES = ["with_mask", "without_mask", "mask_weared_incorrect"]
KAGGLE = "kaggle-face-mask-detection"


# ------------------------------------------------------------------------------ params `evaluate_wild:`
def test_repo_params_section_parses_and_the_defaults_are_its_values(repo):
    section = yaml.safe_load((repo / "params.yaml").read_text())["evaluate_wild"]
    cfg = EvaluateWildConfig.from_mapping(section, "evaluate_wild")
    assert cfg.to_dict() == section  # every key of the section is a field, read as written
    assert cfg.models and all(m.endswith("3class") for m in cfg.models)
    # the defaults (what the stage used when a key was left out) are the committed values
    assert EvaluateWildConfig.from_mapping(None, "evaluate_wild") == EvaluateWildConfig()
    assert cfg == EvaluateWildConfig(models=cfg.models)


@pytest.mark.parametrize(
    "values, message",
    [
        (
            {"iou_treshold": 0.5},
            r"evaluate_wild\.iou_treshold: unknown key \(did you mean 'iou_threshold'\?\)",
        ),
        ({"model": ["a"]}, r"evaluate_wild\.model: unknown key \(did you mean 'models'\?\)"),
        ({"grid_size": "nine"}, r"evaluate_wild\.grid_size: expected an integer, got 'nine' \(a str\)"),
        ({"batch_size": 2.5}, r"evaluate_wild\.batch_size: expected an integer, got 2\.5"),
        ({"iou_threshold": "0.5"}, r"evaluate_wild\.iou_threshold: expected a number, got '0\.5'"),
        ({"models": "resnet50_3class"}, r"evaluate_wild\.models: expected a list, got 'resnet50_3class'"),
        ({"dataset": 3}, r"evaluate_wild\.dataset: expected a string, got 3"),
        ({"iou_threshold": 0}, r"evaluate_wild\.iou_threshold: must be > 0 and <= 1, got 0"),
        ({"grid_size": 0}, r"evaluate_wild\.grid_size: must be >= 1, got 0"),
        ({"num_threads": 0}, r"evaluate_wild\.num_threads: must be >= 1, got 0"),
        (
            {"split": "tset"},
            r"evaluate_wild\.split: 'tset' is not one of train, val, test \(did you mean 'test'\?\)",
        ),
    ],
)
def test_unknown_keys_and_bad_values_name_their_key(values, message):
    with pytest.raises(ConfigError, match=r"^params\.yaml: " + message):
        EvaluateWildConfig.from_mapping(values, "evaluate_wild")


def face(box, label, det=1.0, conf=1.0):
    return {"box": list(box), "label": label, "detector_score": det, "confidence": conf}


def test_ap_matches_a_hand_computed_case():
    """with_mask: 2 annotated faces; detections ranked TP (0.9), FP (0.8), TP (0.7).

    Precision/recall after each: (1, 0.5), (0.5, 0.5), (2/3, 1). COCO's interpolated precision at
    the 101 recall points is 1 for r <= 0.5 (51 points) and 2/3 for r > 0.5 (50 points), so
    AP = (51 + 50 * 2/3) / 101 = 0.83498. without_mask: 1 face, never predicted: AP 0.
    mask_weared_incorrect: no annotated face: no AP, left out of the mean.
    """
    photo = Photo(
        path=None,
        source_image="a.png",
        boxes=[(0, 0, 10, 10), (20, 20, 30, 30), (100, 100, 110, 110)],
        labels=["with_mask", "with_mask", "without_mask"],
    )
    # the score is detector score x class confidence: 0.9 = 1 x 0.9, 0.8 = 0.8 x 1, 0.7 = 0.875 x 0.8
    preds = [
        face((0, 0, 10, 10), "with_mask", 1.0, 0.9),
        face((50, 50, 60, 60), "with_mask", 0.8, 1.0),
        face((20, 20, 30, 30), "with_mask", 0.875, 0.8),
    ]
    ap = average_precision([photo], [preds], CLASSES)
    expected = (51 + 50 * 2 / 3) / 101
    assert ap["ap"]["with_mask"] == pytest.approx(expected, abs=1e-6)
    assert ap["ap"]["without_mask"] == 0.0
    assert ap["ap"]["mask_weared_incorrect"] is None
    assert ap["map"] == pytest.approx(expected / 2, abs=1e-6)
    rec, prec = ap["pr"]["with_mask"]
    assert (
        rec[50] == pytest.approx(0.5) and prec[50] == pytest.approx(1.0) and prec[51] == pytest.approx(2 / 3)
    )


def test_ap_depends_on_the_ranking_and_the_class():
    """The false positive ranked first: precision 1/2 at every recall -> AP 0.5. A box on the right
    face with the wrong class is a false positive of its class and a miss of the right one."""
    photo = Photo(path=None, source_image="a.png", boxes=[(0, 0, 10, 10)], labels=["without_mask"])
    preds = [face((40, 40, 50, 50), "without_mask", 0.9), face((0, 0, 10, 10), "without_mask", 0.8)]
    assert average_precision([photo], [preds], CLASSES)["ap"]["without_mask"] == pytest.approx(0.5)
    wrong = average_precision([photo], [[face((0, 0, 10, 10), "with_mask", 0.9)]], CLASSES)
    assert wrong["ap"]["without_mask"] == 0.0 and wrong["ap"]["with_mask"] is None


def test_unknown_annotated_label_is_an_error():
    photo = Photo(path=None, source_image="a.png", boxes=[(0, 0, 10, 10)], labels=["with_mask"])
    with pytest.raises(WildError, match="not classes of the model"):
        average_precision([photo], [[]], ["without_mask", "mask_weared_incorrect"])


def test_greedy_match_takes_best_overlap_first_and_each_box_once():
    truth = [(0, 0, 10, 10), (2, 0, 12, 10)]
    preds = [(1, 0, 11, 10), (0, 0, 10, 10), (50, 50, 60, 60)]
    assert sorted(greedy_match(truth, preds)) == [(0, 1), (1, 0)]  # pred 1 is exact for truth 0
    assert greedy_match(truth, preds, iou_threshold=0.95) == [(0, 1)]


def test_detection_stats_recall_precision_accuracy_and_sizes():
    photo = Photo(
        path=None,
        source_image="a.png",
        boxes=[(0, 0, 10, 10), (20, 0, 40, 20), (50, 0, 150, 100)],
        labels=["with_mask", "without_mask", "with_mask"],
    )
    preds = [
        face((0, 0, 10, 10), "with_mask"),
        face((20, 0, 40, 20), "with_mask"),
        face((200, 0, 210, 10), "with_mask"),
    ]
    s = detection_stats([photo], [preds])
    assert (s["faces"], s["detections"], s["matched"]) == (3, 3, 2)
    assert s["recall"] == pytest.approx(2 / 3) and s["precision"] == pytest.approx(2 / 3)
    assert s["accuracy_matched"] == 0.5 and s["labelled_right"] == pytest.approx(1 / 3)
    assert s["by_width"] == {
        "0-16px": {"faces": 1, "recall": 1.0},
        "16-32px": {"faces": 1, "recall": 1.0},
        ">=64px": {"faces": 1, "recall": 0.0},
    }
    assert s["confusion_matched"] == {"with_mask": {"with_mask": 1}, "without_mask": {"with_mask": 1}}


VOC = """<annotation><filename>{name}</filename><size><width>64</width><height>48</height><depth>3</depth></size>
{objects}</annotation>"""
OBJ = "<object><name>{label}</name><bndbox><xmin>{b[0]}</xmin><ymin>{b[1]}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>"


def test_split_photos_takes_the_crop_split_and_every_annotated_box(tmp_path):
    raw = tmp_path / "raw"
    (raw / "images").mkdir(parents=True)
    (raw / "annotations").mkdir()
    for stem, objs in {
        "p2": [("with_mask", (1, 1, 20, 20)), ("without_mask", (30, 5, 34, 9))],
        "p10": [("mask_weared_incorrect", (2, 2, 30, 30))],
        "p3": [("with_mask", (0, 0, 9, 9))],
    }.items():
        Image.new("RGB", (64, 48)).save(raw / "images" / f"{stem}.png")
        (raw / "annotations" / f"{stem}.xml").write_text(
            VOC.format(name=f"{stem}.png", objects="".join(OBJ.format(label=lab, b=b) for lab, b in objs))
        )
    # the crop index lists only the first face of p2 (the 4 px face was too small to crop)
    index = pd.DataFrame(
        {
            "dataset": ["kaggle_face_mask_detection"] * 3 + ["mafa"],
            "source_image": ["images/p2.png", "images/p10.png", "images/p3.png", "images/p2.png"],
            "split": ["test", "test", "train", "test"],
        }
    )
    index.to_csv(tmp_path / "index.csv", index=False)
    photos = split_photos(tmp_path / "index.csv", raw)
    assert [p.source_image for p in photos] == ["images/p2.png", "images/p10.png"]  # natural order
    assert photos[0].labels == ["with_mask", "without_mask"]
    assert photos[0].boxes[1] == (30, 5, 34, 9)
    with pytest.raises(WildError, match="no kaggle_face_mask_detection photos in the 'val' split"):
        split_photos(tmp_path / "index.csv", raw, split="val")
    (raw / "images" / "p10.png").unlink()
    with pytest.raises(WildError, match="p10.png: photo listed in .* is missing"):
        split_photos(tmp_path / "index.csv", raw)
    with pytest.raises(WildError, match="crop index not found"):
        split_photos(tmp_path / "nothing.csv", raw)


@pytest.mark.shared
def test_evaluate_wild_on_kaggle_photos_writes_every_output(shared, tmp_path):
    """A real run: retinaface + an untrained 3-class model on 3 Kaggle photos."""
    from model_factory import make_model

    from maskpipe.predict import Predictor, PredictSettings

    root = tmp_path / "kaggle"
    names = ["maksssksksss30", "maksssksksss1", "maksssksksss2"]
    for sub, ext in (("images", "png"), ("annotations", "xml")):
        (root / sub).mkdir(parents=True)
        for n in names:
            shutil.copy(shared / KAGGLE / sub / f"{n}.{ext}", root / sub / f"{n}.{ext}")
    pd.DataFrame(
        {
            "dataset": "kaggle_face_mask_detection",
            "source_image": [f"images/{n}.png" for n in names],
            "split": "test",
        }
    ).to_csv(tmp_path / "index.csv", index=False)
    photos = split_photos(tmp_path / "index.csv", root)
    predictor = Predictor.from_path(make_model(tmp_path / "models", "multiclass"), PredictSettings())
    out = tmp_path / "wild"
    metrics = evaluate_wild("tiny", predictor, photos, tmp_path / "metrics" / "tiny.json", out, grid_size=3)
    written = json.loads((tmp_path / "metrics" / "tiny.json").read_text())
    assert (
        written == metrics
        and metrics["photos"] == 3
        and metrics["faces"] == sum(len(p.boxes) for p in photos)
    )
    assert 0 < metrics["detection/recall"] <= 1 and 0 <= metrics["map50"] <= 1
    # the detection numbers do not depend on the (untrained) classifier: retinaface finds most faces
    assert metrics["detection/recall"] >= 0.6
    for name in ("pr_curves.png", "photos.png", "details.json"):
        assert (out / name).stat().st_size > 0
    curves = list(out.glob("pr_*.csv"))
    assert curves and all(list(pd.read_csv(c).columns) == ["recall", "precision"] for c in curves)


def test_per_class_scoring_ranks_every_face_in_every_class_list():
    """Two annotated faces, both mask_weared_incorrect. The classifier calls the first with_mask
    (0.6) with incorrect second (0.4), the second incorrect (0.7). Per-class scoring: the incorrect
    list is 0.7 (TP), 0.4 (TP) -> AP 1; top-label scoring sees only the second -> recall 0.5, AP
    51/101. The with_mask list (no annotated with_mask face) has no AP either way."""
    photo = Photo(
        path=None,
        source_image="a.png",
        boxes=[(0, 0, 10, 10), (20, 20, 30, 30)],
        labels=["mask_weared_incorrect", "mask_weared_incorrect"],
    )
    first = face((0, 0, 10, 10), "with_mask", 1.0, 0.6)
    first["probabilities"] = {"with_mask": 0.6, "without_mask": 0.0, "mask_weared_incorrect": 0.4}
    second = face((20, 20, 30, 30), "mask_weared_incorrect", 1.0, 0.7)
    second["probabilities"] = {"with_mask": 0.2, "without_mask": 0.1, "mask_weared_incorrect": 0.7}
    per_class = average_precision([photo], [[first, second]], CLASSES)
    top = average_precision([photo], [[first, second]], CLASSES, scoring="top_label")
    assert per_class["ap"]["mask_weared_incorrect"] == pytest.approx(1.0)
    assert top["ap"]["mask_weared_incorrect"] == pytest.approx(51 / 101, abs=1e-6)
    assert per_class["ap"]["with_mask"] is None and per_class["map"] == pytest.approx(1.0)
    with pytest.raises(WildError, match="scoring"):
        average_precision([photo], [[first]], CLASSES, scoring="best")
