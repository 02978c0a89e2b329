"""params `predict:` as a typed section: unknown keys, types and ranges are refused with the key named."""

from __future__ import annotations

from dataclasses import fields

import pytest
import yaml

from maskpipe.crop_config import CropConfig, SplitConfig
from maskpipe.predict_settings import PredictConfig, PredictSettings
from maskpipe.settings import ConfigError


def test_repo_params_parse(repo):
    params = yaml.safe_load((repo / "params.yaml").read_text())
    settings = PredictSettings.from_params(params["predict"], params["crop"])
    assert (
        settings.detector.name == params["predict"]["detector"]
        and settings.crop_size == params["crop"]["size"]
    )
    CropConfig.from_mapping(params["crop"], "crop")
    SplitConfig.from_mapping(params["split"], "split")


@pytest.mark.parametrize(
    "predict, crop, message",
    [
        ({"batch_size": 0}, {}, r"predict\.batch_size: must be >= 1 and <= 4096, got 0"),
        ({"max_pixels": "abc"}, {}, r"predict\.max_pixels: expected an integer, got 'abc'"),
        (
            {"threshold_percentile": 75},
            {},
            r"predict\.threshold_percentile: moved to models\.<model>\.threshold_percentile",
        ),
        ({"video_every_n_frames": 0}, {}, r"predict\.video_every_n_frames: must be >= 1"),
        ({"min_face": 4}, {}, r"predict\.min_face: must be >= 8"),
        ({"upsample": 9}, {}, r"predict\.upsample: must be >= 0 and <= 3"),
        ({"min_score": float("nan")}, {}, r"predict\.min_score: expected a finite number"),
        ({"detector": "mtcn"}, {}, r"predict\.detector: 'mtcn' is not one of .*did you mean 'mtcnn'"),
        ({"batch_sise": 3}, {}, r"predict\.batch_sise: unknown key \(did you mean 'batch_size'\?\)"),
        ({}, {"padding": float("inf")}, r"crop\.padding: expected a finite number, got inf"),
        ({}, {"resize": "squash"}, r"crop\.resize: 'squash' is not one of stretch, letterbox"),
    ],
)
def test_bad_values_name_their_key(predict, crop, message):
    with pytest.raises(ConfigError, match=message):
        PredictSettings.from_params(predict, crop)


def test_serve_subsection_and_other_crop_keys_are_left_to_their_readers():
    settings = PredictSettings.from_params({"serve": {"port": 1}}, {"padding": 0.2, "workers": 4, "mafa": {}})
    assert settings.padding == 0.2


def test_command_line_overrides_are_checked_too():
    assert PredictSettings.from_params({}, {}, batch_size=5, detector="dlib_hog").batch_size == 5
    with pytest.raises(ConfigError, match=r"predict\.batch_size: must be >= 1"):
        PredictSettings.from_params({}, {}, batch_size=0)
    with pytest.raises(ValueError, match="unknown detector 'haar'"):
        PredictSettings.from_params({}, {}, detector="haar")


def test_every_numeric_predict_param_has_a_range():
    for f in fields(PredictConfig):
        if f.type in ("int", "float"):
            assert any(f.metadata.get(k) is not None for k in ("ge", "gt", "le", "lt")), f.name
