"""One label vocabulary for every dataset."""

from __future__ import annotations

import re

WITH_MASK = "with_mask"
WITHOUT_MASK = "without_mask"
INCORRECT = "mask_weared_incorrect"
LABELS = (WITH_MASK, WITHOUT_MASK, INCORRECT)
# the synthesize stage's masked faces, named like a dataset in models.<m>.datasets
SYNTHETIC = "synthetic"
# what a one-class model calls a face it does not recognise as its class (not a dataset label)
ANOMALY = "anomaly"

# Spellings seen in the public datasets (VOC names, Face Mask 12K folders, MAFA re-annotation).
_ALIASES = {
    "withmask": WITH_MASK,
    "mask": WITH_MASK,
    "masked": WITH_MASK,
    "withoutmask": WITHOUT_MASK,
    "nomask": WITHOUT_MASK,
    "unmasked": WITHOUT_MASK,
    "withoutmasks": WITHOUT_MASK,
    "maskweardincorrect": INCORRECT,
    "maskwearedincorrect": INCORRECT,
    "maskwornincorrect": INCORRECT,
    "maskwornincorrectly": INCORRECT,
    "incorrectmask": INCORRECT,
    "incorrectlymasked": INCORRECT,
    "incorrect": INCORRECT,
}


def normalize_label(name: str) -> str:
    """Map a dataset's class name (``WithMask``, ``with_mask``, ``Without Mask``...) to ours.

    Raises ValueError for names we do not know, so a new dataset cannot silently
    mislabel faces.
    """
    key = re.sub(r"[^a-z]", "", str(name).lower())
    if key in _ALIASES:
        return _ALIASES[key]
    for label in LABELS:
        if key == label.replace("_", ""):
            return label
    raise ValueError(f"unknown class name {name!r}; known: {', '.join(LABELS)}")
