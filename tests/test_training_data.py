"""Sample selection over the crop / synthetic contracts, the uint8 tensor cache and the batch loader."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from training_fakes import ALL_DATASETS, make_crops, make_synthetic, repo_params, tiny_params

from maskpipe.training.config import resolve_model_config
from maskpipe.training.data import (
    BatchLoader,
    DataError,
    InMemoryImages,
    TensorCache,
    load_images,
    read_crops,
    read_synthetic,
    select_samples,
)
from maskpipe.training.transforms import BatchAugmenter, preprocess


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    root = tmp_path_factory.mktemp("fake")
    crops = make_crops(root, ALL_DATASETS, {"train": 6, "val": 3, "test": 3}, size=40)
    synth = make_synthetic(root, crops, size=40)
    return root, crops, synth


def params(name: str, profile: str = "seed", **extra) -> dict:
    p = resolve_model_config(repo_params(), name, profile=profile).replace(**extra)
    return p


def test_selection_honours_datasets_classes_and_split(fake):
    _, crops, synth = fake
    s = select_samples(crops, synth, params("resnet50_3class"), "train")
    assert list(s.columns) == ["path", "label", "label_idx", "dataset"]
    assert set(s["dataset"]) == {"kaggle_face_mask_detection"} and len(s) == 18
    assert set(s["label"]) == {"with_mask", "without_mask", "mask_weared_incorrect"}
    classes = params("resnet50_3class").classes
    assert all(classes[i] == lbl for i, lbl in zip(s["label_idx"], s["label"], strict=True))
    val = select_samples(crops, synth, params("resnet50_3class"), "val")
    assert not set(val["path"]) & set(s["path"])
    # mask_cnn lists face_mask_12k too (disabled, no crops): just mask_folders, two classes
    m = select_samples(crops, synth, params("mask_cnn"), "train")
    assert set(m["dataset"]) == {"mask_folders"} and set(m["label"]) == {"with_mask", "without_mask"}
    assert (m["label_idx"] == (m["label"] == "with_mask")).all()  # binary: positive = classes[1]


def test_oneclass_trains_on_masked_faces_only(fake):
    _, crops, synth = fake
    s = select_samples(crops, synth, params("cae_oneclass"), "train")
    assert set(s["label"]) == {"with_mask"} and (s["label_idx"] == 0).all()
    assert set(s["dataset"]) == {"mask_folders", "kaggle_face_mask_detection"}
    everything = select_samples(
        crops, synth, params("cae_oneclass"), "test", labels=["with_mask", "without_mask"]
    )
    assert set(everything.loc[everything["label"] == "without_mask", "label_idx"]) == {-1}


def test_synthetic_pseudo_dataset_pairs_masked_with_their_unmasked_sources(fake):
    _, crops, synth = fake
    p = params("resnet50_binary_synthetic")
    s = select_samples(crops, synth, p, "train")
    pos = s[s["label"] == "with_mask"]
    neg = s[s["label"] == "without_mask"]
    assert (pos["dataset"] == "synthetic").all() and pos["path"].str.startswith("data/synthetic/").all()
    train_synth = synth[synth["split"] == "train"]
    assert len(pos) == (train_synth["label"] == "with_mask").sum()
    # incorrectly worn synthetic masks are neither class of the binary model
    assert not s["path"].isin(train_synth.loc[train_synth["label"] == "mask_weared_incorrect", "path"]).any()
    sources = crops.set_index("face_id").loc[train_synth["source_face_id"], "crop_path"]
    assert set(neg["path"]) == set(sources)
    assert (neg["dataset"] != "synthetic").all()
    assert s["path"].is_unique


def test_max_samples_is_stratified_and_seeded(fake):
    _, crops, synth = fake
    p = params("resnet50_3class", max_samples=9)
    a = select_samples(crops, synth, p, "train")
    b = select_samples(crops, synth, p, "train")
    assert len(a) == 9 and a.equals(b)
    assert a["label"].value_counts().to_dict() == {
        "with_mask": 3,
        "without_mask": 3,
        "mask_weared_incorrect": 3,
    }
    c = select_samples(crops, synth, p.replace(seed=7), "train")
    assert not a.equals(c)


def test_missing_index_and_columns_are_named(tmp_path):
    with pytest.raises(DataError, match="index.csv: index not found"):
        read_crops(tmp_path / "index.csv")
    pd.DataFrame({"face_id": ["a"], "crop_path": ["x.png"]}).to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(DataError, match="bad.csv: missing column"):
        read_crops(tmp_path / "bad.csv")
    assert read_synthetic(tmp_path / "nope.csv").empty  # the synthetic index is optional


def test_tensor_cache_is_built_once_matches_preprocess_and_follows_content(fake, tmp_path):
    root, crops, synth = fake
    cache = TensorCache(tmp_path / "cache", base=root, workers=1, progress=False)
    paths = sorted(crops.loc[(crops["dataset"] == "lfw") & (crops["split"] == "train"), "crop_path"])
    arr = cache.get("lfw", "train", 24, paths)
    assert isinstance(arr, np.memmap) and arr.shape == (len(paths), 3, 24, 24) and arr.dtype == np.uint8
    files = list((tmp_path / "cache" / "lfw" / "train").glob("*.npy"))
    assert len(files) == 1
    stamp = files[0].stat().st_mtime_ns
    again = cache.get("lfw", "train", 24, paths)
    assert files[0].stat().st_mtime_ns == stamp and np.array_equal(arr, again)
    # the cache holds exactly the pixels inference sees
    ref = preprocess([Image.open(root / paths[0])], 24, [0, 0, 0], [1, 1, 1])[0]
    assert torch.allclose(torch.from_numpy(np.array(arr[0])).float() / 255, ref, atol=1e-6)
    # a changed file (same name) gets a new cache entry
    Image.new("RGB", (40, 40), (1, 2, 3)).save(root / paths[0])
    changed = cache.get("lfw", "train", 24, paths)
    assert len(list((tmp_path / "cache" / "lfw" / "train").glob("*.npy"))) == 2
    assert (np.array(changed[0]) == np.array([1, 2, 3]).reshape(3, 1, 1)).all()
    # old data versions are pruned: at most 3 arrays per dataset / split / size
    for i in range(3):
        Image.new("RGB", (40, 40), (i, 0, 0)).save(root / paths[0])
        cache.get("lfw", "train", 24, paths)
    assert len(list((tmp_path / "cache" / "lfw" / "train").glob("24px-*.npy"))) == 3
    assert len(list((tmp_path / "cache" / "lfw" / "train").glob("24px-*.json"))) == 3


def test_input_box_cuts_the_same_pixels_in_the_cache_and_at_inference(fake, tmp_path):
    """models.<m>.input_box: the tensor cache (training) and preprocess_for (evaluate, predict,
    serve, pyfunc) cut the same part of the crop; boxed and whole arrays are cached apart."""
    from maskpipe.training.transforms import cut_box, preprocess_for

    root, crops, _ = fake
    box = (0.5, 1.0, 0.25, 0.75)
    img = Image.new("RGB", (40, 40), (0, 0, 0))
    img.paste((200, 10, 10), (10, 20, 30, 40))  # red exactly inside the box, black elsewhere
    img.save(root / "boxed.png")
    assert cut_box(img, box).size == (20, 20) and cut_box(img, None) is img
    cache = TensorCache(tmp_path / "cache", base=root, workers=1, progress=False)
    boxed = np.array(cache.get("x", "train", 16, ["boxed.png"], box)[0])
    whole = np.array(cache.get("x", "train", 16, ["boxed.png"])[0])
    assert (boxed == np.array([200, 10, 10], dtype=np.uint8).reshape(3, 1, 1)).all()
    assert (whole == 0).any() and not np.array_equal(boxed, whole)
    names = sorted(f.name.split("-")[0] for f in (tmp_path / "cache" / "x" / "train").glob("*.npy"))
    assert names == ["16px", "16pxbox"]
    meta = {"image_size": 16, "mean": [0, 0, 0], "std": [1, 1, 1], "input_box": list(box)}
    ref = preprocess_for([Image.open(root / "boxed.png")], meta)[0]
    assert torch.allclose(torch.from_numpy(boxed).float() / 255, ref, atol=1e-6)
    old_meta = {k: v for k, v in meta.items() if k != "input_box"}  # an artifact from before the key
    assert torch.allclose(
        preprocess_for([img], old_meta)[0], torch.from_numpy(whole).float() / 255, atol=1e-6
    )


def test_corrupt_crop_is_a_clear_error(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    cache = TensorCache(tmp_path / "cache", base=tmp_path, workers=1, progress=False)
    with pytest.raises(DataError, match="bad.png"):
        cache.get("x", "train", 16, ["bad.png"])


def test_load_images_gathers_across_datasets(fake, tmp_path):
    root, crops, synth = fake
    p = params("resnet50_binary_synthetic", image_size=16)
    samples = select_samples(crops, synth, p, "val")
    cache = TensorCache(tmp_path / "c", base=root, workers=1, progress=False)
    images = load_images(samples, crops, synth, "val", 16, cache)
    assert len(images) == len(samples) and len(images.keys) == samples["dataset"].nunique()
    idx = np.array([len(samples) - 1, 0, 3])
    batch = images.gather(idx)
    for j, i in enumerate(idx):
        ref = preprocess([Image.open(root / samples["path"][i])], 16, [0, 0, 0], [1, 1, 1])[0]
        assert torch.allclose(torch.from_numpy(batch[j]).float() / 255, ref, atol=1e-6)
    assert np.array_equal(images.labels, samples["label_idx"].to_numpy())


def test_batch_loader_is_deterministic_per_epoch_and_covers_everything():
    imgs = np.arange(11 * 3 * 4 * 4, dtype=np.int64).reshape(11, 3, 4, 4) % 251
    data = InMemoryImages(imgs.astype(np.uint8), np.arange(11))
    aug = BatchAugmenter(
        ["hflip"],
        [0, 0, 0],
        [1, 1, 1],
        rotation_degrees=0,
        scale_range=(1, 1),
        brightness=0,
        contrast=0,
        downscale_range=(1, 1),
    )
    loader = BatchLoader(data, 5, aug, train=True, seed=1)
    assert len(loader) == 2  # 5 + 5, the last batch of one image is dropped in training

    def labels(epoch):
        loader.set_epoch(epoch)
        return [y.tolist() for _, y in loader]

    assert labels(1) == labels(1) != labels(2)
    # the prefetch thread (used on CUDA) yields exactly the same batches
    threaded = BatchLoader(data, 5, aug, train=True, seed=1, prefetch=2)
    threaded.set_epoch(2)
    loader.set_epoch(2)
    for (xa, ya), (xb, yb) in zip(loader, threaded, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb)
    ev = BatchLoader(data, 5, aug, train=False, prefetch=0)
    seen = [y for _, y in ev]
    assert len(ev) == 3 and torch.cat(seen).tolist() == list(range(11))
    x, _ = next(iter(ev))
    assert torch.allclose(
        x, torch.from_numpy(imgs[:5].astype(np.uint8)).float() / 255
    )  # no augmentation in eval


def test_tiny_profile_selection_size():
    p = resolve_model_config(tiny_params(), "mask_cnn")
    assert p.max_samples == 64 and p.image_size == 32
