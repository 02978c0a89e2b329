"""Pixels in: the same resize for the tensor cache, training and inference; augmentation on tensors.

- ``to_uint8_chw(img, size)``: PIL image -> uint8 (3, size, size). The tensor cache is built with
  it and ``preprocess`` (inference) uses it too, so a model sees identical pixels in both.
- ``preprocess(images, image_size, mean, std, box)``: list of PIL images -> normalised float NCHW;
  ``preprocess_for(images, meta)`` takes those from a model artifact (``input_box`` included).
- ``BatchAugmenter``: random flip / rotation / scale (one affine grid per batch) and
  brightness / contrast, vectorised over a uint8 batch; random numbers come from a
  ``torch.Generator`` so a seed fixes them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from maskpipe.imaging import to_rgb

if TYPE_CHECKING:
    from maskpipe.training.config import ModelConfig


Box = tuple[float, float, float, float]


def box_bounds(box: Sequence[float], height: int, width: int) -> tuple[int, int, int, int]:
    """(top, bottom, left, right) fractions -> pixel rows / columns [top, bottom) x [left, right),
    at least one pixel each way (an image's input_box, a feature map's region)."""
    top, bottom, left, right = (float(v) for v in box)
    y0, x0 = min(int(round(top * height)), height - 1), min(int(round(left * width)), width - 1)
    return y0, max(y0 + 1, int(round(bottom * height))), x0, max(x0 + 1, int(round(right * width)))


def cut_box(img: Image.Image, box: Sequence[float] | None) -> Image.Image:
    """The part of ``img`` inside ``box`` = (top, bottom, left, right) as fractions of its height
    and width (models.<m>.input_box); None = the whole image."""
    if box is None:
        return img
    y0, y1, x0, x1 = box_bounds(box, img.height, img.width)
    return img.crop((x0, y0, x1, y1))


def to_uint8_chw(img: Image.Image, size: int, box: Sequence[float] | None = None) -> np.ndarray:
    """RGB, cut to ``box`` (see cut_box), resized to size x size (bilinear, antialiased when
    shrinking), as uint8 CHW."""
    img = cut_box(to_rgb(img), box)
    if img.size != (size, size):
        img = img.resize((size, size), Image.BILINEAR)
    return np.ascontiguousarray(np.asarray(img, dtype=np.uint8).transpose(2, 0, 1))


def normalize(batch: torch.Tensor, mean: Sequence[float], std: Sequence[float]) -> torch.Tensor:
    """uint8 or [0,1] float NCHW -> (x - mean) / std as float32."""
    if batch.dtype == torch.uint8:
        batch = batch.float().div_(255.0)
    m = torch.as_tensor(mean, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    s = torch.as_tensor(std, dtype=batch.dtype, device=batch.device).view(1, -1, 1, 1)
    return (batch - m) / s


def preprocess(
    images: Sequence[Image.Image],
    image_size: int,
    mean: Sequence[float],
    std: Sequence[float],
    box: Sequence[float] | None = None,
) -> torch.Tensor:
    """List of PIL images -> normalised float NCHW (for a model artifact: ``preprocess_for``)."""
    if len(images) == 0:
        return torch.empty(0, 3, image_size, image_size)
    arr = np.stack([to_uint8_chw(im, image_size, box) for im in images])
    return normalize(torch.from_numpy(arr), mean, std)


def preprocess_for(images: Sequence[Image.Image], meta: dict) -> torch.Tensor:
    """The input a model artifact was trained on: its image_size, mean, std and input_box."""
    return preprocess(images, int(meta["image_size"]), meta["mean"], meta["std"], meta.get("input_box"))


class BatchAugmenter:
    """Training augmentation applied to a whole uint8 batch at once.

    ``augment`` items: hflip, rotation (+-rotation_degrees), scale (zoom in scale_range),
    brightness_contrast (factors 1 +- brightness / contrast), downscale (half the images, drawn
    per image, shrunk to a side fraction in downscale_range and enlarged back: the blur of a
    small face in a crowd photo, for every class alike so blur cannot give a label away).
    Geometry is one affine ``grid_sample`` per batch (border padding), not a per-image PIL round trip.
    """

    def __init__(
        self,
        augment: Sequence[str],
        mean: Sequence[float],
        std: Sequence[float],
        *,
        rotation_degrees: float,
        scale_range: Sequence[float],
        brightness: float,
        contrast: float,
        downscale_range: Sequence[float],
    ):
        self.augment = set(augment or [])
        self.mean, self.std = list(mean), list(std)
        self.rotation = float(rotation_degrees)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.brightness, self.contrast = float(brightness), float(contrast)
        self.downscale_range = (float(downscale_range[0]), float(downscale_range[1]))

    @classmethod
    def from_config(cls, config: ModelConfig, mean, std) -> BatchAugmenter:
        """The training augmentation of a model (its `augment` list and magnitudes)."""
        return cls(
            config.augment,
            mean,
            std,
            rotation_degrees=config.rotation_degrees,
            scale_range=config.scale_range,
            brightness=config.brightness,
            contrast=config.contrast,
            downscale_range=config.downscale_range,
        )

    @classmethod
    def normalize_only(cls, mean, std) -> BatchAugmenter:
        """No augmentation: uint8 -> normalised float (evaluation-style passes over training images)."""
        return cls(
            [],
            mean,
            std,
            rotation_degrees=0.0,
            scale_range=(1.0, 1.0),
            brightness=0.0,
            contrast=0.0,
            downscale_range=(1.0, 1.0),
        )

    def __call__(
        self, batch: torch.Tensor, generator: torch.Generator | None = None, train: bool = True
    ) -> torch.Tensor:
        x = batch.float().div_(255.0) if batch.dtype == torch.uint8 else batch.float()
        if train and self.augment:
            x = self._augment(x, generator)
        return normalize(x, self.mean, self.std)

    def _rand(self, n: int, generator, low: float, high: float) -> torch.Tensor:
        return torch.rand(n, generator=generator) * (high - low) + low

    def _augment(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        n = x.shape[0]
        flip = (
            (torch.rand(n, generator=g) < 0.5)
            if "hflip" in self.augment
            else torch.zeros(n, dtype=torch.bool)
        )
        geometric = {"rotation", "scale"} & self.augment
        if geometric:
            angle = (
                self._rand(n, g, -self.rotation, self.rotation) * math.pi / 180.0
                if "rotation" in self.augment
                else torch.zeros(n)
            )
            zoom = self._rand(n, g, *self.scale_range) if "scale" in self.augment else torch.ones(n)
            sx = torch.where(flip, -1.0, 1.0) / zoom  # sampling grid: zoom in = smaller grid
            sy = 1.0 / zoom
            cos, sin = torch.cos(angle), torch.sin(angle)
            theta = torch.zeros(n, 2, 3)
            theta[:, 0, 0] = cos * sx
            theta[:, 0, 1] = -sin * sy
            theta[:, 1, 0] = sin * sx
            theta[:, 1, 1] = cos * sy
            grid = F.affine_grid(theta.to(x.device), list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
        elif flip.any():
            idx = flip.nonzero().squeeze(1).to(x.device)
            x[idx] = x[idx].flip(-1)
        if "brightness_contrast" in self.augment:
            b = self._rand(n, g, 1 - self.brightness, 1 + self.brightness).view(n, 1, 1, 1).to(x.device)
            c = self._rand(n, g, 1 - self.contrast, 1 + self.contrast).view(n, 1, 1, 1).to(x.device)
            x = x * b
            gray = x.mean(dim=(1, 2, 3), keepdim=True)
            x = ((x - gray) * c + gray).clamp_(0.0, 1.0)
        if "downscale" in self.augment:
            x = self._downscale(x, g)
        return x

    def _downscale(self, x: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        n, side = x.shape[0], x.shape[-1]
        pick = torch.rand(n, generator=g) < 0.5
        fraction = self._rand(n, g, *self.downscale_range)
        out = x.clone()
        for i in pick.nonzero().flatten().tolist():
            small = max(4, int(round(side * float(fraction[i]))))
            low = F.interpolate(x[i : i + 1], size=(small, small), mode="area")
            out[i : i + 1] = F.interpolate(low, size=(side, side), mode="bilinear", align_corners=False)
        return out.clamp_(0.0, 1.0)
