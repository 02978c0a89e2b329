"""Reading params.yaml: each stage reads only its own section."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import yaml

DEFAULT_PARAMS = Path("params.yaml")


class ParamsError(ValueError):
    pass


def load_params(path: Path = DEFAULT_PARAMS) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found (run from the repository root)")
    with open(path, encoding="utf-8") as fh:
        data = yaml.safe_load(fh) or {}
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: expected a mapping at the top level")
    return data


def section(name: str, path: Path = DEFAULT_PARAMS) -> Any:
    params = load_params(path)
    if name not in params:
        raise ParamsError(f"{path}: missing section '{name}'")
    return params[name]


def deep_merge(base: dict, override: dict | None) -> dict:
    """Return base updated recursively with override (neither is modified)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def flatten(d: dict, prefix: str = "", sep: str = ".") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists are kept as their string form."""
    out: dict[str, Any] = {}
    for key, value in d.items():
        name = f"{prefix}{sep}{key}" if prefix else str(key)
        if isinstance(value, dict):
            out.update(flatten(value, name, sep))
        else:
            out[name] = value
    return out


def check_resolved(resolved: Path, wanted: Any, params_file: Path, model: str) -> None:
    """Refuse a resolve@<model> output that no longer matches params.yaml, e.g. a stage run by hand
    after an edit. ``wanted`` is what the stage resolves from params.yaml now, compared as write_json
    stores it. A missing file passes (the stage run outside DVC)."""
    from maskpipe.io import as_written

    resolved = Path(resolved)
    if resolved.exists() and json.loads(resolved.read_text()) != as_written(wanted):
        raise ParamsError(
            f"{resolved} does not match {params_file}: run `python stages/resolve.py {model}` first "
            "(`dvc repro` does)"
        )
