"""The error of prediction that a user can act on (a 4xx / a one-line CLI message)."""

from __future__ import annotations


class PredictError(ValueError):
    """A user-facing problem (missing model, unusable input); the message says what to do."""
