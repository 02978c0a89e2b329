"""The column lists of the CSV files stages hand to each other, each declared once.

data/crops/index.csv is written by the crop stage and read by synthesize, training and
evaluation; data/synthetic/index.csv is written by synthesize and read by training. A reader
imports the list it checks from here, so a renamed column cannot drift between copies.
"""

from __future__ import annotations

# --------------------------------------------------------------------------- data/crops/
CROP_BOX_COLUMNS = ("box_xmin", "box_ymin", "box_xmax", "box_ymax")  # the face box, source image pixels
CROP_PAD_COLUMNS = ("pad_xmin", "pad_ymin", "pad_xmax", "pad_ymax")  # the padded, clipped region cropped
CROP_INDEX_COLUMNS = (
    "face_id", "crop_path", "dataset", "source_image", "label",
    *CROP_BOX_COLUMNS, *CROP_PAD_COLUMNS,
    "split",
)  # fmt: skip
CROP_SKIP_COLUMNS = ("source", "dataset", "box", "reason", "detail")
CROP_DUPLICATE_COLUMNS = (
    "face_id_a", "face_id_b", "distance", "split_a", "split_b", "cross_split",
    "dataset_a", "dataset_b", "crop_path_a", "crop_path_b",
)  # fmt: skip

# --------------------------------------------------------------------------- data/synthetic/
SYNTH_INDEX_COLUMNS = (
    "synth_id", "path", "mask_path", "source_face_id", "source_crop", "source_dataset", "label",
    "mask_type", "color", "texture", "tilt", "landmark_method", "wear", "split", "variant",
)  # fmt: skip
SYNTH_SKIP_COLUMNS = (
    "source_face_id", "source_crop", "source_dataset", "split", "landmark_method", "reason_code", "reason",
)  # fmt: skip
