"""train_model(): everything `stages/train.py <model>` does, as one testable function.

params -> data (tensor cache) -> model -> fit (checkpoint/resume) -> best weights ->
data/models/<model>/model.pt + metrics/plots/<model>/history.csv + MLflow run
(+ data/models/<model>/mlflow_run.json), logged through a Tracker (maskpipe.tracker): this
module imports neither mlflow nor the serving stack.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from maskpipe.io import write_csv
from maskpipe.paths import repo_root
from maskpipe.tracker import NullTracker, Tracker
from maskpipe.training import distributed, engine
from maskpipe.training.artifact import save_model
from maskpipe.training.config import ModelConfig, normalization, resolve_model_config, train_config
from maskpipe.training.data import (
    BatchLoader,
    DataError,
    TensorCache,
    class_counts,
    load_images,
    manifest,
    prepare_split,
    read_crops,
    read_synthetic,
    select_samples,
)
from maskpipe.training.losses import build_loss, per_sample_reconstruction_error
from maskpipe.training.models import Ensemble, build_model, count_parameters, member_configs
from maskpipe.training.tasks import get_task
from maskpipe.training.transforms import BatchAugmenter
from maskpipe.training.weights import describe_source

HISTORY_COLUMNS = ["epoch", "train_loss", "val_loss", "val_accuracy", "val_macro_f1", "lr", "seconds"]


@dataclass
class TrainPaths:
    crops_index: Path = Path("data/crops/index.csv")
    synth_index: Path = Path("data/synthetic/index.csv")
    models_dir: Path = Path("data/models")
    plots_dir: Path = Path("metrics/plots")
    cache_dir: Path | None = None  # default: <repo root>/<train.cache_dir>

    def model_dir(self, name: str) -> Path:
        return self.models_dir / name

    def history(self, name: str) -> Path:
        return self.plots_dir / name / "history.csv"


def _history_frame(rows: list[dict[str, Any]], task: str) -> pd.DataFrame:
    cols = [
        c for c in HISTORY_COLUMNS if get_task(task).has_accuracy or c not in ("val_accuracy", "val_macro_f1")
    ]
    if any("member" in r for r in rows):  # an ensemble: epochs run on, member after member
        cols.insert(1, "member")
    return pd.DataFrame(rows).reindex(columns=cols)


@torch.no_grad()
def reconstruction_percentiles(
    model: torch.nn.Module,
    loader: BatchLoader,
    device,
    region: str = "full",
    scale: str = "none",
    grid: int | None = None,
) -> list[float]:
    """Per-image reconstruction score (over ``region``, divided as ``scale`` says, on a ``grid`` of
    cells or per pixel), as percentiles 0..100 (index = percentile)."""
    model.eval()
    errors = [per_sample_reconstruction_error(model(x), x, region, scale, grid).cpu() for x, _ in loader]
    if not errors:
        return []
    values = torch.cat(errors).numpy()
    return [float(v) for v in np.percentile(values, np.arange(101))]


def adapt_batchnorm(model, crops, synth, config, cache, plain: BatchAugmenter, device) -> int:
    """AdaBN: recompute the trainable BatchNorm layers' statistics over the train-split images of
    ``config.bn_adapt_datasets``, every label, labels unused; returns how many images.

    A model trained on synthetic masks normalises its features with synthetic-image statistics;
    real photos shift them, and a real mask then scores too low. Real val faces, the model trained
    on synthetic masks (3 seeds): accuracy 0.935 -> 0.960 (with_mask recall 112-113 -> 117-119 of
    121), no label of a real face used.
    """
    from maskpipe.labels import LABELS

    samples = select_samples(
        crops, synth, config, "train", datasets=config.bn_adapt_datasets, labels=list(LABELS)
    )
    if samples.empty:
        raise DataError(
            f"models.{config.name}.bn_adapt_datasets: no train images in {config.bn_adapt_datasets}"
        )
    images = load_images(samples, crops, synth, "train", config.image_size, cache, config.input_box)
    loader = BatchLoader(images, config.batch_size, plain, train=False, seed=config.seed, device=device)
    engine.recalibrate_batchnorm(model, loader, device)
    model.eval()
    return len(samples)


def train_model(
    model_name: str,
    all_params: dict,
    paths: TrainPaths | None = None,
    *,
    tracker: Tracker | None = None,
    track: bool = True,
    progress: bool | None = None,
    stop_after_epoch: int | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Train one model of params.yaml `models:`; returns a summary (also given to the tracker).

    ``tracker`` defaults to MLflow (maskpipe.serving_tracker.ServingMlflowTracker: the run and the
    servable model); ``track=False`` means a NullTracker (no run, no mlflow_run.json).
    """
    paths = paths or TrainPaths()
    config = resolve_model_config(all_params, model_name)
    train_cfg = train_config(all_params)
    if tracker is None:
        if track:
            from maskpipe.serving_tracker import ServingMlflowTracker

            tracker = ServingMlflowTracker()
        else:
            tracker = NullTracker()
    threads = train_cfg.num_threads
    if threads > 0:
        torch.set_num_threads(threads)
    device = engine.resolve_device(train_cfg.device)
    seed = config.seed
    # [distributed] under torchrun (train.nproc_per_node > 1, see training/distributed.py) join the
    # process group; ranks other than 0 write nothing (no outputs, checkpoint, MLflow run or log)
    dist = distributed.setup(device, threads)
    device = dist.device
    if not dist.is_main:
        tracker, progress, log = NullTracker(), False, (lambda _message: None)

    # ---- data
    crops = read_crops(paths.crops_index)
    synth = read_synthetic(paths.synth_index)
    cache_dir = paths.cache_dir or (repo_root() / train_cfg.cache_dir)
    cache = TensorCache(cache_dir, base=Path.cwd(), workers=max(threads, 1), progress=progress)
    with dist.rank0_first():  # [distributed] one process builds the tensor cache, the others read it
        train_split = prepare_split(crops, synth, config, "train", cache)
        val_split = prepare_split(crops, synth, config, "val", cache, require=False)
    mean, std = normalization(config)
    augmenter = BatchAugmenter.from_config(config, mean, std)
    bs = config.batch_size

    def loaders(member: ModelConfig) -> tuple[Any, BatchLoader | None]:
        """Train / val loaders seeded by the member's seed (its batch order and augmentation)."""
        train_loader = dist.train_loader(  # [distributed] this rank's shard (DistributedSampler)
            BatchLoader(
                train_split.images,
                bs,
                augmenter,
                train=True,
                seed=member.seed,
                device=device,
                balanced=config.class_balance == "sampler",
            )
        )
        val_loader = (
            BatchLoader(val_split.images, bs, augmenter, train=False, seed=member.seed, device=device)
            if len(val_split.samples)
            else None
        )
        return train_loader, val_loader

    log(
        f"{model_name}: profile {config.profile}, device {device}, "
        f"train {class_counts(train_split.samples)}, val {class_counts(val_split.samples)}"
    )
    if not len(val_split.samples):
        log(f"{model_name}: no validation images; early stopping watches the training loss")

    # ---- model: one network, or the members of an ensemble (seeds seed, seed+1, ...), each with
    # its own checkpoint; member 0 is exactly the network `ensemble: 1` trains
    members = member_configs(config)
    nets = []
    for member in members:
        engine.seed_everything(member.seed)
        nets.append(build_model(member))
    counts = np.bincount(train_split.images.labels, minlength=max(len(config.classes), 1))
    loss_fn = build_loss(config, class_counts=counts)
    trainable, total = (sum(column) for column in zip(*map(count_parameters, nets), strict=True))
    fps = [
        engine.fingerprint(
            member,
            train_split.images.keys,
            manifest(train_split.samples),
            val_split.images.keys,
            manifest(val_split.samples),
        )
        for member in members
    ]
    model_dir = paths.model_dir(model_name)
    model_dir.mkdir(parents=True, exist_ok=True)
    ckpts = [model_dir / ("checkpoint.pt" if i == 0 else f"checkpoint_m{i}.pt") for i in range(len(members))]
    resumes = [engine.resume_state(ckpt, fp, log=log) for ckpt, fp in zip(ckpts, fps, strict=True)]
    resume = next((r for r in resumes if r), None)  # the MLflow run to continue
    history_path = paths.history(model_name)
    history_rows: list[dict[str, Any]] = []

    summary: dict[str, Any] = {
        "model": model_name,
        "profile": config.profile,
        "device": str(device),
        "n_train": len(train_split.samples),
        "n_val": len(val_split.samples),
        "trainable_parameters": trainable,
        "parameters": total,
        "weights_source": describe_source(config.arch, config.pretrained),
    }

    def write_history() -> None:
        write_csv(history_path, _history_frame(history_rows, config.task))

    def body(run_id: str | None) -> None:
        tracker.set_tags(
            {
                "maskpipe.profile": config.profile,
                "maskpipe.arch": config.arch,
                "maskpipe.task": config.task,
                "maskpipe.weights": summary["weights_source"],
                "maskpipe.device": str(device),
            }
        )
        tracker.log_params(
            {
                "data.n_train": summary["n_train"],
                "data.n_val": summary["n_val"],
                "model.trainable_parameters": trainable,
            }
        )
        results: list[engine.FitResult] = []
        offset = 0  # epochs of the members before: an ensemble's history runs on, member after member
        for i, (member, net, ckpt, fp, member_resume) in enumerate(
            zip(members, nets, ckpts, fps, resumes, strict=True)
        ):
            if len(members) > 1:
                log(f"{model_name}: member {i + 1} of {len(members)} (seed {member.seed})")

            def as_row(row: dict[str, Any], i: int = i, offset: int = offset) -> dict[str, Any]:
                if len(members) == 1:
                    return row
                return {**row, "epoch": offset + int(row["epoch"]), "member": i}

            earlier = [as_row(r) for r in (member_resume or {}).get("history", [])]
            history_rows.extend(earlier)
            if run_id is not None and member_resume and member_resume.get("mlflow_run_id") != run_id:
                for row in earlier:  # a new run for a resumed training: replay earlier epochs
                    tracker.log_epoch(row, step=int(row["epoch"]))

            def on_epoch(row: dict[str, Any], as_row: Callable = as_row) -> None:
                history_rows.append(as_row(row))
                write_history()
                tracker.log_epoch(history_rows[-1], step=int(history_rows[-1]["epoch"]))

            train_loader, val_loader = loaders(member)
            result = engine.fit(
                dist.wrap(net, device),
                train_loader,
                val_loader,
                loss_fn,
                member,  # [distributed] DDP
                checkpoint_path=ckpt if dist.is_main else None,
                fingerprint_value=fp,
                resume=member_resume,
                device=device,
                on_epoch=on_epoch if dist.is_main else None,
                checkpoint_extra={"mlflow_run_id": run_id},
                stop_after_epoch=None if stop_after_epoch is None else stop_after_epoch - offset,
                progress=progress,
                log=log,
            )
            net.load_state_dict(result.best_state)
            results.append(result)
            offset += result.last_epoch
        if not dist.is_main:  # [distributed]
            return
        write_history()
        model = nets[0] if len(nets) == 1 else Ensemble(nets)
        model.to(device)
        result = results[0]

        extra: dict[str, Any] = {
            "weights_source": summary["weights_source"],
            "history": [dict(r) for r in history_rows],
        }
        plain = BatchAugmenter.normalize_only(mean, std)  # evaluation-style passes over training images
        if config.bn_adapt_datasets:
            n = adapt_batchnorm(model, crops, synth, config, cache, plain, device)
            extra["bn_adapted"] = {"datasets": list(config.bn_adapt_datasets), "images": n}
            summary["bn_adapted_images"] = n
            log(f"{model_name}: BatchNorm statistics re-estimated on {n} unlabelled train images")
        if config.task == "oneclass":
            for key, split in (("error_percentiles", train_split), ("val_error_percentiles", val_split)):
                if len(split.samples):
                    loader = BatchLoader(split.images, bs, plain, train=False, seed=seed, device=device)
                    extra[key] = reconstruction_percentiles(
                        model, loader, device, config.score_region, config.score_scale, config.score_grid
                    )
        if len(results) > 1:
            extra["ensemble_members"] = [
                {
                    "seed": m.seed,
                    "best_epoch": r.best_epoch,
                    "epochs_run": r.last_epoch,
                    r.monitor: r.best_metric,
                }
                for m, r in zip(members, results, strict=True)
            ]
            summary["members"] = extra["ensemble_members"]
        # member 0's best epoch (an ensemble's members: extra["ensemble_members"])
        best_row = next((r for r in history_rows if r["epoch"] == result.best_epoch), history_rows[-1])
        save_model(
            model_dir / "model.pt",
            model,
            config,
            mean=mean,
            std=std,
            epoch=result.best_epoch,
            best_metric=result.best_metric,
            best_metric_name=result.monitor,
            extra=extra,
        )
        summary.update(
            {
                "best_epoch": result.best_epoch,
                "epochs_run": sum(r.last_epoch for r in results),
                "stopped_early": result.stopped_early,
                "resumed_from": result.resumed_from,
                "best_val_loss": best_row.get("val_loss"),
                "best_val_accuracy": best_row.get("val_accuracy"),
                "best_val_macro_f1": best_row.get("val_macro_f1"),
                "train_seconds": round(sum(float(r.get("seconds") or 0) for r in history_rows), 2),
            }
        )
        final = {"best/epoch": result.best_epoch, "train/seconds": summary["train_seconds"]}
        for key in ("best_val_loss", "best_val_accuracy", "best_val_macro_f1"):
            value = summary.get(key)
            if value is not None and math.isfinite(float(value)):
                final[key.replace("best_val_", "best/val_")] = float(value)
        for i, r in enumerate(results if len(results) > 1 else []):
            final[f"member{i}/best_epoch"] = r.best_epoch
            final[f"member{i}/best_{r.monitor}"] = float(r.best_metric)
        if extra.get("error_percentiles"):
            final["train/error_p75"] = extra["error_percentiles"][75]
            final["train/error_p95"] = extra["error_percentiles"][95]
        tracker.log_metrics(final)
        tracker.log_artifact(history_path, artifact_path="history")
        tracker.log_dict(config.to_plain(), "params/params.resolved.yaml")
        tracker.log_model(model_dir / "model.pt", model_name)
        tracker.write_run_file(model_dir)
        if run_id is not None:
            summary["mlflow_run_id"] = run_id

    extra_tags = {
        "maskpipe.resumed": str(bool(resume)).lower(),
        "maskpipe.processes": str(dist.world_size),
    }  # [distributed]
    with tracker.run(
        model_name,
        config.to_plain(),
        run_id=resume.get("mlflow_run_id") if resume else None,
        extra_tags=extra_tags,
    ) as run_id:
        body(run_id)
    dist.close()  # [distributed]
    if not dist.is_main:
        return summary
    for ckpt in ckpts:  # not before: an interrupted ensemble keeps its finished members
        engine.mark_checkpoint_complete(ckpt)
    of = f"of {summary['epochs_run']}"
    if len(members) > 1:
        of = f"of member 1 ({summary['epochs_run']} epochs over {len(members)} members)"
    log(
        f"{model_name}: best epoch {summary['best_epoch']} {of}, "
        f"val_loss {summary['best_val_loss']}, val_accuracy {summary['best_val_accuracy']}, "
        f"val_macro_f1 {summary.get('best_val_macro_f1')}, "
        f"{summary['train_seconds']} s"
    )
    return summary
