"""MAFA .mat -> CSV: fixtures in the exact loadmat layout, and the full reconstructed files
against the published CSV dump."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import scipy.io

from maskpipe import mafa

# Real rows (README §2c / the CSV dump), plus edge cases.
TRAIN_RECORDS = [
    # int16: has -1 (no glasses)
    ("add_1.jpg", "train_00000001.jpg", np.array([[95, 160, 91, 91, 113, 177, 158, 172, 7, 26, 82, 89, 1, 3, 1, 1, 3, -1, -1, -1, -1]], np.int16)),
    # uint8, and face_x + occluder_x = 200 + 100 > 255: must not wrap around
    ("weibo_999.jpg", "train_00025876.jpg", np.array([[200, 16, 34, 34, 79, 26, 96, 26, 100, 15, 32, 36, 2, 3, 1, 2, 3, 76, 20, 104, 31]], np.uint8)),
    # two faces; eye 2 not labelled; occluder x offset of -1 next to real values is a coordinate,
    # glasses x of -1 likewise; the second face has -1 in columns 8-20 (as train_00000466.jpg)
    ("imple_3.jpg", "train_00000466.jpg", np.array([
        [50, 60, 40, 40, 55, 70, -1, -1, -1, 20, 30, 20, 3, 2, 2, 3, 5, -1, 5, 30, 10],
        [10, 10, 30, 30, 15, 20, 30, 20, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    ], np.int16)),
]  # fmt: skip

TEST_RECORDS = [
    ("test_00000001.jpg", np.array([
        [2694, 1211, 353, 353, 1, 9, 105, 144, 337, 2, 3, 2, 2, 1, -1, -1, -1, -1],
        [1754, 1449, 68, 68, 3, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1],
    ], np.int16)),
    # float64 with fractional occluder values (as test_00000882.jpg); negative face y is a coordinate
    ("test_00000882.jpg", np.array([[100, -1, 50, 50, 1, 1.9553, 20.213, 40, 30, 1, 3, 1, 1, 3, -1, -1, -1, -1]], np.float64)),
    # uint8 (all values 0..255, glasses present): 250 + 10 must not wrap around
    ("test_00000004.jpg", np.array([[250, 20, 30, 30, 1, 10, 3, 20, 25, 1, 2, 1, 1, 3, 4, 5, 20, 8]], np.uint8)),
    ("test_00000003.jpg", np.array([[10, 20, 30, 30, 2, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1, -1]], np.int16)),
]  # fmt: skip


def struct_array(fields: list[str], records: list[tuple]) -> np.ndarray:
    """A (1, N) MATLAB struct array as savemat writes it (object fields, char arrays for names)."""
    arr = np.empty((1, len(records)), dtype=[(f, "O") for f in fields])
    for i, rec in enumerate(records):
        for f, value in zip(fields, rec, strict=True):
            arr[0, i][f] = value
    return arr


def write_train(
    path, records=TRAIN_RECORDS, variable="label_train", fields=("orgImgName", "imgName", "label")
):
    recs = [tuple(r[["orgImgName", "imgName", "label"].index(f)] for f in fields) for r in records]
    scipy.io.savemat(path, {variable: struct_array(list(fields), recs)})
    return path


def write_test(path, records=TEST_RECORDS, variable="LabelTest"):
    scipy.io.savemat(path, {variable: struct_array(["name", "label"], records)})
    return path


def test_fixture_has_the_loadmat_layout(tmp_path):
    path = write_train(tmp_path / "LabelTrainAll.mat")
    data = scipy.io.loadmat(path)
    records = data["label_train"]
    assert records.shape == (1, 3) and records.dtype.names == ("orgImgName", "imgName", "label")
    dtypes = [str(r["label"].dtype) for r in records[0]]
    assert dtypes == ["int16", "uint8", "int16"]  # per-record dtypes survive the round trip
    assert records[0][1]["imgName"][0] == "train_00025876.jpg"


def test_train_conversion(tmp_path):
    frame = mafa.read_mat(write_train(tmp_path / "LabelTrainAll.mat"), mafa.TRAIN)
    assert list(frame.columns) == mafa.TRAIN.csv_columns
    assert frame["image"].tolist() == [
        "train_00000001.jpg",
        "train_00025876.jpg",
        "train_00000466.jpg",
        "train_00000466.jpg",
    ]
    assert frame["orig_image"].tolist()[:2] == ["add_1.jpg", "weibo_999.jpg"]
    assert frame["face_index"].tolist() == [0, 0, 0, 1]
    first = frame.iloc[0]
    assert (first.occluder_x, first.occluder_y, first.occluder_w, first.occluder_h) == (
        95 + 7,
        160 + 26,
        82,
        89,
    )
    assert (first.eye1_x, first.eye1_y, first.eye2_x, first.eye2_y) == (
        113,
        177,
        158,
        172,
    )  # eyes stay absolute
    assert all(pd.isna(first[c]) for c in ("glasses_x", "glasses_y", "glasses_w", "glasses_h"))
    uint8_row = frame.iloc[1]
    assert uint8_row.occluder_x == 300  # 200 + 100, no uint8 wrap-around
    assert (uint8_row.glasses_x, uint8_row.glasses_y) == (200 + 76, 16 + 20)
    third = frame.iloc[2]
    assert pd.isna(third.eye2_x) and pd.isna(third.eye2_y)  # (-1, -1) eye = not labelled
    assert third.occluder_x == 50 - 1  # a lone -1 offset is a real coordinate
    assert third.glasses_x == 50 - 1 and third.glasses_y == 60 + 5
    blank = frame.iloc[3]
    assert all(pd.isna(blank[c]) for c in mafa.TRAIN.columns[8:])  # all -1 in columns 8-20
    assert blank.face_x == 10 and blank.eye2_x == 30


def test_test_conversion_mixed_dtypes(tmp_path):
    frame = mafa.read_mat(write_test(tmp_path / "LabelTestAll.mat"), mafa.TEST)
    assert list(frame.columns) == mafa.TEST.csv_columns
    assert len(frame) == 5
    masked, invalid, fractional, small, unmasked = (frame.iloc[i] for i in range(5))
    assert masked.face_type == 1 and (masked.occluder_x, masked.occluder_y) == (2694 + 9, 1211 + 105)
    assert invalid.face_type == 3 and pd.isna(invalid.occluder_x) and pd.isna(invalid.gender)
    assert fractional.face_y == -1  # a negative face y is kept (clipped when cropping)
    assert fractional.occluder_x == pytest.approx(101.9553) and fractional.occluder_y == pytest.approx(
        -1 + 20.213
    )
    assert (small.occluder_x, small.glasses_x, small.glasses_y, small.glasses_w) == (260, 254, 25, 20)
    assert unmasked.face_type == 2 and pd.isna(unmasked.orientation)


def test_inverse_gives_back_the_label_matrix(tmp_path):
    frame = mafa.read_mat(write_test(tmp_path / "LabelTestAll.mat"), mafa.TEST)
    raw = mafa.to_raw_labels(frame, mafa.TEST).to_numpy()
    expected = np.vstack([r[1].astype(float) for r in TEST_RECORDS])
    np.testing.assert_allclose(raw, expected, rtol=0, atol=1e-9)


def test_wrong_variable_name(tmp_path):
    path = write_train(tmp_path / "LabelTrainAll.mat", variable="labels")
    with pytest.raises(
        mafa.MafaFormatError, match=r"LabelTrainAll\.mat: variable 'label_train' not found .*labels"
    ):
        mafa.read_mat(path, mafa.TRAIN)


def test_missing_field(tmp_path):
    path = write_train(tmp_path / "LabelTrainAll.mat", fields=("orgImgName", "label"))
    with pytest.raises(
        mafa.MafaFormatError, match=r"LabelTrainAll\.mat: variable 'label_train' lacks field\(s\) imgName"
    ):
        mafa.read_mat(path, mafa.TRAIN)


def test_wrong_column_count(tmp_path):
    records = [TRAIN_RECORDS[0], ("x.jpg", "train_00000002.jpg", np.zeros((1, 18), np.uint8))]
    path = write_train(tmp_path / "LabelTrainAll.mat", records=records)
    with pytest.raises(
        mafa.MafaFormatError,
        match=r"record 1 \(train_00000002\.jpg\): label has shape \(1, 18\), expected \(n_faces, 21\)",
    ):
        mafa.read_mat(path, mafa.TRAIN)
    # the test layout read as train is the same mistake
    with pytest.raises(mafa.MafaFormatError, match="variable 'label_train' not found"):
        mafa.read_mat(write_test(tmp_path / "LabelTestAll.mat"), mafa.TRAIN)


def test_not_a_struct_and_not_a_mat(tmp_path):
    scipy.io.savemat(tmp_path / "a.mat", {"label_train": np.zeros((3, 21))})
    with pytest.raises(mafa.MafaFormatError, match="is not a struct array"):
        mafa.read_mat(tmp_path / "a.mat", mafa.TRAIN)
    (tmp_path / "b.mat").write_bytes(b"not a mat file at all" * 10)
    with pytest.raises(mafa.MafaFormatError, match=r"b\.mat: not a readable MATLAB \.mat file"):
        mafa.read_mat(tmp_path / "b.mat", mafa.TRAIN)


def test_convert_finds_files_recursively_and_handles_absence(tmp_path):
    nested = tmp_path / "mafa" / "MAFA-Label-Train"
    nested.mkdir(parents=True)
    write_train(nested / "LabelTrainAll.mat")
    files = {"train": "LabelTrainAll.mat", "test": "LabelTestAll.mat"}
    frames, notes = mafa.convert(tmp_path / "mafa", files)
    assert len(frames["train"]) == 4
    assert frames["test"].empty and list(frames["test"].columns) == mafa.TEST.csv_columns
    assert any("LabelTestAll.mat not found" in n for n in notes)
    frames, notes = mafa.convert(tmp_path / "mafa", files, enabled=False)
    assert frames["train"].empty and all("disabled" in n for n in notes)
    # two candidates: ask for a path instead of guessing
    (tmp_path / "mafa" / "copy").mkdir()
    write_train(tmp_path / "mafa" / "copy" / "LabelTrainAll.mat")
    with pytest.raises(mafa.MafaFormatError, match="several files named LabelTrainAll.mat"):
        mafa.convert(tmp_path / "mafa", files)
    frames, _ = mafa.convert(tmp_path / "mafa", {**files, "train": "MAFA-Label-Train/LabelTrainAll.mat"})
    assert len(frames["train"]) == 4


def test_stage_writes_csvs_and_fails_cleanly(tmp_path, repo):
    raw = tmp_path / "raw" / "mafa"
    raw.mkdir(parents=True)
    write_train(raw / "LabelTrainAll.mat")
    write_test(raw / "LabelTestAll.mat")
    (raw / "source.json").write_text(json.dumps({"enabled": True}))
    cmd = [sys.executable, str(repo / "stages" / "convert_mat.py"), "--raw", str(raw), "--out", str(tmp_path / "interim"),
           "--params", str(repo / "params.yaml")]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    train = pd.read_csv(tmp_path / "interim" / "mafa_train.csv")
    assert len(train) == 4 and train.loc[0, "occluder_x"] == 102
    assert pd.read_csv(tmp_path / "interim" / "mafa_test.csv").shape == (5, len(mafa.TEST.csv_columns))

    write_train(raw / "LabelTrainAll.mat", variable="wrong")
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    assert (
        done.stderr.strip().startswith("convert_mat: error:")
        and "variable 'label_train' not found" in done.stderr
    )

    (raw / "source.json").write_text(json.dumps({"enabled": False}))
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0 and "disabled" in done.stdout
    assert pd.read_csv(tmp_path / "interim" / "mafa_train.csv").empty


@pytest.mark.shared
@pytest.mark.parametrize(
    "layout,mat,dump,faces,images",
    [
        (mafa.TRAIN, "LabelTrainAll.mat", "MAFA_training_data.csv", 29452, 25876),
        (mafa.TEST, "LabelTestAll.mat", "MAFA_test_data.csv", 10033, 4935),
    ],
)
def test_reconstructed_mat_equals_csv_dump(shared, layout, mat, dump, faces, images):
    frame = mafa.read_mat(shared / "mafa" / "mat-reconstructed" / mat, layout)
    reference = pd.read_csv(shared / "mafa" / "label-dump-csv" / dump)
    assert len(frame) == len(reference) == faces
    assert frame["image"].nunique() == images
    assert frame["image"].tolist() == reference["imgName"].tolist()  # face for face, in .mat order
    # face boxes are never converted: compare them directly
    box = ["face_x", "face_y", "face_w", "face_h"]
    np.testing.assert_array_equal(frame[box].to_numpy(dtype=float), reference[box].to_numpy(dtype=float))
    # everything else through the inverse conversion (relative boxes, missing -> -1)
    raw = mafa.to_raw_labels(frame, layout)
    np.testing.assert_allclose(
        raw.to_numpy(), reference[list(layout.columns)].to_numpy(dtype=float), rtol=0, atol=1e-9
    )
    # and the conversion did something: absolute occluders, missing values where -1 was the sentinel
    has_occ = frame["occluder_w"].notna()
    assert (
        frame.loc[has_occ, "occluder_x"]
        == reference.loc[has_occ, "face_x"] + reference.loc[has_occ, "occluder_x"]
    ).all()
    glasses_absent = (reference[["glasses_x", "glasses_y", "glasses_w", "glasses_h"]] == -1).all(axis=1)
    assert (
        frame.loc[glasses_absent, "glasses_x"].isna().all()
        and frame.loc[~glasses_absent, "glasses_x"].notna().all()
    )
    if layout is mafa.TEST:
        assert frame["face_type"].value_counts().to_dict() == {1: 6354, 3: 2683, 2: 996}
        assert (frame["face_y"] < 0).sum() == 4  # real negative coordinates are kept
    else:
        assert frame["occluder_type"].value_counts().to_dict() == {1: 14109, 2: 13139, 3: 2202}
        assert frame["eye2_x"].isna().sum() == 1100
        assert frame["eye1_x"].isna().sum() == 0  # the one lone eye1_x of -1 is not the sentinel
        assert (frame["occluder_x"] - frame["face_x"] == -1).sum() == 265 - 2  # lone -1 offsets kept
