"""How metrics are stored: a fixed number of significant digits (shared by metrics and bootstrap)."""

from __future__ import annotations

import numpy as np

DIGITS = 6  # significant digits of stored metrics: stable diffs, no false precision


def _r(x: float | None) -> float | None:
    """A JSON-ready number: DIGITS significant digits (small MSE values keep theirs); None if undefined."""
    if x is None or not np.isfinite(x):
        return None
    return float(f"{float(x):.{DIGITS}g}")


def significant(values, digits: int = DIGITS) -> np.ndarray:
    """Array version of _r for plot data (inf stays inf)."""
    return np.array([float(f"{float(v):.{digits}g}") for v in np.asarray(values, dtype=float).ravel()])
