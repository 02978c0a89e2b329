"""The autoencoder's anomaly score over the lower half of the face (score_region: lower)."""

from __future__ import annotations

import pytest
import torch

from maskpipe.settings import ConfigError
from maskpipe.training.config import resolve_model_config
from maskpipe.training.losses import per_sample_reconstruction_error
from maskpipe.training.predict import model_scores

AE = {
    "arch": "conv_autoencoder",
    "task": "oneclass",
    "datasets": ["folders"],
    "classes": ["with_mask"],
    "image_size": 16,
}


def test_lower_region_scores_only_the_lower_half():
    x = torch.zeros(2, 3, 8, 8)
    recon = x.clone()
    recon[0, :, :4] = 1.0  # image 0: wrong only in the upper half
    recon[1, :, 4:] = 1.0  # image 1: wrong only in the lower half
    full = per_sample_reconstruction_error(recon, x)
    lower = per_sample_reconstruction_error(recon, x, "lower")
    assert full.tolist() == [0.5, 0.5]
    assert lower.tolist() == [0.0, 1.0]
    with pytest.raises(ValueError, match="score_region"):
        per_sample_reconstruction_error(recon, x, "eyes")


def test_model_scores_follow_the_artifacts_region_and_config_checks_it():
    torch.manual_seed(0)
    from maskpipe.training.models import build_model

    config = resolve_model_config({"models": {"ae": {**AE, "score_region": "lower"}}}, "ae", profile="seed")
    model = build_model(config).eval()
    x = torch.rand(3, 3, 16, 16)
    got = model_scores(model, {"task": "oneclass", "params": config.to_plain()}, x).view(-1)
    with torch.no_grad():
        expected = ((model(x) - x)[:, :, 8:] ** 2).flatten(1).mean(1)
    assert torch.allclose(got, expected)
    with pytest.raises(ConfigError, match="score_region"):
        resolve_model_config({"models": {"ae": {**AE, "score_region": "top"}}}, "ae", profile="seed")


def test_a_profile_that_swaps_the_architecture_is_recorded():
    all_params = {
        "models": {
            "b": {
                "arch": "resnet50",
                "task": "binary",
                "datasets": ["synthetic"],
                "classes": ["without_mask", "with_mask"],
                "image_size": 64,
            }
        },
        "profiles": {"cpu": {"b": {"arch": "mobilenet_v2"}}},
    }
    assert resolve_model_config(all_params, "b", profile="cpu").seed_arch == "resnet50"
    assert resolve_model_config(all_params, "b", profile="seed").seed_arch is None


def test_variance_scale_divides_the_error_by_the_inputs_own_variance():
    """score_scale: variance = 1 - R^2: a flat image reconstructed as badly as a textured one in
    absolute terms scores higher (its own variation was smaller)."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8)
    x[1] = 0.5 + 0.1 * (x[1] - 0.5)  # image 1: the same pattern at a tenth of the contrast
    recon = x + 0.05  # the same absolute error for both
    mse = per_sample_reconstruction_error(recon, x)
    scaled = per_sample_reconstruction_error(recon, x, scale="variance")
    assert torch.allclose(mse[0], mse[1])
    assert torch.allclose(scaled, mse / x.flatten(1).var(dim=1, unbiased=False))
    assert scaled[1] > 50 * scaled[0]  # 1/0.1^2 = 100 times the share of the variance
    lower = per_sample_reconstruction_error(recon, x, "lower", "variance")
    assert torch.allclose(lower, mse / x[:, :, 4:].flatten(1).var(dim=1, unbiased=False))
    with pytest.raises(ValueError, match="score_scale"):
        per_sample_reconstruction_error(recon, x, scale="std")
    with pytest.raises(ConfigError, match="score_scale"):
        resolve_model_config({"models": {"ae": {**AE, "score_scale": "std"}}}, "ae", profile="seed")


def test_input_box_is_checked():
    ok = resolve_model_config(
        {"models": {"ae": {**AE, "input_box": [0.45, 1.0, 0.15, 0.85]}}}, "ae", profile="seed"
    )
    assert ok.input_box == (0.45, 1.0, 0.15, 0.85)
    for bad in ([0.5, 0.4, 0, 1], [0, 1, 0.2, 1.2], [0, 1, 0]):
        with pytest.raises(ConfigError, match="input_box"):
            resolve_model_config({"models": {"ae": {**AE, "input_box": bad}}}, "ae", profile="seed")


def test_grid_compares_cell_means_not_pixels():
    """score_grid: n: fine texture lost alike counts for nothing; a changed colour layout counts."""
    torch.manual_seed(0)
    x = torch.rand(2, 3, 8, 8)
    checker = (torch.arange(8).view(8, 1) + torch.arange(8).view(1, 8)) % 2 * 0.2 - 0.1
    texture_lost = x.clone()
    texture_lost[0] = x[0] + checker  # zero-mean over every 2x2 cell: the cell means are unchanged
    assert per_sample_reconstruction_error(texture_lost, x)[0] > 0.009
    assert per_sample_reconstruction_error(texture_lost, x, grid=2)[0] == pytest.approx(0.0, abs=1e-10)
    shifted = x.clone()
    shifted[:, :, 4:] += 0.3  # the lower half brighter: its cell means change
    on_grid = per_sample_reconstruction_error(shifted, x, grid=2)
    assert torch.allclose(on_grid, torch.full((2,), 0.3**2 / 2), atol=1e-6)
    # the lower half only (score_region), divided by the pixels' variance (score_scale)
    lower = per_sample_reconstruction_error(shifted, x, "lower", "variance", grid=1)
    assert torch.allclose(lower, 0.3**2 / x[:, :, 4:].flatten(1).var(dim=1, unbiased=False), rtol=1e-4)
    with pytest.raises(ValueError, match="score_grid"):
        per_sample_reconstruction_error(shifted, x, grid=0)
    assert (
        resolve_model_config({"models": {"ae": {**AE, "score_grid": 2}}}, "ae", profile="seed").score_grid
        == 2
    )
    with pytest.raises(ConfigError, match="score_grid"):
        resolve_model_config({"models": {"ae": {**AE, "score_grid": 0}}}, "ae", profile="seed")
