"""Evaluation: trained models scored on held-out faces and whole photos (the evaluate, evaluate_wild,
crossval and report stages).

metrics.py           classification metrics as pure functions (edge cases explicit)
bootstrap.py         95 % intervals resampled by source photo
numbers.py           how metrics are stored (significant digits)
config.py            `evaluate:` as a typed section; the part of it one model reads (resolve stage)
evaluate.py          one model: test split + extra sets -> metrics, plot data, MLflow
oneclass.py          one-class scores: reconstruction error, latent and pretrained-feature baselines
oneclass_scores.py   the names and baselines of those scores (shared with the report)
plots.py             DVC plot data and PNGs
wild.py              detector + classifier on whole photos, scored like a detector (mAP@0.5)
crossval.py          grouped k-fold cross-validation of one classifier
report.py            the cross-model report (markdown + JSON)
html_template.py     an offline page template for `dvc plots show`
"""
