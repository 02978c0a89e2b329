"""MAFA label files (`LabelTrainAll.mat`, `LabelTestAll.mat`) -> one CSV row per face.

Layout (see ../shared/datasets/README.md §2c): a (1, N) MATLAB struct array, one
record per image; each record's `label` is an (n_faces, 21) train / (n_faces, 18)
test matrix. `scipy.io.loadmat` hands every record back in its own compact dtype
(int16, uint8 or float64), so everything is cast to float64 *before* any
arithmetic (uint8 + uint8 would silently wrap at 255).

What the CSV holds, per face:
- `image` (and `orig_image` for train), `face_index` (0-based within the image);
- the label columns under readable names, with two changes:
  * occluder and glasses boxes are made absolute (the .mat stores their x, y
    relative to the face box's x, y; width and height are unchanged);
  * `-1` becomes missing, but only where it is the "not labelled" sentinel:
    a box or eye point whose coordinates are *all* -1, or a -1 in a code column
    (face_type, occluder_type, ...; valid codes start at 1). A lone -1 next to
    real values is a real coordinate (occluder x offsets go down to -122, four
    test faces have a negative y) and is kept.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from maskpipe.settings import Section, option


@dataclass(frozen=True)
class ConvertMatConfig(Section):
    """params.yaml `convert_mat:`: the MAFA label files and the MATLAB variable in each."""

    train_file: str = option("LabelTrainAll.mat", doc="searched for under data/raw/mafa/")
    train_variable: str = "label_train"
    test_file: str = "LabelTestAll.mat"
    test_variable: str = "LabelTest"


class MafaFormatError(ValueError):
    """A .mat file that does not have the MAFA layout; the message names file and problem."""


@dataclass(frozen=True)
class MatLayout:
    split: str
    variable: str  # default variable name (params may override)
    name_field: str
    orig_name_field: str | None
    columns: tuple[str, ...]
    relative_boxes: tuple[str, ...]  # prefixes whose x, y are relative to the face box
    points: tuple[str, ...]  # absolute (x, y) points
    codes: tuple[str, ...]  # categorical columns; -1 = not labelled

    @property
    def id_columns(self) -> list[str]:
        cols = ["image"]
        if self.orig_name_field:
            cols.append("orig_image")
        return cols + ["face_index"]

    @property
    def csv_columns(self) -> list[str]:
        return self.id_columns + list(self.columns)


_BOX = ("x", "y", "w", "h")
_TAIL = ("occluder_type", "occluder_degree", "gender", "race", "orientation")

TRAIN = MatLayout(
    split="train",
    variable="label_train",
    name_field="imgName",
    orig_name_field="orgImgName",
    columns=(
        *(f"face_{c}" for c in _BOX),
        "eye1_x",
        "eye1_y",
        "eye2_x",
        "eye2_y",
        *(f"occluder_{c}" for c in _BOX),
        *_TAIL,
        *(f"glasses_{c}" for c in _BOX),
    ),
    relative_boxes=("occluder", "glasses"),
    points=("eye1", "eye2"),
    codes=_TAIL,
)

TEST = MatLayout(
    split="test",
    variable="LabelTest",
    name_field="name",
    orig_name_field=None,
    columns=(
        *(f"face_{c}" for c in _BOX),
        "face_type",
        *(f"occluder_{c}" for c in _BOX),
        *_TAIL,
        *(f"glasses_{c}" for c in _BOX),
    ),
    relative_boxes=("occluder", "glasses"),
    points=(),
    codes=("face_type", *_TAIL),
)

LAYOUTS = {"train": TRAIN, "test": TEST}

# MAFA test face_type codes (readme-test.txt)
FACE_TYPE_MASKED, FACE_TYPE_UNMASKED, FACE_TYPE_INVALID = 1, 2, 3


def empty_frame(layout: MatLayout) -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series([], dtype="float64") for c in layout.csv_columns}).astype(
        {"image": "str", "face_index": "Int64", **({"orig_image": "str"} if layout.orig_name_field else {})}
    )


def _text(value, path: Path, index: int, field: str) -> str:
    """A MATLAB char array as loadmat returns it (array(['x.jpg']) or a char matrix) -> str."""
    arr = np.asarray(value)
    if arr.dtype.kind not in "US" or arr.size == 0:
        raise MafaFormatError(
            f"{path}: record {index}: field '{field}' is not a file name (got {arr.dtype}, shape {arr.shape})"
        )
    flat = [str(v) for v in arr.ravel()]
    return flat[0] if len(flat) == 1 else "".join(flat)


def _load_records(path: Path, variable: str) -> np.ndarray:
    import scipy.io

    path = Path(path)
    if not path.exists():
        raise MafaFormatError(f"{path}: file not found")
    try:
        present = [name for name, _shape, _cls in scipy.io.whosmat(str(path))]
    except NotImplementedError as exc:  # MATLAB v7.3 (HDF5)
        raise MafaFormatError(
            f"{path}: MATLAB v7.3 files are not supported; re-save with -v7 ({exc})"
        ) from exc
    except Exception as exc:
        raise MafaFormatError(
            f"{path}: not a readable MATLAB .mat file ({exc.__class__.__name__}: {exc})"
        ) from exc
    if variable not in present:
        raise MafaFormatError(
            f"{path}: variable '{variable}' not found (the file holds: {', '.join(present) or 'nothing'})"
        )
    try:
        data = scipy.io.loadmat(str(path), variable_names=[variable])
    except Exception as exc:
        raise MafaFormatError(
            f"{path}: cannot read variable '{variable}' ({exc.__class__.__name__}: {exc})"
        ) from exc
    records = data[variable]
    if not isinstance(records, np.ndarray) or records.dtype.names is None:
        raise MafaFormatError(
            f"{path}: variable '{variable}' is not a struct array (got {type(records).__name__}"
            f" {getattr(records, 'dtype', '')})"
        )
    return records


def read_mat(path: str | Path, layout: MatLayout, variable: str | None = None) -> pd.DataFrame:
    """Read one MAFA label file into a DataFrame (one row per face, see module doc).

    Raises MafaFormatError naming the file and the problem for a wrong variable
    name, a missing field or a label matrix with the wrong number of columns.
    """
    path = Path(path)
    variable = variable or layout.variable
    records = _load_records(path, variable)
    fields = records.dtype.names
    required = [layout.name_field, "label"]
    missing = [f for f in required if f not in fields]
    if missing:
        raise MafaFormatError(
            f"{path}: variable '{variable}' lacks field(s) {', '.join(missing)}"
            f" (has: {', '.join(fields)}; expected the MAFA {layout.split} layout"
            f" {', '.join(([layout.orig_name_field] if layout.orig_name_field else []) + required)})"
        )
    has_orig = bool(layout.orig_name_field) and layout.orig_name_field in fields
    ncols = len(layout.columns)

    names: list[str] = []
    orig: list[str] = []
    face_index: list[np.ndarray] = []
    blocks: list[np.ndarray] = []
    for i, rec in enumerate(records.ravel()):
        name = _text(rec[layout.name_field], path, i, layout.name_field)
        label = np.asarray(rec["label"])
        if label.size == 0:  # an image without faces
            continue
        if label.ndim == 1:
            label = label.reshape(1, -1)
        if label.ndim != 2 or label.shape[1] != ncols:
            raise MafaFormatError(
                f"{path}: record {i} ({name}): label has shape {label.shape}, expected (n_faces, {ncols})"
                f" for the MAFA {layout.split} layout"
            )
        if label.dtype.kind not in "iuf":
            raise MafaFormatError(f"{path}: record {i} ({name}): label is not numeric ({label.dtype})")
        n = label.shape[0]
        blocks.append(label.astype(np.float64))  # per-record int16/uint8/float64 -> one dtype, no wrap-around
        names.extend([name] * n)
        if has_orig:
            orig.extend([_text(rec[layout.orig_name_field], path, i, layout.orig_name_field)] * n)
        face_index.append(np.arange(n))

    if not blocks:
        return empty_frame(layout)
    values = np.vstack(blocks)
    frame = pd.DataFrame(values, columns=list(layout.columns))
    _apply_missing_and_absolute(frame, layout)
    ids: dict[str, object] = {"image": names}
    if layout.orig_name_field:
        ids["orig_image"] = orig if has_orig else [""] * len(names)
    ids["face_index"] = np.concatenate(face_index)
    out = pd.concat([pd.DataFrame(ids), frame], axis=1)
    return _compact_dtypes(out, layout)


def _apply_missing_and_absolute(frame: pd.DataFrame, layout: MatLayout) -> None:
    for code in layout.codes:
        frame.loc[frame[code] == -1, code] = np.nan
    for point in layout.points:
        cols = [f"{point}_x", f"{point}_y"]
        frame.loc[(frame[cols] == -1).all(axis=1), cols] = np.nan
    for box in layout.relative_boxes:
        cols = [f"{box}_{c}" for c in _BOX]
        absent = (frame[cols] == -1).all(axis=1)
        frame.loc[absent, cols] = np.nan
        frame[f"{box}_x"] = frame[f"{box}_x"] + frame["face_x"]
        frame[f"{box}_y"] = frame[f"{box}_y"] + frame["face_y"]


def _compact_dtypes(frame: pd.DataFrame, layout: MatLayout) -> pd.DataFrame:
    """Integral columns as nullable Int64 (CSV shows `95`, not `95.0`); fractional ones stay float."""
    for col in layout.columns:
        values = frame[col]
        finite = values.dropna()
        if (finite == np.round(finite)).all():
            frame[col] = values.astype("Int64")
    frame["face_index"] = frame["face_index"].astype("Int64")
    return frame


def to_raw_labels(frame: pd.DataFrame, layout: MatLayout) -> pd.DataFrame:
    """Inverse of the conversion: relative occluder/glasses boxes, missing -> -1.

    Gives back the label matrix exactly as stored in the .mat (used by the tests to
    compare against the published CSV dump, and handy for checking a conversion).
    """
    out = frame[list(layout.columns)].astype("float64").copy()
    for box in layout.relative_boxes:
        out[f"{box}_x"] = out[f"{box}_x"] - out["face_x"]
        out[f"{box}_y"] = out[f"{box}_y"] - out["face_y"]
    return out.fillna(-1.0)


def find_label_file(root: str | Path, name: str) -> Path | None:
    """Find `name` under `root`: a relative path is tried first, else a recursive search by file name.

    Returns None when absent; raises MafaFormatError when several files match
    (set the param to a path relative to `root` to choose one).
    """
    root = Path(root)
    direct = root / name
    if direct.is_file():
        return direct
    if not root.is_dir():
        return None
    matches = sorted(p for p in root.rglob(Path(name).name) if p.is_file())
    if len(matches) > 1:
        listed = ", ".join(str(p.relative_to(root)) for p in matches)
        raise MafaFormatError(
            f"{root}: several files named {Path(name).name} ({listed}); give one as a path relative to {root}"
        )
    return matches[0] if matches else None


def convert(
    raw_dir: str | Path,
    files: dict[str, str],
    variables: dict[str, str] | None = None,
    enabled: bool = True,
) -> tuple[dict[str, pd.DataFrame], list[str]]:
    """Convert the train and test label files found under `raw_dir`.

    `files` / `variables` map "train" / "test" to a file name and variable name.
    Returns ({"train": df, "test": df}, notes). A disabled dataset or an absent
    file gives an empty frame (header only) and a note saying why.
    """
    variables = variables or {}
    frames: dict[str, pd.DataFrame] = {}
    notes: list[str] = []
    for split, layout in LAYOUTS.items():
        if not enabled:
            frames[split] = empty_frame(layout)
            notes.append(f"mafa {split}: dataset disabled (source.json enabled: false); wrote an empty CSV")
            continue
        path = find_label_file(raw_dir, files[split])
        if path is None:
            frames[split] = empty_frame(layout)
            notes.append(f"mafa {split}: {files[split]} not found under {raw_dir}; wrote an empty CSV")
            continue
        frame = read_mat(path, layout, variables.get(split))
        frames[split] = frame
        notes.append(
            f"mafa {split}: {path} -> {len(frame)} faces in {frame['image'].nunique() if len(frame) else 0} images"
        )
    return frames, notes
