"""maskpipe: a reproducible DVC + MLflow pipeline for face-mask detection."""

__version__ = "0.1.0"
