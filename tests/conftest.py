import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("MASKPIPE_SHARED", REPO.parent / "shared" / "datasets")).resolve()

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def shared() -> Path:
    """../shared/datasets (the real-data mirror); tests using it skip cleanly when absent."""
    if not (SHARED / "README.md").exists():
        pytest.skip(f"real-data mirror not found at {SHARED}")
    return SHARED
