"""params.yaml `crop:` and `split:` as typed sections: every key, its default and its range here.

Unknown keys are refused with the nearest valid one, and a value out of range names its key
(``params.yaml: crop.padding: expected a finite number, got inf``): the crop stage turns that
into a one-line error and exit code 2.
"""

from __future__ import annotations

from dataclasses import dataclass

from maskpipe.collectors.lfw import LFW_FRAME
from maskpipe.collectors.mafa import MafaConfig
from maskpipe.crop_geometry import DEFAULT_MAX_PIXELS, PILLOW_MAX_PIXELS, CropGeometry
from maskpipe.settings import ConfigError, Section, option


@dataclass(frozen=True)
class CropConfig(CropGeometry):
    """params crop: the geometry (padding, size, resize) plus what only the crop stage uses."""

    min_face: int = option(12, ge=1, le=4096, doc="boxes narrower or shorter than this (px) are skipped")
    max_images_per_dataset: int | None = option(None, ge=1, doc="null = all; small numbers make quick runs")
    png_compress_level: int = option(1, ge=0, le=9, doc="zlib level of the crop PNGs")
    # the same cap as predict.max_pixels: larger images are listed in skipped.csv, never decoded
    max_pixels: int = option(
        DEFAULT_MAX_PIXELS, ge=1, le=PILLOW_MAX_PIXELS, doc="larger source images are skipped"
    )
    lfw_box: tuple[float, float, float, float] = (68.0, 68.0, 182.0, 182.0)
    mafa: MafaConfig = option(MafaConfig())
    workers: int = option(1, ge=1, le=256, doc="crop processes")

    def __post_init__(self) -> None:
        x0, y0, x1, y1 = self.lfw_box
        w, h = LFW_FRAME
        if not (0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h):
            raise ConfigError(
                f"params.yaml: crop.lfw_box: expected xmin < xmax and ymin < ymax inside the "
                f"{w}x{h} LFW frame, got {list(self.lfw_box)}"
            )


@dataclass(frozen=True)
class SplitConfig(Section):
    """params split: fractions by source image, and near-duplicate grouping."""

    val: float = option(0.15, ge=0, lt=1)
    test: float = option(0.15, ge=0, lt=1)
    dedup_max_distance: int = option(
        4, ge=0, le=64, doc="perceptual-hash Hamming distance of a near-duplicate"
    )
    group_near_duplicates: bool = True

    def __post_init__(self) -> None:
        if self.val + self.test >= 1:
            raise ConfigError(
                f"params.yaml: split.val + split.test must be < 1 (train needs images), "
                f"got {self.val + self.test:g}"
            )
