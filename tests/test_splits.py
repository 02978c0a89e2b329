"""Splits by source image (stratified, seeded) and the near-duplicate search."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageEnhance

from maskpipe import dedup, splits


def faces_frame(n_images: int = 600, seed: int = 0) -> pd.DataFrame:
    """Photos with 1-4 faces each; labels 75 % with_mask, 20 % without_mask, 5 % incorrect."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_images):
        dataset = "a" if i % 3 else "b"
        for k in range(rng.integers(1, 5)):
            label = rng.choice(["with_mask", "without_mask", "mask_weared_incorrect"], p=[0.75, 0.2, 0.05])
            rows.append({"group": f"{dataset}:img{i}.png", "dataset": dataset, "label": label, "face": k})
    return pd.DataFrame(rows)


def test_all_faces_of_an_image_share_a_split():
    faces = faces_frame()
    faces["split"] = splits.assign_splits(faces, 0.15, 0.15, seed=42)
    assert faces.groupby("group").split.nunique().max() == 1
    assert set(faces.split) == {"train", "val", "test"}


def test_deterministic_and_independent_of_row_order():
    faces = faces_frame()
    first = splits.assign_splits(faces, 0.15, 0.15, seed=42)
    again = splits.assign_splits(faces, 0.15, 0.15, seed=42)
    assert first.equals(again)
    shuffled = faces.sample(frac=1.0, random_state=3)
    assert splits.assign_splits(shuffled, 0.15, 0.15, seed=42).sort_index().equals(first)
    other_seed = splits.assign_splits(faces, 0.15, 0.15, seed=43)
    assert (other_seed != first).mean() > 0.1


def test_stratified_per_dataset_and_label():
    faces = faces_frame(n_images=1200)
    faces["split"] = splits.assign_splits(faces, 0.15, 0.15, seed=1)
    images = faces.drop_duplicates("group")
    for dataset, part in images.groupby("dataset"):
        share = part.split.value_counts(normalize=True)
        assert share["val"] == pytest.approx(0.15, abs=0.02), dataset
        assert share["test"] == pytest.approx(0.15, abs=0.02), dataset
    # each (dataset, rarest label of the image) stratum is cut exactly: round(n * fraction) images
    counts = faces.groupby(["dataset", "label"]).size()
    rarest = faces.groupby("group").apply(
        lambda g: min(g.label, key=lambda lab: counts[(g.dataset.iloc[0], lab)]), include_groups=False
    )
    images = images.assign(rarest=images.group.map(rarest))
    for (dataset, label), part in images.groupby(["dataset", "rarest"]):
        n = len(part)
        assert (part.split == "test").sum() == int(n * 0.15 + 0.5), (dataset, label)
        assert (part.split == "val").sum() == int(n * 0.15 + 0.5), (dataset, label)
    # the rare label reaches every split in roughly the target share (by image, it is the stratum)
    rare = (
        faces[faces.label == "mask_weared_incorrect"]
        .drop_duplicates("group")
        .split.value_counts(normalize=True)
    )
    assert rare["val"] == pytest.approx(0.15, abs=0.05) and rare["test"] == pytest.approx(0.15, abs=0.05)


def test_adding_a_dataset_leaves_the_others_alone():
    faces = faces_frame()
    base = splits.assign_splits(faces, 0.15, 0.15, seed=5)
    extra = pd.DataFrame(
        [{"group": f"c:{i}", "dataset": "c", "label": "without_mask", "face": 0} for i in range(50)]
    )
    grown = splits.assign_splits(pd.concat([faces, extra], ignore_index=True), 0.15, 0.15, seed=5)
    assert grown.iloc[: len(faces)].equals(base)


def test_small_strata_keep_train_first():
    faces = pd.DataFrame([{"group": "g1", "dataset": "d", "label": "with_mask"}])
    assert splits.assign_splits(faces, 0.15, 0.15, seed=0).tolist() == ["train"]
    faces = pd.DataFrame([{"group": f"g{i}", "dataset": "d", "label": "with_mask"} for i in range(3)])
    assert sorted(splits.assign_splits(faces, 0.4, 0.4, seed=0)) == ["test", "train", "val"]
    assert splits.assign_splits(faces.iloc[:0], 0.1, 0.1, seed=0).empty


def test_links_merge_groups():
    faces = faces_frame(n_images=300)
    links = [(0, len(faces) - 1), (5, 200), (200, 400)]
    split = splits.assign_splits(faces, 0.3, 0.3, seed=2, links=links)
    for i, j in links:
        assert split.iloc[i] == split.iloc[j]
    assert splits.merge_groups(["a", "b", "c", "d"], [(0, 1), (2, 1)]) == ["a", "a", "a", "d"]


def test_bad_fractions():
    with pytest.raises(ValueError, match=r"split.val \+ split.test must be < 1"):
        splits.check_fractions(0.5, 0.5)
    with pytest.raises(ValueError, match=r"split.test must be in \[0, 1\)"):
        splits.check_fractions(0.1, -0.1)


def brute_force_pairs(h: np.ndarray, d: int) -> set[tuple[int, int, int]]:
    out = set()
    for i in range(len(h)):
        for j in range(i + 1, len(h)):
            dist = bin(int(h[i]) ^ int(h[j])).count("1")
            if dist <= d:
                out.add((i, j, dist))
    return out


@pytest.mark.parametrize("max_distance", [0, 2, 4, 10, 20])
def test_near_duplicate_pairs_match_brute_force(max_distance):
    rng = np.random.default_rng(max_distance)
    base = rng.integers(0, 2**63, 150, dtype=np.uint64) * np.uint64(2) + rng.integers(
        0, 2, 150, dtype=np.uint64
    )
    # plant near-duplicates: copies with a few bits flipped, anywhere in the 64 bits
    copies = []
    for k in range(60):
        value = int(base[k % 150])
        for bit in rng.choice(64, size=rng.integers(0, 7), replace=False):
            value ^= 1 << int(bit)
        copies.append(value)
    h = np.concatenate([base, np.array(copies, dtype=np.uint64)])
    got = dedup.near_duplicate_pairs(h, max_distance)
    assert {tuple(r) for r in got.tolist()} == brute_force_pairs(h, max_distance)
    assert len(got) > 0


def test_popcount_and_phash():
    values = np.array([0, 1, 2**64 - 1, 0xF0F0], dtype=np.uint64)
    assert dedup.popcount64(values).tolist() == [0, 1, 64, 8]
    rng = np.random.default_rng(0)
    smooth = Image.fromarray(
        np.kron(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), np.ones((16, 16, 1), np.uint8))
    )
    brighter = ImageEnhance.Brightness(smooth).enhance(1.1)
    other = Image.fromarray(
        np.kron(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), np.ones((16, 16, 1), np.uint8))
    )
    a, b, c = (dedup.phash_int(i) for i in (smooth, brighter, other))
    assert 0 <= a < 2**64
    assert bin(a ^ b).count("1") <= 4 < bin(a ^ c).count("1")
