"""Grouped k-fold cross-validation: folds by source photo, one training engine, tiny profile."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from maskpipe.evaluation.crossval import (
    CrossValidationError,
    assign_folds,
    cross_validate,
    fold_indexes,
    photo_keys,
    photo_strata,
    summarise,
    summary_lines,
    thin_train,
)

REPO = Path(__file__).resolve().parents[1]
COLOURS = {
    "with_mask": (40, 80, 200),
    "without_mask": (220, 170, 140),
    "mask_weared_incorrect": (120, 200, 90),
}
LABELS3 = ["with_mask", "without_mask", "mask_weared_incorrect"]


def make_photos(root: Path, n_photos: int = 24, faces: int = 3) -> Path:
    """Crops of ``faces`` faces per photo; label cycles per face; photos 0..3 are the test split."""
    rng = np.random.default_rng(0)
    rows = []
    for p in range(n_photos):
        for f in range(faces):
            label = LABELS3[(p + f) % 3]
            rel = f"data/crops/kaggle/{label}/p{p}_f{f}.png"
            img = np.clip(np.array(COLOURS[label], float) + rng.normal(0, 20, (24, 24, 3)), 0, 255)
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img.astype(np.uint8)).save(root / rel)
            rows.append(
                {
                    "face_id": f"p{p}_f{f}",
                    "crop_path": rel,
                    "dataset": "kaggle",
                    "source_image": f"p{p}.jpg",
                    "label": label,
                    "split": "test" if p < 4 else "train",
                }
            )
    index = root / "data/crops/index.csv"
    pd.DataFrame(rows).to_csv(index, index=False)
    return index


def tiny_params() -> dict:
    return {
        "seed": 3,
        "train": {"profile": "tiny", "num_threads": 1},
        "models": {
            "three": {
                "arch": "small_cnn",
                "task": "multiclass",
                "datasets": ["kaggle"],
                "classes": LABELS3,
                "loss": "cross_entropy",
                "image_size": 32,
            }
        },
        "profiles": {"tiny": {"all": {"epochs": 1, "image_size": 16, "batch_size": 8, "max_samples": 64}}},
    }


def test_folds_keep_each_photo_together_and_leave_the_test_split_out(tmp_path):
    crops = pd.read_csv(make_photos(tmp_path), dtype=str)
    folds = assign_folds(crops, 3, seed=1)
    assert (folds[crops["split"] == "test"] == -1).all()
    per_photo = folds.groupby(crops["source_image"]).nunique()
    assert (per_photo == 1).all()
    sizes = folds[folds >= 0].value_counts()
    assert sorted(sizes.index) == [0, 1, 2] and sizes.max() - sizes.min() <= 3  # one photo = 3 faces
    assert folds.equals(assign_folds(crops.sample(frac=1, random_state=0).sort_index(), 3, seed=1))
    synth = pd.DataFrame(
        {
            "synth_id": ["s"],
            "path": ["x.png"],
            "source_face_id": [crops["face_id"][20]],
            "label": ["with_mask"],
            "split": ["train"],
        }
    )
    c, s = fold_indexes(crops, synth, folds, 0, 3)
    assert set(c["split"]) == {"test", "val", "train", "cv_unused"}
    assert (c.loc[folds == 0, "split"] == "test").all() and (c.loc[folds == 1, "split"] == "val").all()
    assert s["split"][0] == c["split"][20]  # a synthetic face follows its source face
    c2, _ = fold_indexes(crops, synth, assign_folds(crops, 2, seed=1), 1, 2)
    assert "val" not in set(c2["split"])  # two folds: nothing to spare for validation
    with pytest.raises(CrossValidationError, match="folds must be >= 2"):
        assign_folds(crops, 1, seed=1)


def test_a_learning_curve_point_thins_only_the_training_photos(tmp_path):
    crops = pd.read_csv(make_photos(tmp_path, n_photos=64, faces=2), dtype=str)
    c, _ = fold_indexes(crops, pd.DataFrame(), assign_folds(crops, 4, seed=1), 0, 4)
    synth = pd.DataFrame(
        {"synth_id": [f"s{i}" for i in range(len(c))], "source_face_id": c["face_id"], "split": c["split"]}
    )
    half, half_synth = thin_train(c, synth, 0.5, seed=7)
    train = c["split"] == "train"
    assert (half.loc[~train, "split"] == c.loc[~train, "split"]).all()  # val, test, unused: untouched
    assert set(half.loc[train, "split"]) == {"train", "cv_unused"}
    kept = half[half["split"] == "train"]
    assert kept.groupby("source_image")["split"].size().eq(2).all()  # whole photos kept or dropped
    # each stratum (dataset, the photo's rarest label) is halved, to the nearest photo
    strata = photo_strata(c, train.to_numpy())
    assert len(strata) > 1
    kept_photos = set(photo_keys(kept))
    for photos in strata.values():
        assert abs(sum(p in kept_photos for p in photos) - len(photos) / 2) <= 0.5
    assert abs(len(kept_photos) - c.loc[train, "source_image"].nunique() / 2) <= len(strata) / 2
    assert (half_synth["split"] == half["split"].to_numpy()).all()  # synthetic faces follow their source
    again, _ = thin_train(c, synth, 0.5, seed=7)
    assert again["split"].equals(half["split"])  # seeded
    assert thin_train(c, synth, 1.0, seed=7)[0] is c
    for bad in (0, 1.5, "half", True):
        with pytest.raises(CrossValidationError, match="train_fraction"):
            thin_train(c, synth, bad, seed=7)


def test_summary_gives_mean_spread_min_max():
    m = summarise(
        [
            {"fold": 1, "n": 10, "macro_f1": 0.5, "recall/x": None},
            {"fold": 2, "n": 12, "macro_f1": 0.7, "recall/x": 0.4},
        ],
        2,
    )
    assert m["cv/macro_f1_mean"] == pytest.approx(0.6) and m["cv/macro_f1_std"] == pytest.approx(
        0.141421, abs=1e-6
    )
    assert m["cv/macro_f1_min"] == 0.5 and m["cv/macro_f1_max"] == 0.7
    assert m["cv/recall/x_mean"] == 0.4 and m["cv/recall/x_std"] is None and m["cv/n_mean"] == 11


def test_two_folds_on_the_tiny_profile_train_through_train_model(tmp_path, monkeypatch):
    index = make_photos(tmp_path)
    monkeypatch.chdir(tmp_path)
    logged: list[str] = []
    cv = cross_validate(
        "three",
        tiny_params(),
        2,
        crops_index=index,
        synth_index=tmp_path / "none.csv",
        work_dir=tmp_path / "data/cv/three",
        base=tmp_path,
        log=logged.append,
    )
    assert list(cv.folds["fold"]) == [1, 2]
    # every pool face is held out exactly once: 20 photos x 3 faces
    assert cv.folds["n"].sum() == 60
    assert cv.metrics["cv/folds"] == 2
    for key in ("macro_f1", "accuracy", "recall/mask_weared_incorrect"):
        assert cv.metrics[f"cv/{key}_min"] <= cv.metrics[f"cv/{key}_mean"] <= cv.metrics[f"cv/{key}_max"]
        assert cv.metrics[f"cv/{key}_std"] is not None
    # the engine ran (its epoch lines), once per fold, without a validation set
    assert sum("epoch 1/1" in line for line in logged) == 2
    assert sum("no validation images" in line for line in logged) == 2
    assert (tmp_path / "data/cv/three/fold2/models/three/model.pt").is_file()


def test_every_held_out_face_is_pooled_once_per_set_and_an_extra_set_is_scored(tmp_path, monkeypatch):
    index = make_photos(tmp_path)
    crops = pd.read_csv(index, dtype=str)
    # photos 12-23 become a second dataset: the model trains on kaggle, scores them as an extra set
    # (as the synthetic-mask model is scored on real faces)
    later = crops["source_image"].isin([f"p{p}.jpg" for p in range(12, 24)])
    crops.loc[later, "dataset"] = "folders"
    crops.to_csv(index, index=False)
    params = tiny_params()
    params["evaluate"] = {"extra_sets": {"three": {"other": ["folders"]}}, "bootstrap_resamples": 50}
    monkeypatch.chdir(tmp_path)
    cv = cross_validate(
        "three",
        params,
        3,
        crops_index=index,
        synth_index=tmp_path / "none.csv",
        work_dir=tmp_path / "data/cv/three",
        base=tmp_path,
        log=lambda line: None,
    )
    p = cv.predictions
    for name, dataset, faces in (("test", "kaggle", 8 * 3), ("other", "folders", 12 * 3)):
        part = p[p["set"] == name]
        assert len(part) == faces and part["path"].is_unique and (part["dataset"] == dataset).all()
        prefix = "cv/" if name == "test" else f"cv/{name}/"
        acc = float((part["predicted"] == part["label"]).mean())
        assert cv.metrics[f"{prefix}pooled/n"] == faces
        assert cv.metrics[f"{prefix}pooled/accuracy"] == pytest.approx(acc, abs=1e-4)
        assert cv.metrics[f"{prefix}pooled/accuracy_lo"] <= acc <= cv.metrics[f"{prefix}pooled/accuracy_hi"]
        assert cv.metrics[f"{prefix}pooled/support/mask_weared_incorrect"] == int(
            (part["label"] == "mask_weared_incorrect").sum()
        )
        # a face is held out by exactly one fold, and its photo is its bootstrap unit
        assert (part.groupby("group")["fold"].nunique() == 1).all()
        assert part["group"].str.match(rf"{dataset}:p\d+\.jpg$").all()
    assert list(cv.folds["other/n"]) == [
        int(((p["set"] == "other") & (p["fold"] == f)).sum()) for f in (1, 2, 3)
    ]
    assert "cv/other/macro_f1_mean" in cv.metrics and "cv/other/n_mean" not in cv.metrics
    lines = summary_lines(cv.metrics, "three")
    assert len(lines) == 2 and "held-out faces" in lines[0] and ", other:" in lines[1]
    assert "pooled recall: with_mask" in lines[0]


def test_stage_off_by_default_and_refuses_a_oneclass_model(tmp_path):
    params = tiny_params()
    params["crossval"] = {"folds": 0, "model": "three"}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, str(REPO / "stages/crossval.py")]
    off = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert off.returncode == 0, off.stderr
    assert json.loads((tmp_path / "metrics/cv.json").read_text()) == {"cv/folds": 0}
    params["models"]["ae"] = {
        "arch": "conv_autoencoder",
        "task": "oneclass",
        "datasets": ["kaggle"],
        "classes": ["with_mask"],
        "image_size": 32,
    }
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    make_photos(tmp_path)
    bad = subprocess.run(
        cmd + ["--folds", "2", "--model", "ae"], cwd=tmp_path, capture_output=True, text=True
    )
    assert bad.returncode == 1 and "one-class" in bad.stderr and "Traceback" not in bad.stderr
    params["crossval"]["train_fraktion"] = 0.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    typo = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert typo.returncode == 1 and "unknown keys ['train_fraktion']" in typo.stderr
    params["crossval"] = {"folds": 0, "model": "three", "train_fraction": 0}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    zero = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True)
    assert zero.returncode == 1 and "train_fraction must be a number in (0, 1], got 0" in zero.stderr
