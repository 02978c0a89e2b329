"""Where things live.

DVC runs stages from different working directories (`dvc exp run --temp` and
`--queue` run inside `.dvc/tmp/exps/...`), but always sets DVC_ROOT to the main
repository. Anything that must survive the run (MLflow store, the shared data
mirror given as a path relative to the repo) is resolved against that root.
"""

from __future__ import annotations

import os
from pathlib import Path


def workspace() -> Path:
    """The directory the stage runs in (the repo, or a temp copy of it)."""
    return Path.cwd()


def repo_root() -> Path:
    """The main repository: DVC_ROOT when DVC runs us, else the nearest folder with dvc.yaml."""
    env = os.environ.get("DVC_ROOT")
    if env:
        return Path(env).resolve()
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").exists() or (folder / ".dvc").is_dir():
            return folder
    return here


def resolve_external(path: str | os.PathLike) -> Path:
    """Resolve a path that points outside the repo (e.g. ``../shared/datasets``).

    Relative paths are taken relative to the main repo root, so they also work in
    `dvc exp run --temp/--queue`, where the cwd is a throwaway copy.
    """
    p = Path(os.path.expanduser(str(path)))
    if p.is_absolute():
        return p
    return (repo_root() / p).resolve()
