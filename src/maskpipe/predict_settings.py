"""params.yaml `predict:` as a typed section, and the resolved settings a Predictor runs with.

``PredictConfig`` is the section as written (every key, default and range; unknown keys are
refused with the nearest valid one). ``PredictSettings`` is what prediction uses: the detector
settings, the crop geometry read from `crop:` (it must match what the models were trained on,
so it is not repeated under `predict:`) and the predict values. A packaged pyfunc model stores
``PredictSettings.to_dict()`` and reloads it with ``from_dict``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from maskpipe.crop_geometry import DEFAULT_MAX_PIXELS, PILLOW_MAX_PIXELS, CropGeometry
from maskpipe.detect import DETECTORS, DetectorSettings
from maskpipe.settings import Section, option

GEOMETRY_KEYS = {
    "padding": "padding",
    "size": "crop_size",
    "resize": "resize",
}  # crop.<key> -> settings field
DETECTOR_KEYS = {
    "detector": "name",
    "upsample": "upsample",
    "min_face": "min_face",
    "min_score": "min_score",
    "calibrate": "calibrate",
    "upscale": "upscale",
    "score_threshold": "score_threshold",
    "threads": "threads",
    "workers": "workers",
}  # predict.<key> -> DetectorSettings field


@dataclass(frozen=True)
class PredictConfig(Section):
    """params predict: (predict.serve is read by serve.ServeSettings)."""

    ignored_keys = ("serve",)
    moved_keys = {
        "threshold_percentile": "models.<model>.threshold_percentile (the model's operating point, "
        "saved in its artifact)"
    }

    detector: str = option("retinaface", choices=DETECTORS, doc="face detector")
    upscale: float = option(2.0, ge=0.5, le=4, doc="retinaface: image enlarged by this factor first")
    score_threshold: float = option(0.5, gt=0, lt=1, doc="retinaface: keep detections scored above this")
    threads: int = option(1, ge=1, le=64, doc="retinaface: onnxruntime threads per image")
    workers: int = option(2, ge=1, le=64, doc="retinaface: images of a batch detected at once")
    upsample: int = option(1, ge=0, le=3, doc="dlib detectors: image doublings before detection")
    min_face: int = option(20, ge=8, le=4096, doc="mtcnn: smallest face side searched for (px)")
    # detectors report >= 0 (dlib is run at its own threshold 0; mtcnn gives probabilities)
    min_score: float = option(0.0, ge=0, le=10, doc="drop detections scored lower")
    calibrate: bool = True
    video_every_n_frames: int = option(10, ge=1, le=100_000)
    batch_size: int = option(
        32, ge=1, le=4096, doc="images per folder batch; face crops per classifier batch"
    )
    max_pixels: int = option(DEFAULT_MAX_PIXELS, ge=1, le=PILLOW_MAX_PIXELS, doc="larger images are refused")


def repo_params(params_path: str | os.PathLike | None = None) -> dict[str, Any]:
    """params.yaml as a dict: ``params_path``, else the workspace's, else the repo root's; {} if none."""
    from maskpipe.params import load_params
    from maskpipe.paths import repo_root

    # the workspace's params first: under `dvc exp run --temp` that is the experiment's copy
    local = Path("params.yaml")
    path = Path(params_path) if params_path else (local if local.is_file() else repo_root() / "params.yaml")
    return load_params(path) if path.is_file() else {}


@dataclass(frozen=True)
class PredictSettings:
    """What a Predictor runs with (see the module docstring)."""

    detector: DetectorSettings = field(default_factory=DetectorSettings)
    padding: float = 0.10
    crop_size: int = 256
    resize: str = "stretch"
    batch_size: int = 32
    video_every_n_frames: int = 10
    max_pixels: int = DEFAULT_MAX_PIXELS

    @classmethod
    def from_params(
        cls,
        predict_cfg: Mapping[str, Any] | None = None,
        crop_cfg: Mapping[str, Any] | None = None,
        **overrides: Any,
    ) -> PredictSettings:
        """From the `predict:` and `crop:` sections; ``overrides`` (command-line options, None = not
        given) are checked like params values. Raises settings.ConfigError naming the key."""
        given = {k: v for k, v in overrides.items() if v is not None}
        if "detector" in given:  # a command-line option: "unknown detector 'haar' (choose one of ...)"
            DetectorSettings(name=given["detector"]).validate()
        predict = {
            **(predict_cfg or {}),
            **{k: v for k, v in given.items() if k in PredictConfig.__dataclass_fields__},
        }
        cfg = PredictConfig.from_mapping(predict, "predict")
        crop = {k: v for k, v in (crop_cfg or {}).items() if k in GEOMETRY_KEYS}
        crop.update({k: given[f] for k, f in GEOMETRY_KEYS.items() if f in given})
        geometry = CropGeometry.from_mapping(crop, "crop")
        detector = DetectorSettings(**{f: getattr(cfg, k) for k, f in DETECTOR_KEYS.items()})
        detector.validate()
        return cls(
            detector=detector,
            padding=geometry.padding,
            crop_size=geometry.size,
            resize=geometry.resize,
            batch_size=cfg.batch_size,
            video_every_n_frames=cfg.video_every_n_frames,
            max_pixels=cfg.max_pixels,
        )

    @classmethod
    def from_repo(cls, params_path: str | os.PathLike | None = None, **overrides: Any) -> PredictSettings:
        """Settings from params.yaml (the repo's, when there is one), else the defaults."""
        params = repo_params(params_path)
        return cls.from_params(params.get("predict"), params.get("crop"), **overrides)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PredictSettings:
        data = dict(data)
        det = DetectorSettings(**data.pop("detector", {}))
        # settings packed with older models may carry keys that moved (threshold_percentile now
        # belongs to the model: models.<m>.threshold_percentile, stored in its artifact)
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(detector=det, **known)

    def crop_settings(self) -> CropGeometry:
        """The crop geometry (checked: e.g. an unknown resize mode would otherwise silently letterbox)."""
        return CropGeometry.from_mapping(
            {"padding": self.padding, "size": self.crop_size, "resize": self.resize}, "crop"
        )
