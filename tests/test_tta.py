"""tta_hflip: a model's scores are the mean over the image and its mirror, wherever it predicts."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from maskpipe.training.config import ConfigError, resolve_model_config
from maskpipe.training.predict import predict_proba


class LeftHalf(nn.Module):
    """Logits from the left half of the image only: its mirror gives other logits."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.tensor(5.0))

    def forward(self, x):
        left = x[..., : x.shape[-1] // 2].mean(dim=(1, 2, 3))
        return torch.stack([left, -left, torch.zeros_like(left)], dim=1) * self.gain


def _meta(tta: bool) -> dict:
    return {"task": "multiclass", "classes": ["a", "b", "c"], "params": {"tta_hflip": tta}}


def test_scores_are_the_mean_of_the_image_and_its_mirror():
    x = torch.zeros(2, 3, 4, 4)
    x[0, :, :, :2] = 1.0  # bright left half
    x[1, :, :, 2:] = 1.0  # bright right half
    model = LeftHalf()
    plain = predict_proba(model, _meta(False), x)
    mirrored = predict_proba(model, _meta(False), x.flip(-1))
    both = predict_proba(model, _meta(True), x)
    assert not (plain == mirrored).all()
    assert both == pytest.approx((plain + mirrored) / 2)
    assert both.sum(axis=1) == pytest.approx([1.0, 1.0])
    # the two images are mirrors of each other, so with tta they score the same
    assert both[0] == pytest.approx(both[1])


def test_older_artifacts_without_the_key_predict_as_before():
    x = torch.rand(3, 3, 4, 4)
    meta = _meta(False)
    meta["params"] = {}
    assert predict_proba(LeftHalf(), meta, x) == pytest.approx(predict_proba(LeftHalf(), _meta(False), x))


def test_the_key_is_typed():
    base = {
        "arch": "small_cnn",
        "task": "binary",
        "classes": ["without_mask", "with_mask"],
        "datasets": ["mask_folders"],
        "image_size": 32,
    }
    assert resolve_model_config({"models": {"m": {**base, "tta_hflip": True}}}, "m", profile="seed").tta_hflip
    with pytest.raises(ConfigError, match="tta_hflip"):
        resolve_model_config({"models": {"m": {**base, "tta_hflip": "often"}}}, "m", profile="seed")
