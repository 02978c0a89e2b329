"""The one training loop: train_one_epoch / evaluate / fit.

fit() adds what every model needs: early stopping on the validation loss, ReduceLROnPlateau
(`scheduler: plateau`), an atomic checkpoint after every epoch, resuming from it after an
interruption, and a clear stop when the loss stops being a finite number.

Determinism: epoch e seeds torch with (seed, e) and the loader draws its order and
augmentation from (seed, e), so a training resumed at epoch e continues exactly as an
uninterrupted one would (on CPU).
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from maskpipe.io import atomic_path
from maskpipe.training.config import MONITORS, ModelConfig
from maskpipe.training.tasks import Task, get_task

CHECKPOINT_FORMAT = "maskpipe-checkpoint/1"


class NonFiniteLossError(RuntimeError):
    """The loss became NaN or infinite; the message names model, epoch and batch."""


# ------------------------------------------------------------------------------ building blocks
def parameter_groups(model: nn.Module, config: ModelConfig) -> list[dict]:
    """Trainable parameters; with ``backbone_lr_mult`` != 1 the backbone gets lr x mult.

    The head group comes first, so the logged ``lr`` (group 0) is the head's.
    """
    trainable = [p for p in model.parameters() if p.requires_grad]
    if not trainable:
        raise ValueError(f"models.{config.name}: no trainable parameters")
    mult = config.backbone_lr_mult
    if mult == 1.0:
        return [{"params": trainable}]
    backbone = getattr(model, "backbone", None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(
            f"models.{config.name}.backbone_lr_mult: arch {config.arch!r} "
            "has no separate backbone; leave it at 1"
        )
    in_backbone = {id(p) for p in backbone.parameters()}
    head = [p for p in trainable if id(p) not in in_backbone]
    body = [p for p in trainable if id(p) in in_backbone]
    groups = [{"params": head}]
    if body:
        groups.append({"params": body, "lr": config.lr * mult})
    return groups


def make_optimizer(model: nn.Module, config: ModelConfig) -> torch.optim.Optimizer:
    trainable = parameter_groups(model, config)
    name, lr, wd = config.optimizer, config.lr, config.weight_decay
    if name == "adam":
        return torch.optim.Adam(trainable, lr=lr, weight_decay=wd)
    if name == "adamw":
        return torch.optim.AdamW(trainable, lr=lr, weight_decay=wd)
    if name == "sgd":
        return torch.optim.SGD(trainable, lr=lr, weight_decay=wd, momentum=config.momentum)
    raise ValueError(f"models.{config.name}.optimizer: unknown {name!r}")


def monitor_of(config: ModelConfig, has_val: bool = True) -> tuple[str, str]:
    """(history column watched by early stopping / checkpoint selection / plateau, "min" or "max")."""
    if not has_val:
        return "train_loss", "min"
    return config.monitor, MONITORS[config.monitor]


def make_scheduler(optimizer: torch.optim.Optimizer, config: ModelConfig, mode: str = "min"):
    if config.scheduler == "plateau":
        min_delta = config.min_delta
        # "improvement" means the same as for early stopping when min_delta is set
        threshold = dict(threshold=min_delta, threshold_mode="abs") if min_delta > 0 else {}
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer,
            mode=mode,
            factor=config.lr_factor,
            patience=config.lr_patience,
            min_lr=config.min_lr,
            **threshold,
        )
    return None


def resolve_device(choice: str = "auto") -> torch.device:
    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("train.device is cuda but no CUDA device is available (use auto or cpu)")
    return torch.device(choice)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % (2**32))
    torch.manual_seed(seed)


def current_lr(optimizer: torch.optim.Optimizer) -> float:
    return float(optimizer.param_groups[0]["lr"])


def _forward_loss(model, loss_fn, x, y, task: Task):
    out = model(x)
    return out, loss_fn(out, task.target(x, y))


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """Unweighted mean of the per-class F1 over the classes that occur in truth or prediction
    (a class absent from both says nothing about the model, so it does not count as 0)."""
    classes = np.union1d(y_true, y_pred)
    if len(classes) == 0:
        return float("nan")
    scores = []
    for c in classes:
        tp = float(np.sum((y_pred == c) & (y_true == c)))
        fp = float(np.sum((y_pred == c) & (y_true != c)))
        fn = float(np.sum((y_pred != c) & (y_true == c)))
        scores.append(2 * tp / (2 * tp + fp + fn))
    return float(np.mean(scores))


# ------------------------------------------------------------------------------ one epoch
def train_one_epoch(
    model: nn.Module,
    loader: Iterable,
    loss_fn: nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    task: str,
    epoch: int,
    model_name: str = "model",
    scaler=None,
    amp: bool = False,
    device: torch.device | str = "cpu",
    progress: bool | None = None,
) -> float:
    """One pass over ``loader``; returns the mean training loss (per sample)."""
    device = torch.device(device)
    task_ = get_task(task)
    model.train()
    total, count = 0.0, 0
    n_batches = len(loader) if hasattr(loader, "__len__") else None
    bar = tqdm(
        loader,
        total=n_batches,
        desc=f"{model_name} epoch {epoch}",
        unit="batch",
        leave=False,
        disable=None if progress is None else not progress,
    )
    for b, (x, y) in enumerate(bar, start=1):
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(
            device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"
        ):
            _, loss = _forward_loss(model, loss_fn, x, y, task_)
        if not torch.isfinite(loss.detach()):
            raise NonFiniteLossError(
                f"{model_name}: training loss is {loss.item()} at epoch {epoch}, batch {b}"
                f" (lr {current_lr(optimizer):g}); lower models.{model_name}.lr or check the input data"
            )
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        total += float(loss.detach()) * len(x)
        count += len(x)
        bar.set_postfix(loss=f"{total / count:.4f}")
    bar.close()
    if count == 0:
        raise ValueError(f"{model_name}: the training loader gave no batches")
    return total / count


@torch.no_grad()
def evaluate(
    model: nn.Module,
    loader: Iterable,
    loss_fn: nn.Module,
    *,
    task: str,
    amp: bool = False,
    device: torch.device | str = "cpu",
) -> dict[str, float]:
    """Mean loss (and accuracy and macro-F1 for classifiers) over ``loader``, model in eval mode."""
    device = torch.device(device)
    task_ = get_task(task)
    model.eval()
    total, count = 0.0, 0
    truths, preds = [], []
    for x, y in loader:
        with torch.autocast(
            device_type=device.type, dtype=torch.float16, enabled=amp and device.type == "cuda"
        ):
            out, loss = _forward_loss(model, loss_fn, x, y, task_)
        total += float(loss) * len(x)
        count += len(x)
        pred = task_.predicted(out)
        if pred is not None:
            preds.append(pred.cpu().numpy())
            truths.append(y.view(-1).cpu().numpy())
    if count == 0:
        return {"loss": float("nan")}
    result = {"loss": total / count}
    if task_.has_accuracy and preds:
        y_true, y_pred = np.concatenate(truths), np.concatenate(preds)
        result["accuracy"] = float(np.mean(y_true == y_pred))
        result["macro_f1"] = macro_f1(y_true, y_pred)
    return result


@torch.no_grad()
def recalibrate_batchnorm(model: nn.Module, loader: Iterable, device: torch.device | str = "cpu") -> None:
    """Recompute the running statistics of the trainable BatchNorm layers over ``loader``.

    A short from-scratch run (the CPU profile) moves the weights faster than BatchNorm's running
    averages follow (MobileNetV3 uses momentum 0.01), so in eval mode the network sees stale
    statistics and can answer one class for everything. One pass without gradients, with the
    exact average (momentum None), fixes that. Frozen (eval-mode) layers keep their statistics.
    """
    model.train()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    if not bns:
        return
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd):
            m.eval()
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    for x, _ in loader:
        model(x.to(device))
    for bn, momentum in zip(bns, momenta, strict=True):
        bn.momentum = momentum
    model.train()


# ------------------------------------------------------------------------------ checkpoints
def fingerprint(config: ModelConfig, *parts: Any) -> str:
    """What a checkpoint must match to be resumed: resolved config, data keys, training code."""
    h = hashlib.sha256(json.dumps(config.to_plain(), sort_keys=True, default=str).encode())
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
    code_dir = Path(__file__).parent
    for f in sorted(code_dir.glob("*.py")):
        h.update(f.name.encode() + f.read_bytes())
    return h.hexdigest()[:24]


def _rng_states() -> dict:
    np_state = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]),
        "python": list(random.getstate()[1]),
    }


def _restore_rng(states: dict | None) -> None:
    if not states:
        return
    torch.set_rng_state(states["torch"])
    np.random.set_state(("MT19937", states["numpy"].numpy().astype(np.uint32), states["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(states["python"]), None))


def save_checkpoint(path: Path, state: dict) -> None:
    with atomic_path(path, suffix=".pt") as tmp:
        torch.save(state, tmp)


def load_checkpoint(path: Path) -> dict | None:
    path = Path(path)
    if not path.is_file() or path.stat().st_size == 0:
        return None
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        return None
    return state if isinstance(state, dict) and state.get("format") == CHECKPOINT_FORMAT else None


def resume_state(path: Path, fp: str, log: Callable[[str], None] = print) -> dict | None:
    """The checkpoint to resume from, or None (with a message saying why we start fresh)."""
    state = load_checkpoint(path)
    if state is None:
        if Path(path).exists() and Path(path).stat().st_size:
            log(f"{path}: unreadable checkpoint; starting fresh")
        return None
    if state.get("complete"):
        log(f"{path}: the last training finished; starting a new one")
        return None
    if state.get("fingerprint") != fp:
        log(f"{path}: checkpoint was made with other params, data or code; starting fresh")
        return None
    log(f"{path}: resuming after epoch {state['epoch']}")
    return state


# ------------------------------------------------------------------------------ fit
@dataclass
class FitResult:
    history: list[dict[str, Any]]
    best_epoch: int
    best_metric: float
    monitor: str
    best_state: dict[str, torch.Tensor]
    last_epoch: int
    stopped_early: bool
    resumed_from: int | None = None
    seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def _plain(model: nn.Module) -> nn.Module:
    # [distributed] the model inside a DistributedDataParallel wrapper (keys without "module.")
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def _state_copy(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in _plain(model).state_dict().items()}


def fit(
    model: nn.Module,
    train_loader,
    val_loader,
    loss_fn: nn.Module,
    config: ModelConfig,
    *,
    checkpoint_path: str | Path | None = None,
    fingerprint_value: str = "",
    resume: dict | None = None,
    device: torch.device | str = "cpu",
    on_epoch: Callable[[dict[str, Any]], None] | None = None,
    checkpoint_extra: dict[str, Any] | None = None,
    stop_after_epoch: int | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = print,
) -> FitResult:
    """Train ``model`` for config.epochs epochs with early stopping on config.monitor.

    ``resume``: a checkpoint dict from resume_state(); training continues after its epoch.
    ``on_epoch(row)`` is called after each epoch with the history row (MLflow, history.csv).
    ``stop_after_epoch`` ends the run after that epoch as if interrupted (tests).
    """
    device = torch.device(device)
    name, task = config.name, config.task
    epochs, patience, seed = config.epochs, config.patience, config.seed
    min_delta = config.min_delta
    amp = config.amp and device.type == "cuda"
    model.to(device)
    optimizer = make_optimizer(model, config)
    monitor, mode = monitor_of(config, has_val=val_loader is not None)
    sign = -1.0 if mode == "max" else 1.0  # internally always minimise sign * value
    scheduler = make_scheduler(optimizer, config, mode)
    scaler = torch.amp.GradScaler("cuda") if amp else None

    history: list[dict[str, Any]] = []
    best_metric, best_epoch, bad_epochs, start = sign * math.inf, 0, 0, 1
    best_state = _state_copy(model)
    resumed_from = None
    if resume is not None:
        _plain(model).load_state_dict(resume["model"])  # [distributed] _plain
        optimizer.load_state_dict(resume["optimizer"])
        if scheduler is not None and resume.get("scheduler"):
            scheduler.load_state_dict(resume["scheduler"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        history = list(resume["history"])
        best_metric, best_epoch = float(resume["best_metric"]), int(resume["best_epoch"])
        bad_epochs = int(resume["bad_epochs"])
        best_state = resume["best_state"] if resume.get("best_state") is not None else _state_copy(model)
        _restore_rng(resume.get("rng"))
        resumed_from = int(resume["epoch"])
        start = resumed_from + 1
        if resume.get("stopped_early"):
            start = epochs + 1

    stopped_early = False
    t0 = time.perf_counter()
    epoch = start - 1
    for epoch in range(start, epochs + 1):
        t_epoch = time.perf_counter()
        torch.manual_seed(seed * 100_003 + epoch)  # dropout etc.: same stream whether resumed or not
        for loader in (train_loader, val_loader):
            if hasattr(loader, "set_epoch"):
                loader.set_epoch(epoch)
        train_loss = train_one_epoch(
            model,
            train_loader,
            loss_fn,
            optimizer,
            task=task,
            epoch=epoch,
            model_name=name,
            scaler=scaler,
            amp=amp,
            device=device,
            progress=progress,
        )
        if hasattr(train_loader, "all_reduce_mean"):  # [distributed] mean over the ranks' shards
            train_loss = train_loader.all_reduce_mean(train_loss)
        if config.bn_recalibrate:
            plain = train_loader.plain() if hasattr(train_loader, "plain") else train_loader
            recalibrate_batchnorm(_plain(model), plain, device)  # [distributed] _plain: no collectives
        val = (
            evaluate(_plain(model), val_loader, loss_fn, task=task, amp=amp, device=device)
            if val_loader
            else {}
        )
        if val and not math.isfinite(val["loss"]):
            raise NonFiniteLossError(f"{name}: validation loss is {val['loss']} after epoch {epoch}")
        row: dict[str, Any] = {"epoch": epoch, "train_loss": train_loss, "val_loss": val.get("loss")}
        if get_task(task).has_accuracy:
            row["val_accuracy"] = val.get("accuracy")
            row["val_macro_f1"] = val.get("macro_f1")
        row["lr"] = current_lr(optimizer)
        row["seconds"] = round(time.perf_counter() - t_epoch, 3)
        history.append(row)

        monitored = float(row[monitor])
        if sign * monitored < sign * best_metric - min_delta:
            best_metric, best_epoch, bad_epochs = monitored, epoch, 0
            best_state = _state_copy(model)
        else:
            bad_epochs += 1
        if scheduler is not None:
            scheduler.step(monitored)
        stopped_early = bad_epochs >= patience and epoch < epochs
        log(_epoch_line(name, row, epochs))

        if checkpoint_path is not None:
            save_checkpoint(
                Path(checkpoint_path),
                {
                    "format": CHECKPOINT_FORMAT,
                    "fingerprint": fingerprint_value,
                    "params": config.to_plain(),
                    "epoch": epoch,
                    "model": _state_copy(model),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict() if scheduler is not None else None,
                    "scaler": scaler.state_dict() if scaler is not None else None,
                    "best_metric": best_metric,
                    "best_epoch": best_epoch,
                    # the current weights when this epoch is the best (saves a copy of the model)
                    "best_state": None if best_epoch == epoch else best_state,
                    "bad_epochs": bad_epochs,
                    "stopped_early": stopped_early,
                    "history": history,
                    "rng": _rng_states(),
                    "complete": False,
                    **(checkpoint_extra or {}),
                },
            )
        if on_epoch is not None:
            on_epoch(row)
        if stopped_early:
            log(f"{name}: early stop after epoch {epoch} (no {monitor} improvement for {patience} epochs)")
            break
        if stop_after_epoch is not None and epoch >= stop_after_epoch:
            raise KeyboardInterrupt(f"stop_after_epoch={stop_after_epoch}")

    if not history:
        raise ValueError(f"{name}: nothing to train (epochs={epochs})")
    return FitResult(
        history=history,
        best_epoch=best_epoch,
        best_metric=best_metric,
        monitor=monitor,
        best_state=best_state,
        last_epoch=history[-1]["epoch"],
        stopped_early=stopped_early or bool(resume and resume.get("stopped_early")),
        resumed_from=resumed_from,
        seconds=time.perf_counter() - t0,
    )


def mark_checkpoint_complete(path: str | Path) -> None:
    """After the artifact is written: a later run starts fresh instead of resuming."""
    state = load_checkpoint(Path(path))
    if state is not None:
        state["complete"] = True
        save_checkpoint(Path(path), state)


def _epoch_line(name: str, row: dict, epochs: int) -> str:
    parts = [f"{name} epoch {row['epoch']}/{epochs}", f"train_loss {row['train_loss']:.4f}"]
    if row.get("val_loss") is not None:
        parts.append(f"val_loss {row['val_loss']:.4f}")
    if row.get("val_accuracy") is not None:
        parts.append(f"val_acc {row['val_accuracy']:.3f}")
    if row.get("val_macro_f1") is not None:
        parts.append(f"val_f1 {row['val_macro_f1']:.3f}")
    parts.append(f"lr {row['lr']:.2g}")
    parts.append(f"{row['seconds']:.1f}s")
    return " | ".join(parts)
