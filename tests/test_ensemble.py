"""ensemble: n members of one architecture, trained one after the other with seeds seed, seed+1, ...;
predictions average their probabilities, everywhere a model predicts."""

from __future__ import annotations

import pandas as pd
import pytest
import torch
from torch import nn
from training_fakes import tiny_params

from maskpipe.training.artifact import load_model
from maskpipe.training.config import ConfigError, resolve_model_config
from maskpipe.training.models import Ensemble, build_model, member_configs
from maskpipe.training.predict import predict_proba
from maskpipe.training.run import TrainPaths, train_model

QUIET = dict(progress=False, log=lambda msg: None)


class Fixed(nn.Module):
    def __init__(self, logits):
        super().__init__()
        self.logits = nn.Parameter(torch.tensor(logits))

    def forward(self, x):
        return self.logits.expand(x.shape[0], -1)


def _meta(tta: bool = False) -> dict:
    return {"task": "multiclass", "classes": ["a", "b", "c"], "params": {"tta_hflip": tta}}


def test_predictions_average_the_members_probabilities_not_their_logits():
    a, b = Fixed([4.0, 0.0, 0.0]), Fixed([0.0, 0.0, 4.0])
    x = torch.zeros(2, 3, 4, 4)
    pa, pb = predict_proba(a, _meta(), x), predict_proba(b, _meta(), x)
    both = predict_proba(Ensemble([a, b]), _meta(), x)
    assert both == pytest.approx((pa + pb) / 2)
    assert both.sum(axis=1) == pytest.approx([1.0, 1.0])
    # with the mirror as well: the mean over every member and view
    assert predict_proba(Ensemble([a, b]), _meta(tta=True), x) == pytest.approx(both)
    # forward itself (BatchNorm passes, direct calls) is the mean of the members' logits
    assert Ensemble([a, b])(x)[0].tolist() == pytest.approx([2.0, 0.0, 2.0])


def _params(ensemble: int, **tiny) -> dict:
    params = tiny_params(**tiny)
    params["models"]["mobilenet_v2_3class"]["ensemble"] = ensemble
    return params


def test_members_get_consecutive_seeds_and_member_0_is_the_single_model():
    config = resolve_model_config(_params(3), "mobilenet_v2_3class")
    members = member_configs(config)
    assert [m.seed for m in members] == [config.seed, config.seed + 1, config.seed + 2]
    assert all(m.ensemble == 1 for m in members)
    single = resolve_model_config(_params(1), "mobilenet_v2_3class")
    assert members[0] == single and member_configs(single) == [single]
    model = build_model(config, load_weights=False)
    assert isinstance(model, Ensemble) and len(model.members) == 3


def test_the_key_is_checked():
    with pytest.raises(ConfigError, match=r"models\.mobilenet_v2_3class\.ensemble"):
        resolve_model_config(_params(0), "mobilenet_v2_3class")
    params = tiny_params()
    params["models"]["cae_oneclass"]["ensemble"] = 2
    with pytest.raises(ConfigError, match=r"cae_oneclass\.ensemble: a oneclass model"):
        resolve_model_config(params, "cae_oneclass")


def test_an_ensemble_trains_its_members_saves_them_in_one_file_and_resumes_member_by_member(fake_repo):
    from maskpipe.tracker import NullTracker

    params = _params(2, epochs=2)
    name = "mobilenet_v2_3class"
    # interrupted in member 2's first epoch (epochs run on: member 1 has 1-2, member 2 has 3-4)
    with pytest.raises(KeyboardInterrupt):
        train_model(name, params, TrainPaths(), track=False, stop_after_epoch=3, **QUIET)
    model_dir = fake_repo / "data/models" / name
    first = torch.load(model_dir / "checkpoint.pt", weights_only=True)
    assert first["epoch"] == 2 and not first["complete"]  # finished, kept until the ensemble is saved
    said: list[str] = []
    tracker = NullTracker()
    summary = train_model(name, params, TrainPaths(), tracker=tracker, progress=False, log=said.append)
    assert any("checkpoint.pt: resuming after epoch 2" in s for s in said)
    assert any("checkpoint_m1.pt: resuming after epoch 1" in s for s in said)
    assert [m["seed"] for m in summary["members"]] == [params["seed"], params["seed"] + 1]
    assert summary["epochs_run"] == 4
    hist = pd.read_csv(fake_repo / "metrics/plots" / name / "history.csv")
    assert hist["epoch"].tolist() == [1, 2, 3, 4] and hist["member"].tolist() == [0, 0, 1, 1]
    logged = dict(tracker.calls).get("log_metrics") or {}
    assert {"member0/best_epoch", "member1/best_val_macro_f1"} <= set(logged)

    model, meta = load_model(model_dir / "model.pt")
    assert isinstance(model, Ensemble) and len(model.members) == 2
    assert [m["seed"] for m in meta["ensemble_members"]] == [params["seed"], params["seed"] + 1]
    for ckpt in ("checkpoint.pt", "checkpoint_m1.pt"):
        assert torch.load(model_dir / ckpt, weights_only=True)["complete"]

    # the same ensemble trained without interruption has the same weights (deterministic resume)
    for ckpt in model_dir.glob("checkpoint*.pt"):
        ckpt.unlink()
    train_model(name, params, TrainPaths(), track=False, **QUIET)
    again, _ = load_model(model_dir / "model.pt")
    for (key, w), w2 in zip(model.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(w, w2), key
    # member 0 is the model `ensemble: 1` trains
    train_model(name, _params(1, epochs=2), TrainPaths(), track=False, **QUIET)
    single, _ = load_model(model_dir / "model.pt")
    for key, w in single.state_dict().items():
        assert torch.equal(w, model.members[0].state_dict()[key]), key
