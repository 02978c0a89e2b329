"""Cropping: real-format fixtures (VOC XML + RGBA PNG, class folders, LFW, MAFA), bad inputs
skipped with a reason, and the real mirror."""

from __future__ import annotations

import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from maskpipe import crop, voc
from maskpipe.collectors import assign_face_ids
from maskpipe.collectors.base import Face, SourceImage
from maskpipe.collectors.folders import collect_folders
from maskpipe.crop_geometry import box_problem, pad_box, resize_square
from maskpipe.crop_summary import format_summary
from maskpipe.schemas import CROP_INDEX_COLUMNS, CROP_SKIP_COLUMNS
from maskpipe.settings import ConfigError

SIZE = 64
CROP_CFG = {"padding": 0.10, "size": SIZE, "min_face": 12, "resize": "stretch", "lfw_box": [68, 68, 182, 182],
            "max_images_per_dataset": None, "workers": 1,
            "mafa": {"test_face_types": {"masked": "with_mask", "unmasked": "without_mask", "invalid": None},
                     "train_label": "with_mask", "train_occluder_types": ["simple", "complex"]}}  # fmt: skip
SPLIT_CFG = {"val": 0.2, "test": 0.2, "dedup_max_distance": 4, "group_near_duplicates": True}


def voc_xml(filename: str, width: int, height: int, objects: list[tuple]) -> str:
    """Pascal VOC as in the Kaggle set; an object is (name, xmin, ymin, xmax, ymax) or (name, None)."""
    parts = [f"<annotation><folder>images</folder><filename>{filename}</filename>",
             f"<size><width>{width}</width><height>{height}</height><depth>3</depth></size><segmented>0</segmented>"]  # fmt: skip
    for name, *box in objects:
        bnd = (
            ""
            if box == [None]
            else "<bndbox>"
            + "".join(f"<{t}>{v}</{t}>" for t, v in zip(("xmin", "ymin", "xmax", "ymax"), box, strict=True))
            + "</bndbox>"
        )
        parts.append(f"<object><name>{name}</name><pose>Unspecified</pose><truncated>0</truncated>"
                     f"<occluded>0</occluded><difficult>0</difficult>{bnd}</object>")  # fmt: skip
    return "".join(parts) + "</annotation>"


def noise(width: int, height: int, mode: str = "RGB", seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4, "L": 1}[mode]
    arr = rng.integers(0, 256, (height, width, channels), dtype=np.uint8)
    if mode == "RGBA":
        arr[..., 3] = 255
    return Image.fromarray(arr.squeeze() if channels == 1 else arr, mode)


