"""train / val / test by source image: all faces of a photo land in one split.

- The unit is a *group*: a source image (or a person, for LFW), optionally merged
  with every group holding a near-duplicate crop, so the same face cannot sit
  on both sides of a split.
- Stratified: each group is filed under (dataset, its rarest label), where
  "rarest" is by face count within that dataset. Inside each stratum the groups
  are shuffled and cut by the val / test fractions, so every dataset and every
  label gets about the same proportions (tiny strata go to train first).
- Deterministic: the shuffle of a stratum is seeded from `seed` and the stratum's
  name, and groups are sorted before shuffling, so row order does not matter and
  adding images to one dataset does not reshuffle another.
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence

import numpy as np
import pandas as pd

SPLITS = ("train", "val", "test")


def check_fractions(val: float, test: float) -> None:
    for name, value in (("val", val), ("test", test)):
        if not 0 <= value < 1:
            raise ValueError(f"split.{name} must be in [0, 1), got {value}")
    if val + test >= 1:
        raise ValueError(f"split.val + split.test must be < 1 (train needs images), got {val + test}")


def _stable_int(text: str) -> int:
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big")


class _UnionFind:
    def __init__(self, items: Iterable[str]):
        self.parent = {item: item for item in items}

    def find(self, item: str) -> str:
        root = item
        while self.parent[root] != root:
            root = self.parent[root]
        while self.parent[item] != root:  # path compression
            self.parent[item], item = root, self.parent[item]
        return root

    def union(self, a: str, b: str) -> None:
        ra, rb = self.find(a), self.find(b)
        if ra != rb:  # the smaller name becomes the root: independent of call order
            lo, hi = sorted((ra, rb))
            self.parent[hi] = lo


def merge_groups(groups: Sequence[str], links: Iterable[tuple[int, int]]) -> list[str]:
    """Group key per row after merging the groups of every linked (row_i, row_j) pair."""
    uf = _UnionFind(sorted(set(groups)))
    for i, j in links:
        uf.union(groups[i], groups[j])
    return [uf.find(g) for g in groups]


def _cut(n: int, val: float, test: float) -> tuple[int, int]:
    """How many of n shuffled groups go to test and to val (rounded half up)."""
    n_test = math.floor(n * test + 0.5)
    n_val = math.floor(n * val + 0.5)
    if n_test + n_val >= n:  # keep at least one group for training
        excess = n_test + n_val - (n - 1)
        n_val = max(0, n_val - excess)
        n_test = max(0, min(n_test, n - 1 - n_val))
    return n_test, n_val


def assign_splits(
    faces: pd.DataFrame,
    val: float,
    test: float,
    seed: int,
    links: Iterable[tuple[int, int]] = (),
) -> pd.Series:
    """Split per face row. `faces` needs columns group, dataset, label.

    `links` are (row_i, row_j) positions whose groups must share a split (near-duplicates).
    """
    check_fractions(val, test)
    if faces.empty:
        return pd.Series([], dtype="str", index=faces.index, name="split")
    groups = merge_groups(faces["group"].astype(str).tolist(), links)
    datasets = faces["dataset"].astype(str).tolist()
    labels = faces["label"].astype(str).tolist()

    label_counts = Counter(zip(datasets, labels, strict=True))
    group_dataset: dict[str, str] = {}
    group_labels: dict[str, set[str]] = defaultdict(set)
    for g, d, lab in zip(groups, datasets, labels, strict=True):
        group_dataset[g] = min(group_dataset.get(g, d), d)
        group_labels[g].add(lab)

    strata: dict[tuple[str, str], list[str]] = defaultdict(list)
    for g in sorted(group_labels):
        d = group_dataset[g]
        rarest = min(group_labels[g], key=lambda lab: (label_counts.get((d, lab), 0), lab))
        strata[(d, rarest)].append(g)

    split_of: dict[str, str] = {}
    for (d, lab), members in sorted(strata.items()):
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, _stable_int(f"{d}|{lab}") & 0xFFFFFFFF])
        order = [members[k] for k in rng.permutation(len(members))]
        n_test, n_val = _cut(len(order), val, test)
        for k, g in enumerate(order):
            split_of[g] = "test" if k < n_test else "val" if k < n_test + n_val else "train"
    return pd.Series([split_of[g] for g in groups], index=faces.index, name="split", dtype="str")
