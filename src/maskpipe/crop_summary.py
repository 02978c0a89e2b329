"""The crop stage's summary: deterministic counts for metrics/data.json and a table for the log."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pandas as pd

from maskpipe import splits
from maskpipe.labels import LABELS


def summarize(
    index: pd.DataFrame, skipped: pd.DataFrame, duplicates: pd.DataFrame, max_distance: int
) -> dict[str, Any]:
    """Deterministic counts for metrics/data.json (no timings: `dvc metrics diff` shows data changes only)."""
    counts: dict[str, Any] = {}
    for dataset, part in index.groupby("dataset", sort=True):
        labels = {}
        for label, lpart in part.groupby("label", sort=True):
            by_split = {s: int((lpart.split == s).sum()) for s in splits.SPLITS}
            labels[label] = {**by_split, "total": int(len(lpart))}
        counts[dataset] = {
            "faces": int(len(part)),
            "images": int(part.source_image.nunique()),
            "labels": labels,
        }
    by_split = {
        s: {
            "faces": int((index.split == s).sum()),
            **{lab: int(((index.split == s) & (index.label == lab)).sum()) for lab in LABELS},
        }
        for s in splits.SPLITS
    }
    cross = int(duplicates["cross_split"].sum()) if len(duplicates) else 0
    return {
        "faces": int(len(index)),
        "images": int(index[["dataset", "source_image"]].drop_duplicates().shape[0]) if len(index) else 0,
        "datasets": counts,
        "splits": by_split,
        "skipped": {
            "total": int(len(skipped)),
            "by_reason": {k: int(v) for k, v in sorted(Counter(skipped.reason).items())},
            "by_dataset": {
                d: {k: int(v) for k, v in sorted(Counter(part.reason).items())}
                for d, part in skipped.groupby("dataset", sort=True)
            },
        },
        "near_duplicates": {
            "max_distance": int(max_distance),
            "pairs": int(len(duplicates)),
            "cross_split_pairs": cross,
        },
    }


def format_summary(summary: dict[str, Any]) -> str:
    """A plain-text table for the stage log."""
    head = f"{'dataset':<28}{'label':<24}{'train':>7}{'val':>7}{'test':>7}{'total':>8}"
    lines = [head, "-" * len(head)]
    for dataset, info in summary["datasets"].items():
        for label, c in info["labels"].items():
            lines.append(f"{dataset:<28}{label:<24}{c['train']:>7}{c['val']:>7}{c['test']:>7}{c['total']:>8}")
    s = summary["splits"]
    lines.append("-" * len(head))
    lines.append(
        f"{'all':<28}{'':<24}{s['train']['faces']:>7}{s['val']['faces']:>7}{s['test']['faces']:>7}{summary['faces']:>8}"
    )
    lines.append(f"faces from {summary['images']} source images")
    skipped = summary["skipped"]
    if skipped["total"]:
        lines.append(
            f"skipped {skipped['total']}: " + ", ".join(f"{k} {v}" for k, v in skipped["by_reason"].items())
        )
    else:
        lines.append("skipped 0")
    nd = summary["near_duplicates"]
    lines.append(
        f"near-duplicate crop pairs (phash distance <= {nd['max_distance']}): {nd['pairs']},"
        f" across splits: {nd['cross_split_pairs']}"
    )
    return "\n".join(lines)