def make_voc(root: Path) -> None:
    (root / "annotations").mkdir(parents=True)
    (root / "images").mkdir()
    noise(120, 100, "RGBA", seed=1).save(root / "images" / "img1.png")
    objects = [
        ("with_mask", 10, 10, 50, 50),  # fine
        ("without_mask", 90, 60, 140, 120),  # sticks out of the 120x100 image: clipped, kept
        ("with_mask", 200, 200, 240, 240),  # entirely outside
        ("with_mask", 60, 10, 40, 50),  # negative width
        ("without_mask", 30, 30, 30, 60),  # empty
        ("mask_weared_incorrect", 5, 70, 12, 78),  # 7x8 px < min_face
        ("sunglasses", 10, 10, 50, 50),  # not a label we know
        ("with_mask", None),  # no <bndbox>
        ("mask_weared_incorrect", 60, 5, 100, 45),  # fine
    ]
    (root / "annotations" / "img1.xml").write_text(voc_xml("img1.png", 120, 100, objects))
    (root / "annotations" / "img2.xml").write_text(voc_xml("img2.png", 80, 80, [("with_mask", 1, 1, 40, 40)]))
    # corrupt and truncated images with valid annotations
    noise(80, 80, seed=7).save(root / "images" / "img3.png")
    data = bytearray((root / "images" / "img3.png").read_bytes())
    start = data.index(b"IDAT") + 20
    data[start : start + 10] = bytes(10)  # damaged compressed data
    (root / "images" / "img3.png").write_bytes(bytes(data))
    (root / "annotations" / "img3.xml").write_text(voc_xml("img3.png", 80, 80, [("with_mask", 1, 1, 40, 40)]))
    (root / "images" / "img6.png").write_text("this is not a PNG file")
    (root / "annotations" / "img6.xml").write_text(voc_xml("img6.png", 80, 80, [("with_mask", 1, 1, 40, 40)]))
    noise(200, 200, seed=2).save(root / "images" / "img4.png")
    data = (root / "images" / "img4.png").read_bytes()
    (root / "images" / "img4.png").write_bytes(data[: len(data) // 2])
    (root / "annotations" / "img4.xml").write_text(
        voc_xml("img4.png", 200, 200, [("with_mask", 1, 1, 40, 40)])
    )
    (root / "annotations" / "img5.xml").write_text("<annotation><filename>img5.png</filename>")  # broken XML
    noise(64, 64, seed=3).save(root / "images" / "img10.png")
    (root / "annotations" / "img10.xml").write_text(
        voc_xml("img10.png", 64, 64, [("without_mask", 8, 8, 56, 56)])
    )


def exif_rotated_jpeg(path: Path) -> None:
    """Stored 60x40, left half red, right half blue, EXIF orientation 6 (display rotated 90 deg clockwise):
    shown 40x60 with red on top and blue at the bottom."""
    img = Image.new("RGB", (60, 40), (255, 0, 0))
    img.paste((0, 0, 255), (30, 0, 60, 40))
    exif = Image.Exif()
    exif[0x0112] = 6
    img.save(path, quality=95, exif=exif)


def make_folders(root: Path) -> None:
    for sub in ("Train/WithMask", "Train/WithoutMask", "Test/WithMask", "misc"):
        (root / sub).mkdir(parents=True)
    rng = np.random.default_rng(9)
    indices = rng.integers(0, 4, (50, 50), dtype=np.uint8)
    indices[:20, :20] = 0
    palette = Image.frombytes("P", (50, 50), indices.tobytes())
    palette.putpalette([0, 255, 0, 255, 255, 255, 0, 0, 0, 90, 40, 200] + [0, 0, 0] * 252)  # 0 = green
    palette.save(root / "Train" / "WithMask" / "palette.png")
    cmyk = rng.integers(0, 256, (40, 40, 4), dtype=np.uint8)
    cmyk[:20, :20] = (0, 255, 255, 0)  # red corner
    Image.fromarray(cmyk, "CMYK").save(root / "Train" / "WithoutMask" / "cmyk.jpg", quality=95)
    exif_rotated_jpeg(root / "Test" / "WithMask" / "rotated.jpg")
    noise(30, 30, seed=4).save(root / "misc" / "stray.png")  # no class folder above it
    (root / "Train" / "WithMask" / "notes.txt").write_text("not an image")


def make_lfw(root: Path) -> None:
    for name in ("Ann_Example", "Bob_Example"):
        (root / name).mkdir(parents=True)
        noise(250, 250, "L", seed=ord(name[0])).save(root / name / f"{name}_0001.jpg")


def make_mafa(root: Path, interim: Path) -> None:
    (root / "test-images" / "images").mkdir(parents=True)
    (root / "train-images" / "images").mkdir(parents=True)
    noise(100, 80, seed=5).save(root / "test-images" / "images" / "test_00000001.jpg")
    noise(100, 80, seed=6).save(root / "train-images" / "images" / "train_00000001.jpg")
    interim.mkdir(parents=True, exist_ok=True)
    test_cols = "image,face_index,face_x,face_y,face_w,face_h,face_type,occluder_type"
    (interim / "mafa_test.csv").write_text(
        f"{test_cols}\ntest_00000001.jpg,0,10,-4,40,40,1,2\ntest_00000001.jpg,1,50,30,30,30,2,\n"
        "test_00000001.jpg,2,5,5,20,20,3,\ntest_00000099.jpg,0,5,5,20,20,1,1\n"
    )
    (interim / "mafa_train.csv").write_text(
        "image,orig_image,face_index,face_x,face_y,face_w,face_h,occluder_type\n"
        "train_00000001.jpg,a.jpg,0,10,10,40,40,1\ntrain_00000001.jpg,a.jpg,1,55,20,30,30,3\n"
    )


@pytest.fixture()
def raw(tmp_path) -> Path:
    raw = tmp_path / "raw"
    make_voc(raw / "voc_set")
    make_folders(raw / "folder_set")
    make_lfw(raw / "lfw")
    make_mafa(raw / "mafa", tmp_path / "interim")
    (raw / "disabled_set").mkdir()
    (raw / "disabled_set" / "source.json").write_text(json.dumps({"enabled": False}))
    return raw


DATASETS = {
    "voc_set": {"enabled": True, "format": "voc"},
    "folder_set": {"enabled": True, "format": "folders"},
    "lfw": {"enabled": True, "format": "lfw"},
    "mafa": {"enabled": True, "format": "mafa", "images": True},
    "disabled_set": {"enabled": True, "format": "folders"},
    "templates": {"enabled": True, "format": "templates"},
}


def run(raw: Path, tmp_path: Path, **overrides) -> crop.CropResult:
    cfg = {**CROP_CFG, **overrides}
    return crop.run_crop(
        raw, DATASETS, cfg, SPLIT_CFG, 7, tmp_path / "interim", tmp_path / "crops", prefix="data/crops"
    )


def skip_reasons(result: crop.CropResult, dataset: str) -> list[str]:
    return sorted(result.skipped.loc[result.skipped.dataset == dataset, "reason"])


def test_voc_parse(tmp_path):
    make_voc(tmp_path / "v")
    ann = voc.parse_voc(tmp_path / "v" / "annotations" / "img1.xml")
    assert (ann.filename, ann.width, ann.height) == ("img1.png", 120, 100)
    assert len(ann.objects) == 8 and ann.objects[0].box == (10, 10, 50, 50)
    assert ann.bad_objects == [(7, "with_mask", "<bndbox> missing")]
    with pytest.raises(voc.VocError, match=r"img5\.xml: not valid XML"):
        voc.parse_voc(tmp_path / "v" / "annotations" / "img5.xml")


def test_geometry():
    assert box_problem((10, 10, 50, 50), 100, 100, 12) is None
    assert box_problem((90, 90, 130, 130), 100, 100, 5) is None  # partly outside: clipped
    assert box_problem((95, 95, 130, 130), 100, 100, 12) == "too_small"  # 5x5 px inside the image
    assert box_problem((100, 0, 130, 30), 100, 100, 12) == "out_of_image"
    assert box_problem((-40, 0, -1, 30), 100, 100, 12) == "out_of_image"
    assert box_problem((50, 10, 40, 50), 100, 100, 12) == "negative_box"
    assert box_problem((10, 10, 10, 50), 100, 100, 12) == "empty_box"
    assert box_problem((float("nan"), 10, 20, 50), 100, 100, 12) == "invalid_box"
    assert pad_box((10, 10, 50, 30), 0.10, 100, 100) == (6, 8, 54, 32)
    assert pad_box((0, 0, 100, 100), 0.10, 100, 100) == (0, 0, 100, 100)  # clipped
    img = Image.new("RGB", (100, 40), (255, 0, 0))
    assert resize_square(img, 32, "stretch").getpixel((16, 1)) == (255, 0, 0)
    boxed = resize_square(img, 32, "letterbox")
    assert (
        boxed.size == (32, 32)
        and boxed.getpixel((16, 1)) == (0, 0, 0)
        and boxed.getpixel((16, 16)) == (255, 0, 0)
    )


def test_crop_all_formats(raw, tmp_path):
    result = run(raw, tmp_path)
    index = result.index
    assert list(index.columns) == list(CROP_INDEX_COLUMNS)
    assert list(result.skipped.columns) == list(CROP_SKIP_COLUMNS)
    assert index.face_id.is_unique

    # VOC: two good faces + the clipped one in img1, img10; everything else skipped with its reason
    v = index[index.dataset == "voc_set"].set_index("face_id")
    assert sorted(v.index) == ["voc_set-img1-0", "voc_set-img1-1", "voc_set-img1-8", "voc_set-img10-0"]
    clipped = v.loc["voc_set-img1-1"]
    assert (clipped.box_xmax, clipped.box_ymax) == (140, 120)  # the original box is recorded
    assert (clipped.pad_xmin, clipped.pad_ymin, clipped.pad_xmax, clipped.pad_ymax) == (85, 54, 120, 100)
    assert v.loc["voc_set-img1-8", "label"] == "mask_weared_incorrect"
    assert v.loc["voc_set-img1-0", "crop_path"] == "data/crops/voc_set/with_mask/voc_set-img1-0.png"
    assert v.loc["voc_set-img1-0", "source_image"] == "images/img1.png"
    assert skip_reasons(result, "voc_set") == sorted([
        "out_of_image", "negative_box", "empty_box", "too_small", "unknown_label", "bad_annotation",  # img1
        "image_missing",  # img2.xml: no img2.png
        "image_corrupt",  # img3.png
        "image_corrupt",  # img6.png
        "image_truncated",  # img4.png
        "bad_annotation",  # img5.xml
    ])  # fmt: skip
    vskips = result.skipped[result.skipped.dataset == "voc_set"]
    missing = vskips[vskips.reason == "image_missing"].iloc[0]
    assert missing.source == "annotations/img2.xml" and "img2.png not found" in missing.detail
    assert result.skipped[result.skipped.reason == "image_corrupt"].source.tolist() == [
        "images/img3.png",
        "images/img6.png",
    ]

    # class folders: WithMask/WithoutMask mapped, mode conversions, EXIF honoured, stray file skipped
    f = index[index.dataset == "folder_set"].set_index("source_image")
    assert f.label.to_dict() == {
        "Test/WithMask/rotated.jpg": "with_mask",
        "Train/WithMask/palette.png": "with_mask",
        "Train/WithoutMask/cmyk.jpg": "without_mask",
    }
    assert skip_reasons(result, "folder_set") == ["unknown_label"]
    rotated = f.loc["Test/WithMask/rotated.jpg"]
    assert (rotated.box_xmax, rotated.box_ymax) == (40, 60)  # the displayed (rotated) size
    out = tmp_path / "crops"
    with Image.open(out / rotated.crop_path.removeprefix("data/crops/")) as img:
        assert img.mode == "RGB" and img.size == (SIZE, SIZE)
        top, bottom = img.getpixel((SIZE // 2, 4)), img.getpixel((SIZE // 2, SIZE - 5))
    assert top[0] > 200 and top[2] < 60, top  # red on top ...
    assert bottom[2] > 200 and bottom[0] < 60, bottom  # ... blue at the bottom
    with Image.open(out / f.loc["Train/WithMask/palette.png"].crop_path.removeprefix("data/crops/")) as img:
        assert img.mode == "RGB" and img.getpixel((5, 5)) == (0, 255, 0)
    with Image.open(out / f.loc["Train/WithoutMask/cmyk.jpg"].crop_path.removeprefix("data/crops/")) as img:
        r, g, b = img.getpixel((5, 5))
        assert img.mode == "RGB" and r > 200 and g < 60 and b < 60

    # LFW: fixed centre box, grayscale -> RGB, one group per person
    lfw = index[index.dataset == "lfw"]
    assert len(lfw) == 2 and set(lfw.label) == {"without_mask"}
    assert lfw[["pad_xmin", "pad_ymin", "pad_xmax", "pad_ymax"]].iloc[0].tolist() == [56, 56, 194, 194]
    with Image.open(out / lfw.crop_path.iloc[0].removeprefix("data/crops/")) as img:
        assert img.mode == "RGB"

    # MAFA: test face types mapped, invalid and hand-occluded faces left out, negative y clipped
    m = index[index.dataset == "mafa"].set_index("face_id")
    assert m.label.to_dict() == {
        "mafa-train_00000001-0": "with_mask",
        "mafa-test_00000001-0": "with_mask",
        "mafa-test_00000001-1": "without_mask",
    }
    assert m.loc["mafa-test_00000001-0", "pad_ymin"] == 0 and m.loc["mafa-test_00000001-0", "box_ymin"] == -4
    assert m.loc["mafa-test_00000001-0", "source_image"] == "test-images/images/test_00000001.jpg"
    assert skip_reasons(result, "mafa") == ["image_missing", "label_excluded", "label_excluded"]

    # every crop exists, is RGB and size x size; nothing left from the disabled dataset or the templates
    for path in index.crop_path:
        with Image.open(out / path.removeprefix("data/crops/")) as img:
            assert img.size == (SIZE, SIZE) and img.mode == "RGB"
    assert set(index.dataset) == {"voc_set", "folder_set", "lfw", "mafa"}
    assert any("disabled_set: disabled" in n for n in result.notes)

    # the files on disk say the same
    on_disk = pd.read_csv(out / "index.csv")
    assert on_disk.face_id.tolist() == index.face_id.tolist() and list(on_disk.columns) == list(
        CROP_INDEX_COLUMNS
    )
    assert len(pd.read_csv(out / "skipped.csv")) == len(result.skipped)
    assert (out / "duplicates.csv").exists()
    # all faces of a photo in one split
    assert index.groupby(["dataset", "source_image"]).split.nunique().max() == 1
    assert set(index.split) <= {"train", "val", "test"}


def test_summary_counts(raw, tmp_path):
    result = run(raw, tmp_path)
    s = result.summary
    assert s["faces"] == len(result.index) == 12
    assert s["datasets"]["voc_set"]["faces"] == 4 and s["datasets"]["voc_set"]["images"] == 2
    labels = s["datasets"]["voc_set"]["labels"]
    assert labels["with_mask"]["total"] == 1 and labels["without_mask"]["total"] == 2
    assert sum(v["faces"] for v in s["splits"].values()) == 12
    assert s["skipped"]["total"] == len(result.skipped)
    assert (
        s["skipped"]["by_reason"]["image_missing"] == 2
        and s["skipped"]["by_dataset"]["mafa"]["label_excluded"] == 2
    )
    assert s["near_duplicates"] == {"max_distance": 4, "pairs": 0, "cross_split_pairs": 0}
    table = format_summary(s)
    assert "voc_set" in table and "skipped 15" in table
    json.dumps(s)  # plain JSON types only


def test_output_replaced_atomically_and_deterministic(raw, tmp_path):
    stale = tmp_path / "crops" / "old_dataset" / "x.png"
    stale.parent.mkdir(parents=True)
    stale.write_bytes(b"old")
    first = run(raw, tmp_path)
    assert not stale.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".crops")]  # no temp folders left
    index_bytes = (tmp_path / "crops" / "index.csv").read_bytes()
    second = run(raw, tmp_path, workers=2)  # the pool gives the same result as one process
    assert (tmp_path / "crops" / "index.csv").read_bytes() == index_bytes
    assert first.summary == second.summary


def test_failure_keeps_previous_output(raw, tmp_path, monkeypatch):
    run(raw, tmp_path)
    before = (tmp_path / "crops" / "index.csv").read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(crop.dedup, "near_duplicate_pairs", boom)
    with pytest.raises(RuntimeError):
        run(raw, tmp_path)
    assert (tmp_path / "crops" / "index.csv").read_bytes() == before


def test_near_duplicates_share_a_split(tmp_path):
    raw = tmp_path / "raw"
    for i in range(12):
        folder = raw / "dups" / ("with_mask" if i % 2 else "without_mask")
        folder.mkdir(parents=True, exist_ok=True)
        noise(40, 40, seed=100 + i).save(folder / f"orig{i}.png")
        noise(40, 40, seed=100 + i).save(folder / f"copy{i}.png")  # same pixels, other file
    datasets = {"dups": {"enabled": True, "format": "folders"}}
    result = crop.run_crop(
        raw, datasets, CROP_CFG, {**SPLIT_CFG, "val": 0.3, "test": 0.3}, 1, tmp_path, tmp_path / "c"
    )
    assert result.summary["near_duplicates"]["pairs"] == 12
    assert result.summary["near_duplicates"]["cross_split_pairs"] == 0
    assert set(result.index.split) == {"train", "val", "test"}
    split_of = result.index.set_index("source_image").split
    for i in range(12):
        sub = "with_mask" if i % 2 else "without_mask"
        assert split_of[f"{sub}/orig{i}.png"] == split_of[f"{sub}/copy{i}.png"]
    # without grouping some copies land in other splits, and the count says so
    ungrouped = crop.run_crop(
        raw, datasets, CROP_CFG, {**SPLIT_CFG, "val": 0.3, "test": 0.3, "group_near_duplicates": False}, 1, tmp_path,
        tmp_path / "c",
    )  # fmt: skip
    dups = pd.read_csv(tmp_path / "c" / "duplicates.csv")
    assert ungrouped.summary["near_duplicates"]["cross_split_pairs"] == int(dups.cross_split.sum()) > 0


def test_limit_spreads_over_classes(raw, tmp_path):
    result = run(raw, tmp_path, max_images_per_dataset=2)
    folders = result.index[result.index.dataset == "folder_set"]
    assert len(folders) == 2 and set(folders.label) == {"with_mask", "without_mask"}


def test_bad_params_are_clear(raw, tmp_path):
    with pytest.raises(ConfigError, match="crop.resize: 'squash' is not one of stretch, letterbox"):
        run(raw, tmp_path, resize="squash")
    with pytest.raises(
        ConfigError, match="crop.mafa.train_occluder_types: 'hand' is not one of simple, complex"
    ):
        run(raw, tmp_path, mafa={**CROP_CFG["mafa"], "train_occluder_types": ["hand"]})


def test_stage_cli(raw, tmp_path, repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["datasets"] = DATASETS
    params["crop"] = {**params["crop"], "size": SIZE}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    cmd = [sys.executable, str(repo / "stages" / "crop.py"), "--raw", str(raw), "--interim", str(tmp_path / "interim"),
           "--out", "data/crops", "--metrics", "metrics/data.json", "--params", "params.yaml"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "faces/s" in done.stdout and "near-duplicate crop pairs" in done.stdout
    summary = json.loads((tmp_path / "metrics" / "data.json").read_text())
    assert summary["faces"] == 12
    index = pd.read_csv(tmp_path / "data" / "crops" / "index.csv")
    assert all((tmp_path / p).exists() for p in index.crop_path)  # crop_path is relative to the repo root

    params["split"]["val"] = 0.9
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2 and "Traceback" not in done.stderr  # a params value: exit 2
    assert (
        done.stderr.strip()
        == "crop: error: params.yaml: split.val + split.test must be < 1 (train needs images), got 1.05"
    )


@pytest.mark.shared
def test_mirror_voc_annotations(shared):
    from collections import Counter

    files = sorted((shared / "kaggle-face-mask-detection" / "annotations").glob("*.xml"))
    assert len(files) == 853
    counts = Counter(o.name for f in files for o in voc.parse_voc(f).objects)
    assert counts == {"with_mask": 3232, "without_mask": 717, "mask_weared_incorrect": 123}


@pytest.mark.shared
def test_mirror_kaggle_crop(shared, tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "kaggle_face_mask_detection").symlink_to(shared / "kaggle-face-mask-detection")
    datasets = {"kaggle_face_mask_detection": {"enabled": True, "format": "voc"}}
    result = crop.run_crop(
        raw, datasets, {**CROP_CFG, "size": 32, "workers": 2}, SPLIT_CFG, 42, tmp_path, tmp_path / "c"
    )
    skipped = result.skipped
    assert (skipped.reason == "image_missing").sum() == 853 - 200
    face_skips = skipped[skipped.reason != "image_missing"]
    assert set(face_skips.reason) <= {"too_small", "out_of_image", "empty_box", "negative_box"}
    assert len(result.index) + len(face_skips) == 867  # every face of the 200 images: cropped or skipped
    assert len(result.index) > 700
    assert len(set(result.index.source_image) | set(face_skips.source)) == 200
    assert set(result.index.label) == {"with_mask", "without_mask", "mask_weared_incorrect"}
    assert result.index.groupby("source_image").split.nunique().max() == 1
    fractions = result.index.drop_duplicates("source_image").split.value_counts(normalize=True)
    assert abs(fractions["val"] - 0.2) < 0.05 and abs(fractions["test"] - 0.2) < 0.05


def test_face_ids_stay_unique_when_file_names_repeat(tmp_path):
    root = tmp_path / "raw" / "twelve_k"
    for sub in (
        "Face Mask Dataset/Train/WithMask",
        "Face Mask Dataset/Test/WithMask",
        "Face Mask Dataset/Train/WithoutMask",
    ):
        (root / sub).mkdir(parents=True)
        noise(30, 30, seed=len(sub)).save(root / sub / "1.png")
    noise(30, 30, seed=1).save(root / "Face Mask Dataset" / "Train" / "WithMask" / "2.png")
    got = collect_folders("twelve_k", root)
    assign_face_ids(got.sources)
    ids = {s.source_image: s.faces[0].face_id for s in got.sources}
    assert ids == {
        "Face Mask Dataset/Test/WithMask/1.png": "twelve_k-Face_Mask_Dataset_Test_WithMask_1-0",
        "Face Mask Dataset/Train/WithMask/1.png": "twelve_k-Face_Mask_Dataset_Train_WithMask_1-0",
        "Face Mask Dataset/Train/WithMask/2.png": "twelve_k-2-0",
        "Face Mask Dataset/Train/WithoutMask/1.png": "twelve_k-Face_Mask_Dataset_Train_WithoutMask_1-0",
    }
    assert [s.faces[0].label for s in got.sources] == ["with_mask", "with_mask", "with_mask", "without_mask"]
    # paths the slug cannot tell apart get a hash
    clash = [
        SourceImage("d", Path(p), p, p, [Face(0, "with_mask", None)]) for p in ("a b/x.png", "a_b/x.png")
    ]
    assign_face_ids(clash)
    assert clash[0].faces[0].face_id != clash[1].faces[0].face_id
    assert all(s.faces[0].face_id.startswith("d-a_b_x_") for s in clash)


def write_stage_params(repo: Path, tmp_path: Path, **crop_overrides) -> list[str]:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["datasets"] = DATASETS
    params["crop"] = {**params["crop"], "size": SIZE, **crop_overrides}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    return [
        sys.executable,
        str(repo / "stages" / "crop.py"),
        "--raw",
        str(tmp_path / "raw"),
        "--interim",
        str(tmp_path / "interim"),
        "--out",
        "data/crops",
        "--metrics",
        "metrics/data.json",
        "--params",
        "params.yaml",
    ]


@pytest.mark.parametrize(
    "overrides, message",
    [
        (
            {"padding": float("inf")},
            "crop: error: params.yaml: crop.padding: expected a finite number, got inf",
        ),
        ({"padding": "inf"}, "crop: error: params.yaml: crop.padding: expected a number, got 'inf' (a str)"),
        ({"padding": "abc"}, "crop: error: params.yaml: crop.padding: expected a number, got 'abc' (a str)"),
        ({"padding": 3}, "crop: error: params.yaml: crop.padding: must be >= 0 and <= 2, got 3.0"),
        ({"size": 0}, "crop: error: params.yaml: crop.size: must be >= 8 and <= 4096, got 0"),
        ({"min_face": -1}, "crop: error: params.yaml: crop.min_face: must be >= 1 and <= 4096, got -1"),
        (
            {"png_compress_level": 12},
            "crop: error: params.yaml: crop.png_compress_level: must be >= 0 and <= 9, got 12",
        ),
        ({"paddng": 0.1}, "crop: error: params.yaml: crop.paddng: unknown key (did you mean 'padding'?)"),
    ],
)
def test_stage_bad_params_one_line_exit_2(raw, tmp_path, repo, overrides, message):
    """Issue 13 item 4: `dvc exp run -S crop.padding=inf` / `=abc` gave a traceback / an unnamed error."""
    cmd = write_stage_params(repo, tmp_path, **overrides)
    done = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == message
    assert not (tmp_path / "data" / "crops").exists()  # refused before any work


def test_every_numeric_crop_and_split_param_has_a_range():
    from dataclasses import fields

    from maskpipe.crop_config import CropConfig, SplitConfig

    for section in (CropConfig, SplitConfig):
        for f in fields(section):
            if f.type in ("int", "float", "int | None"):
                bounds = [f.metadata.get(k) for k in ("ge", "gt", "le", "lt")]
                assert any(b is not None for b in bounds), f"{section.__name__}.{f.name} has no range"


def huge_png(path: Path, side: int = 13000) -> None:
    """A real, valid 1-bit PNG of side x side pixels: ~20 KB on disk, 507 MB once decoded to RGB."""
    Image.new("1", (side, side)).save(path, optimize=False)


def test_crop_skips_images_over_the_pixel_cap(tmp_path):
    """Issue 13 item 6: a 169-Mpx image was decoded with only a Pillow warning."""
    from maskpipe.crop_config import CropConfig
    from maskpipe.predict_settings import PredictConfig

    assert CropConfig().max_pixels == PredictConfig().max_pixels == 40_000_000  # one cap, two stages
    folder = tmp_path / "raw" / "big" / "with_mask"
    folder.mkdir(parents=True)
    huge_png(folder / "huge.png")
    noise(40, 40, seed=1).save(folder / "small.png")
    noise(30, 30, seed=2).save(folder / "tiny.png")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = crop.run_crop(
            tmp_path / "raw", {"big": {"format": "folders"}}, CROP_CFG, SPLIT_CFG, 1, tmp_path, tmp_path / "c"
        )
    assert not [w for w in caught if issubclass(w.category, Image.DecompressionBombWarning)]
    assert sorted(result.index.source_image) == ["with_mask/small.png", "with_mask/tiny.png"]
    (row,) = result.skipped.to_dict("records")
    assert row["source"] == "with_mask/huge.png" and row["reason"] == "image_too_large"
    assert "13000x13000 exceeds the 40000000 pixel limit" in row["detail"]
    on_disk = pd.read_csv(tmp_path / "c" / "skipped.csv")
    assert on_disk.reason.tolist() == ["image_too_large"]
    # a lower cap is a params value like any other
    low = crop.run_crop(
        tmp_path / "raw",
        {"big": {"format": "folders"}},
        {**CROP_CFG, "max_pixels": 1000},
        SPLIT_CFG,
        1,
        tmp_path,
        tmp_path / "c",
    )
    assert low.skipped.source.tolist() == ["with_mask/huge.png", "with_mask/small.png"]
    assert set(low.skipped.reason) == {"image_too_large"} and low.index.source_image.tolist() == [
        "with_mask/tiny.png"
    ]
