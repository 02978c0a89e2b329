"""Evaluate one trained model: its test split and its extra sets -> metrics, plot data, PNGs, MLflow.

Which images (``select_samples`` with the model's own resolved params, stored in the artifact):
- ``test``: the model's ``datasets`` test split (source-image-grouped by the crop stage);
- extra sets from ``evaluate.extra_sets.<model>``: ``<set name>: [datasets]``, again the test
  split only - for the synthetic-trained model the real crops of the *train* split include the
  unmasked faces it was trained on, so only test crops are unseen.
Labels a model has no class for (``mask_weared_incorrect`` for a with/without model) are not
scored as right or wrong; they are counted (``<set>/excluded/<label>``) and what the model
calls them is reported as shares (``<set>/excluded_as/<label>/<class>``).

One-class (autoencoder, trained on ``with_mask`` only): anomaly = ``without_mask``. The
reconstruction error is labelled by the task registry at the model's own operating point
(``models.<m>.threshold_percentile`` of its training errors, stored in the artifact: the same
threshold predict, serve and the pyfunc model use). The latent Mahalanobis distance, an
evaluation-only baseline, is thresholded at the same percentile of its values on the training
images; metrics for it are prefixed ``<set>/mahalanobis/``. Two more need no training at all:
``<set>/pretrained/``, a Gaussian on ImageNet MobileNetV2 features of the lower face
(``evaluate.pretrained_*``, oneclass.PretrainedFeatures), and ``<set>/pretrained_knn/``, the distance of
the same kind of features to their k nearest masked training faces (oneclass.KnnScorer): the
baselines the autoencoder has to beat.

Every classification metric gets a 95 % bootstrap interval, ``<metric>_lo`` / ``<metric>_hi``,
resampling source photos (``source_groups``; ``evaluate.bootstrap_resamples``, 0 = none).

Outputs (``out_dir`` = metrics/eval/<model>, replaced as a whole):
    <set>/roc_<class>.csv | roc_reconstruction.csv, roc_mahalanobis.csv, roc_pretrained.csv  (DVC plots)
    <set>/confusion.csv [confusion_mahalanobis.csv, confusion_pretrained.csv]              (DVC plots)
    <set>/confusion.png, roc.png, predictions.png [score_histogram.png]    (PNGs)
    <set>/predictions.csv    one row per image: path, label, predicted, scores
    summary.json             classes, resolved params, set sizes, notes, skipped images
With ``plots_dir`` (the stage: metrics/plots/<model>), the plot files move to
``plots_dir/{roc,confusion,images}/<set>_<name>`` (``arrange_plots``).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from maskpipe.evaluation import plots
from maskpipe.evaluation.config import EvaluateConfig
from maskpipe.evaluation.metrics import (
    ClassificationResult,
    _r,
    classification_metrics,
    numeric_metrics,
    significant,
)
from maskpipe.evaluation.oneclass import (
    KnnScorer,
    MahalanobisScorer,
    anomaly_metrics,
    latent_vectors,
    percentile_threshold,
)
from maskpipe.evaluation.oneclass_scores import SCORE_AXIS
from maskpipe.imaging import ImageReadError, open_rgb
from maskpipe.io import atomic_dir, write_csv, write_json
from maskpipe.labels import LABELS, WITH_MASK, WITHOUT_MASK
from maskpipe.tracker import MlflowTracker, Tracker


class EvaluationError(ValueError):
    """Evaluation cannot run; the message names the model, file or set."""


@dataclass
class Scored:
    """Scores of the images of one set that could be read."""

    samples: pd.DataFrame  # path, label, label_idx, dataset (readable rows only)
    scores: np.ndarray  # (N, C) predict_proba output
    latents: np.ndarray | None  # (N, D) autoencoder latents, when asked for
    features: np.ndarray | None = None  # (N, F) pretrained-network features, when asked for
    skipped: list[dict] = field(default_factory=list)


# ------------------------------------------------------------------------------ scoring
def score_samples(
    model,
    meta: dict,
    samples: pd.DataFrame,
    batch_size: int,
    base: Path,
    with_latents: bool = False,
    latent_pool: int = 1,
    desc: str = "",
    features=None,
) -> Scored:
    """Run the model over ``samples`` (paths relative to ``base``); unreadable images are skipped."""
    import torch

    from maskpipe.training.predict import predict_proba
    from maskpipe.training.transforms import preprocess_for

    kept_rows: list[int] = []
    skipped: list[dict] = []
    scores: list[np.ndarray] = []
    latents: list[np.ndarray] = []
    feats: list[np.ndarray] = []
    rows = list(samples.itertuples(index=False))
    bar = tqdm(total=len(rows), desc=desc or "evaluate", unit="img", disable=None, file=sys.stderr)
    for start in range(0, len(rows), batch_size):
        images, idx = [], []
        for i, row in enumerate(rows[start : start + batch_size], start=start):
            try:
                images.append(open_rgb(base / row.path))
                idx.append(i)
            except ImageReadError as exc:
                skipped.append({"path": row.path, "reason": str(exc)})
        bar.update(len(rows[start : start + batch_size]))
        if not images:
            continue
        batch = preprocess_for(images, meta)
        scores.append(predict_proba(model, meta, batch))
        if with_latents:
            with torch.no_grad():
                latents.append(latent_vectors(model.encoder(batch), latent_pool))
        if features is not None:
            feats.append(features(images))
        kept_rows.extend(idx)
    bar.close()
    n_cols = len(meta["classes"]) if meta["task"] != "oneclass" else 1
    return Scored(
        samples=samples.iloc[kept_rows].reset_index(drop=True),
        scores=np.concatenate(scores) if scores else np.zeros((0, n_cols)),
        latents=(np.concatenate(latents) if latents else None) if with_latents else None,
        skipped=skipped,
        features=(np.concatenate(feats) if feats else None) if features is not None else None,
    )


# ------------------------------------------------------------------------------ groups
def source_groups(samples: pd.DataFrame, crops: pd.DataFrame, synth: pd.DataFrame | None) -> np.ndarray:
    """The source photo of every sample, ``<dataset>:<source_image>`` (the bootstrap's unit).

    A synthetic face belongs to the photo of the real face it was made from. A path found in
    neither index (a hand-made selection) is its own group.
    """
    of_path: dict[str, str] = {}
    if "source_image" in crops.columns:
        keys = crops["dataset"].astype(str) + ":" + crops["source_image"].astype(str)
        of_path = dict(zip(crops["crop_path"], keys, strict=True))
        if synth is not None and not synth.empty:
            of_face = dict(zip(crops["face_id"], keys, strict=True))
            of_path.update(
                {
                    p: of_face.get(f, f"synthetic:{f}")
                    for p, f in zip(synth["path"], synth["source_face_id"], strict=True)
                }
            )
    return np.array([of_path.get(p, f"path:{p}") for p in samples["path"]], dtype=object)


# ------------------------------------------------------------------------------ sets
def evaluation_sets(model_name: str, config, eval_config: EvaluateConfig) -> dict[str, list[str]]:
    """{set name: datasets}: ``test`` on the model's datasets (a ModelConfig) without its
    train_only_datasets, plus its extra sets."""
    sets = {"test": [d for d in config.datasets if d not in config.train_only_datasets]}
    extra = eval_config.extra_sets.get(model_name) or {}
    if not isinstance(extra, dict):
        raise EvaluationError(
            f"params.yaml: evaluate.extra_sets.{model_name} must map a set name to datasets"
        )
    for name, datasets in extra.items():
        if name in sets or "/" in str(name):
            raise EvaluationError(f"params.yaml: evaluate.extra_sets.{model_name}: bad set name {name!r}")
        if not isinstance(datasets, list) or not datasets:
            raise EvaluationError(
                f"params.yaml: evaluate.extra_sets.{model_name}.{name} must be a non-empty list of datasets"
            )
        sets[str(name)] = [str(d) for d in datasets]
    return sets


def unused_eval_datasets_note(model_name: str, config, sets: dict[str, list[str]]) -> list[str]:
    """A model-level ``eval_datasets`` that no extra set covers would silently do nothing: say so."""
    wanted = config.eval_datasets or []
    covered = {d for name, ds in sets.items() if name != "test" for d in ds}
    missing = [d for d in wanted if d not in covered]
    if not missing:
        return []
    return [
        f"models.{model_name}.eval_datasets lists {missing}, which no evaluation set uses; "
        f"extra sets are declared in params.yaml evaluate.extra_sets.{model_name}"
    ]


def _excluded_metrics(
    prefix: str, samples: pd.DataFrame, predicted: np.ndarray, classes: Sequence[str]
) -> tuple[dict, list[str]]:
    """Counts of labels outside the model's classes, and the share predicted as each class."""
    metrics: dict[str, Any] = {}
    notes = []
    outside = samples["label_idx"].to_numpy() < 0
    for label in sorted(set(samples.loc[outside, "label"])):
        mask = outside & (samples["label"].to_numpy() == label)
        metrics[f"{prefix}/excluded/{label}"] = int(mask.sum())
        for i, c in enumerate(classes):
            metrics[f"{prefix}/excluded_as/{label}/{c}"] = _r(float((predicted[mask] == i).mean()))
        notes.append(
            f"{prefix}: {int(mask.sum())} {label} images are outside the model's classes "
            f"{list(classes)}: not scored; {prefix}/excluded_as/{label}/<class> gives what the model called them"
        )
    return metrics, notes


# ------------------------------------------------------------------------------ writing
def _write_set_outputs(
    folder: Path,
    result: ClassificationResult,
    samples: pd.DataFrame,
    predicted: np.ndarray,
    confidence: np.ndarray,
    title: str,
    base: Path,
    grid_size: int,
    roc_names: dict[str, str] | None = None,
    confusion_name: str = "confusion",
    grid: bool = True,
    score_name: str = "p",
) -> None:
    """ROC + confusion plot data and PNGs for one scored set (only images with a class)."""
    folder.mkdir(parents=True, exist_ok=True)
    classes = result.classes
    plots.write_roc_data(result.rocs, folder, roc_names)
    actual = [classes[i] for i in samples["label_idx"]]
    pred_names = [classes[i] for i in predicted]
    plots.write_confusion_data(actual, pred_names, folder / f"{confusion_name}.csv")
    plots.confusion_png(result.confusion, classes, folder / f"{confusion_name}.png", title)
    if grid:
        correct = predicted == samples["label_idx"].to_numpy()
        picks = plots.pick_grid_samples(correct, confidence, grid_size)
        items = []
        for i in picks:
            try:
                img = open_rgb(base / samples["path"].iloc[i])
            except ImageReadError:
                continue
            items.append(
                {
                    "image": img,
                    "actual": actual[i],
                    "predicted": pred_names[i],
                    "confidence": float(confidence[i]),
                    "correct": bool(correct[i]),
                    "score_name": score_name,
                }
            )
        plots.prediction_grid_png(items, folder / "predictions.png", f"{title}: right and wrong predictions")


def prediction_frame(
    samples: pd.DataFrame, scores: np.ndarray, predicted: np.ndarray, classes: Sequence[str]
) -> pd.DataFrame:
    """One row per scored image: path, label, dataset, predicted class and p_<class> (the layout
    of a set's predictions.csv; the crossval stage writes its held-out faces the same way)."""
    frame = samples[["path", "label", "dataset"]].copy()
    frame["predicted"] = [classes[i] for i in predicted]
    for i, c in enumerate(classes):
        frame[f"p_{c}"] = significant(scores[:, i])
    return frame


def _classifier_set(
    name: str,
    scored: Scored,
    meta: dict,
    folder: Path,
    base: Path,
    grid_size: int,
    model_name: str,
    groups: np.ndarray,
    boot: dict,
) -> tuple[dict, list[str], dict]:
    classes = list(meta["classes"])
    samples, scores = scored.samples, scored.scores
    from maskpipe.training.tasks import get_task  # torch: imported when a model is scored

    task = get_task(meta["task"])
    predicted_all = task.predicted_indices(scores)
    extra_metrics, notes = _excluded_metrics(name, samples, predicted_all, classes)
    inside = samples["label_idx"].to_numpy() >= 0
    s_in, p_in = samples[inside].reset_index(drop=True), scores[inside]
    if s_in.empty:
        raise EvaluationError(f"{model_name}: set '{name}' has no images of the classes {classes}")
    result = classification_metrics(
        s_in["label_idx"].to_numpy(), p_in, classes, prefix=name, groups=groups[inside], **boot
    )
    pred = task.predicted_indices(p_in)
    _write_set_outputs(
        folder, result, s_in, pred, p_in.max(axis=1), f"{model_name} - {name}", base, grid_size
    )
    plots.roc_png(result.rocs, folder / "roc.png", f"{model_name} - {name}: ROC")
    write_csv(folder / "predictions.csv", prediction_frame(samples, scores, predicted_all, classes))
    metrics = {**result.metrics, **extra_metrics}
    return metrics, result.notes + notes, {"confusion": result.confusion.tolist(), "classes": classes}


def _oneclass_set(
    name: str,
    scored: Scored,
    meta: dict,
    folder: Path,
    base: Path,
    grid_size: int,
    model_name: str,
    thresholds: dict[str, float],
    mahalanobis: MahalanobisScorer | None,
    groups: np.ndarray,
    boot: dict,
    pretrained: dict[str, tuple[MahalanobisScorer | KnnScorer, slice]] | None = None,
) -> tuple[dict, list[str], dict]:
    """Anomaly metrics of both scores; only with_mask (normal) and without_mask (anomaly) are scored."""
    from maskpipe.training.tasks import get_task

    task = get_task(meta["task"])
    samples = scored.samples
    labels = samples["label"].to_numpy()
    scored_mask = np.isin(labels, [WITH_MASK, WITHOUT_MASK])
    metrics: dict[str, Any] = {}
    notes: list[str] = []
    score_sets = {"reconstruction": scored.scores[:, 0]}
    if mahalanobis is not None and scored.latents is not None:
        score_sets["mahalanobis"] = mahalanobis.score(scored.latents)
    if scored.features is not None:
        for kind, (scorer, columns) in (pretrained or {}).items():
            score_sets[kind] = scorer.score(scored.features[:, columns])
    for label in sorted(set(labels[~scored_mask])):
        metrics[f"{name}/excluded/{label}"] = int((labels == label).sum())
        for kind, s in score_sets.items():
            key = (
                f"{name}/excluded_mean_score/{label}"
                if kind == "reconstruction"
                else f"{name}/{kind}/excluded_mean_score/{label}"
            )
            metrics[key] = _r(float(s[labels == label].mean()))
        notes.append(
            f"{name}: {int((labels == label).sum())} {label} images are neither normal (with_mask) "
            "nor the anomaly (without_mask): left out of the scores, their mean score is reported"
        )
    if not scored_mask.any():
        raise EvaluationError(f"{model_name}: set '{name}' has no with_mask / without_mask images")
    s_in = samples[scored_mask].reset_index(drop=True)
    anomalous = s_in["label"].to_numpy() == WITHOUT_MASK
    s_in = s_in.assign(label_idx=anomalous.astype(int))  # 0 normal, 1 anomaly
    details: dict[str, Any] = {}
    all_rocs = []
    for kind, s_all in score_sets.items():
        s = s_all[scored_mask]
        prefix = name if kind == "reconstruction" else f"{name}/{kind}"
        res = anomaly_metrics(
            s,
            anomalous,
            thresholds[kind],
            prefix,
            WITH_MASK,
            WITHOUT_MASK,
            groups=groups[scored_mask],
            **boot,
        )
        metrics.update(res.metrics)
        notes.extend(res.notes)
        pred = task.predicted_indices(s[:, None], thresholds[kind])  # 1 = anomaly
        # "confidence" for the grid: how far the score is past the threshold, relative to it
        confidence = np.abs(s - thresholds[kind]) / (abs(thresholds[kind]) or 1.0)
        suffix = "" if kind == "reconstruction" else f"_{kind}"
        _write_set_outputs(
            folder,
            res,
            s_in,
            pred,
            confidence,
            f"{model_name} - {name} ({kind})",
            base,
            grid_size,
            roc_names={WITHOUT_MASK: f"roc_{kind}"},
            confusion_name=f"confusion{suffix}",
            grid=kind == "reconstruction",
            score_name="margin",
        )
        for roc in res.rocs:
            roc.positive = f"{kind}: {WITHOUT_MASK}"
            all_rocs.append(roc)
        plots.score_histogram_png(
            {WITH_MASK: s[~anomalous], WITHOUT_MASK: s[anomalous]},
            thresholds[kind],
            folder / f"score_histogram{suffix}.png",
            f"{model_name} - {name}: {kind} score by true label",
            SCORE_AXIS[kind],
        )
        details[kind] = {"confusion": res.confusion.tolist(), "threshold": thresholds[kind]}
    plots.roc_png(all_rocs, folder / "roc.png", f"{model_name} - {name}: ROC (positive = {WITHOUT_MASK})")
    frame = samples[["path", "label", "dataset"]].copy()
    for kind, s_all in score_sets.items():
        frame[f"score_{kind}"] = significant(s_all)
        frame[f"anomaly_{kind}"] = task.predicted_indices(s_all[:, None], thresholds[kind]).astype(bool)
    write_csv(folder / "predictions.csv", frame)
    details["classes"] = [WITH_MASK, WITHOUT_MASK]
    return metrics, notes, details


def _fit_pretrained_baselines(
    feats: np.ndarray,
    extractor,
    p: EvaluateConfig,
    q: float,
    model_name: str,
    thresholds: dict,
    metrics: dict,
    notes: list[str],
) -> dict[str, tuple[MahalanobisScorer | KnnScorer, slice]]:
    """The pretrained-feature scorers fitted on the (real, masked) training faces' features: kind ->
    (scorer, its columns of the features). Adds each one's threshold (the ``q``-th percentile of its
    training scores) to ``thresholds`` and its fit facts to ``metrics``. Too few training faces for
    the kNN's k: a note, and the other scores stand."""
    columns = extractor.columns(p.pretrained_size)
    gaussian = MahalanobisScorer.fit(feats[:, columns])
    fitted = {"pretrained": (gaussian, columns)}
    metrics["oneclass/pretrained_shrinkage"] = _r(gaussian.shrinkage)
    metrics["oneclass/pretrained_dim"] = int(feats[:, columns].shape[1])
    metrics["oneclass/pretrained_train_n"] = int(len(feats))
    if p.pretrained_knn:
        columns = extractor.columns(p.pretrained_knn_size)
        try:
            fitted["pretrained_knn"] = (KnnScorer.fit(feats[:, columns], p.pretrained_knn), columns)
            metrics["oneclass/pretrained_knn_k"] = p.pretrained_knn
        except ValueError as exc:
            notes.append(f"{model_name}: no kNN baseline (evaluate.pretrained_knn): {exc}")
    for kind, (scorer, cols) in fitted.items():
        thresholds[kind] = percentile_threshold(scorer.train_scores(feats[:, cols]), q)
    return fitted


# ------------------------------------------------------------------------------ orchestration
@dataclass
class EvaluationOutput:
    metrics: dict[str, Any]
    summary: dict[str, Any]


def evaluate_model(
    model_name: str,
    *,
    model_path: Path,
    crops_index: Path,
    synthetic_index: Path,
    eval_params: EvaluateConfig | Mapping[str, Any] | None,
    metrics_path: Path,
    out_dir: Path,
    base: Path = Path("."),
    mlflow_run_file: Path | None = None,
    plots_dir: Path | None = None,
    tracker: Tracker | None = None,
) -> EvaluationOutput:
    """Evaluate ``model_path`` on its sets; write ``metrics_path`` and ``out_dir``; log into the
    model's training run when ``mlflow_run_file`` is given, through ``tracker`` (default
    maskpipe.tracker.MlflowTracker, as training). ``eval_params``: params.yaml `evaluate:` (a mapping is
    checked into an EvaluateConfig). Returns the metrics and the summary.

    With ``plots_dir``, the plot files move out of ``out_dir`` into one folder per plot kind
    (see ``arrange_plots``), so that dvc.yaml declares each kind once per model."""
    import torch

    from maskpipe.training.artifact import load_model, model_config
    from maskpipe.training.data import read_crops, read_synthetic, select_samples
    from maskpipe.training.tasks import get_task

    p = (
        eval_params
        if isinstance(eval_params, EvaluateConfig)
        else EvaluateConfig.from_mapping(eval_params, "evaluate")
    )
    torch.set_num_threads(max(1, p.num_threads))
    model, meta = load_model(model_path)
    params = meta["params"]
    config = model_config(meta, model_path)
    if meta.get("model_name") not in (None, model_name):
        raise EvaluationError(f"{model_path}: holds model '{meta['model_name']}', not '{model_name}'")
    crops = read_crops(crops_index)
    synth = read_synthetic(synthetic_index)
    task = meta["task"]
    sets = evaluation_sets(model_name, config, p)
    notes_from_params = unused_eval_datasets_note(model_name, config, sets)
    if config.seed_arch:
        notes_from_params.append(
            f"{model_name}: profile {config.profile} replaces the seed architecture {config.seed_arch} "
            f"by {config.arch} (pretrained: {config.pretrained}); the seed recipe is the `seed` profile"
        )
    batch_size = p.batch_size
    oneclass = task == "oneclass"
    boot = {"n_resamples": p.bootstrap_resamples, "seed": p.bootstrap_seed}

    metrics: dict[str, Any] = {}
    notes: list[str] = list(notes_from_params)
    skipped: list[dict] = []
    set_info: dict[str, Any] = {}
    thresholds: dict[str, float] = {}
    mahalanobis = None
    pretrained: dict[str, tuple[MahalanobisScorer | KnnScorer, slice]] = {}
    extractor = None

    with atomic_dir(out_dir) as tmp_dir:
        if oneclass:
            try:  # the model's operating point, as predict / serve / pyfunc use it
                thresholds["reconstruction"] = get_task(task).threshold(meta)
            except ValueError as exc:
                raise EvaluationError(f"{model_path}: {exc}") from exc
            q = float(config.threshold_percentile)
            # the training images again: for the train_n count and the Mahalanobis baseline's fit
            train = select_samples(crops, synth, config, "train")
            if train.empty:
                raise EvaluationError(f"{model_name}: no training images to fit the one-class baselines on")
            if p.pretrained_baseline:
                from maskpipe.evaluation.oneclass import PretrainedFeatures, PretrainedFeatureSet
                from maskpipe.training.weights import PretrainedWeightsError

                try:
                    extractor = PretrainedFeatureSet(
                        PretrainedFeatures(
                            p.pretrained_layer, p.pretrained_size, p.pretrained_region, p.pretrained_power
                        ),
                        [p.pretrained_size] + ([p.pretrained_knn_size] if p.pretrained_knn else []),
                    )
                except PretrainedWeightsError as exc:  # the model's own scores are still valid
                    notes.append(f"{model_name}: no pretrained-feature baseline: {exc}")
            tr = score_samples(
                model,
                meta,
                train,
                batch_size,
                base,
                with_latents=hasattr(model, "encoder"),
                latent_pool=p.latent_pool,
                desc=f"{model_name} train scores",
                features=extractor,
            )
            skipped += tr.skipped
            metrics["oneclass/train_n"] = int(len(tr.samples))
            metrics["oneclass/threshold_percentile"] = q
            if tr.latents is not None:
                mahalanobis = MahalanobisScorer.fit(tr.latents)
                thresholds["mahalanobis"] = percentile_threshold(mahalanobis.score(tr.latents), q)
                metrics["oneclass/mahalanobis_shrinkage"] = _r(mahalanobis.shrinkage)
                metrics["oneclass/latent_dim"] = int(tr.latents.shape[1])
            else:
                notes.append(f"{model_name}: the model has no encoder; no Mahalanobis baseline")
            if tr.features is not None:
                # fitted on real faces only: the baseline needs no training, so the synthetic faces an
                # autoencoder may train on (train_only_datasets) are not part of it (val AUC 0.931 vs 0.927)
                real = ~tr.samples["dataset"].isin(config.train_only_datasets).to_numpy()
                pretrained = _fit_pretrained_baselines(
                    tr.features[real], extractor, p, q, model_name, thresholds, metrics, notes
                )

        for set_name, datasets in sets.items():
            samples = select_samples(crops, synth, config, "test", datasets=datasets, labels=list(LABELS))
            try:
                if samples.empty:
                    raise EvaluationError(
                        f"{model_name}: no test images in set '{set_name}' (datasets {datasets}); "
                        "are they enabled and cropped?"
                    )
                scored = score_samples(
                    model,
                    meta,
                    samples,
                    batch_size,
                    base,
                    with_latents=oneclass and mahalanobis is not None,
                    latent_pool=p.latent_pool,
                    desc=f"{model_name} {set_name}",
                    features=extractor if oneclass else None,
                )
                skipped += scored.skipped
                folder = tmp_dir / set_name
                groups = source_groups(scored.samples, crops, synth)
                if oneclass:
                    m, n, details = _oneclass_set(
                        set_name,
                        scored,
                        meta,
                        folder,
                        base,
                        p.grid_size,
                        model_name,
                        thresholds,
                        mahalanobis,
                        groups,
                        boot,
                        pretrained,
                    )
                else:
                    m, n, details = _classifier_set(
                        set_name, scored, meta, folder, base, p.grid_size, model_name, groups, boot
                    )
            except EvaluationError as exc:
                if set_name == "test":
                    raise
                # an extra set is secondary: a small run may have none of its images
                notes.append(f"{exc}; set '{set_name}' skipped")
                continue
            metrics.update(m)
            notes.extend(n)
            set_info[set_name] = {
                "datasets": datasets,
                "n_scored": int(m[f"{set_name}/n"]),
                "labels": {
                    str(k): int(v) for k, v in scored.samples["label"].value_counts().sort_index().items()
                },
                **details,
            }
        if skipped:
            notes.append(f"{len(skipped)} unreadable images skipped (listed in summary.json)")

        metrics = {k: metrics[k] for k in sorted(metrics)}
        summary = {
            "model": model_name,
            "arch": meta["arch"],
            "task": task,
            "classes": list(meta["classes"]),
            "image_size": meta["image_size"],
            "epoch": meta.get("epoch"),
            "params": params,
            "sets": set_info,
            "thresholds": thresholds,
            "threshold_percentile": float(config.threshold_percentile) if oneclass else None,
            "notes": notes,
            "skipped_images": skipped,
            "metrics_file": str(metrics_path),
        }
        write_json(tmp_dir / "summary.json", summary)
        if plots_dir is not None:
            arrange_plots(tmp_dir, Path(plots_dir))
    write_json(metrics_path, metrics)

    if mlflow_run_file is not None:
        log_evaluation(
            tracker or MlflowTracker(),
            Path(mlflow_run_file).parent,
            metrics,
            out_dir,
            metrics_path,
            notes,
            extra_dirs=[Path(plots_dir) / k for k in PLOT_KINDS] if plots_dir is not None else [],
        )
    return EvaluationOutput(metrics, summary)


# plot kind -> which files of a set folder it takes; each kind is one folder that dvc.yaml
# declares once per model with its own template (a ROC line, a confusion matrix, images)
PLOT_KINDS = {"roc": "roc_*.csv", "confusion": "confusion*.csv", "images": "*.png"}


def arrange_plots(eval_dir: Path, plots_dir: Path) -> dict[str, list[Path]]:
    """Move each set's plot files from ``eval_dir/<set>/`` to ``plots_dir/<kind>/<set>_<name>``:
    roc/test_with_mask.csv, confusion/test.csv, images/test_roc.png ... Each kind folder is
    replaced as a whole; tables (predictions.csv, summary.json) stay in ``eval_dir``."""
    moved: dict[str, list[Path]] = {}
    for kind, pattern in PLOT_KINDS.items():
        with atomic_dir(plots_dir / kind) as tmp:
            moved[kind] = []
            for set_dir in sorted(p for p in eval_dir.iterdir() if p.is_dir()):
                for f in sorted(set_dir.glob(pattern)):
                    # roc_with_mask -> test_with_mask, confusion_mahalanobis -> test_mahalanobis,
                    # confusion -> test, roc.png -> test_roc.png
                    stem = {
                        "roc": f.stem.removeprefix("roc_"),
                        "confusion": f.stem.removeprefix("confusion").lstrip("_"),
                    }.get(kind, f.stem)
                    target = tmp / (
                        f"{set_dir.name}_{stem}{f.suffix}" if stem else f"{set_dir.name}{f.suffix}"
                    )
                    f.replace(target)
                    moved[kind].append(plots_dir / kind / target.name)
    return moved


def log_evaluation(
    tracker: Tracker,
    model_dir: Path,
    metrics: dict,
    out_dir: Path,
    metrics_path: Path,
    notes: list[str],
    extra_dirs: Sequence[Path] = (),
) -> None:
    """Add the evaluation to the model's training run (data/models/<model>/mlflow_run.json)."""
    with tracker.resume(model_dir):
        tracker.log_metrics(numeric_metrics(metrics))
        # a null metric (undefined ROC-AUC) cannot be logged as a number: say so in a tag
        undefined = sorted(k for k, v in metrics.items() if v is None)
        tracker.set_tags(
            {
                "eval.undefined_metrics": ", ".join(undefined)[:4999] or "none",
                "eval.notes": " | ".join(notes)[:4999] or "none",
            }
        )
        tracker.log_artifacts(Path(out_dir), "evaluation")
        for folder in extra_dirs:
            tracker.log_artifacts(Path(folder), f"evaluation/{Path(folder).name}")
        tracker.log_artifact(Path(metrics_path), "evaluation")
