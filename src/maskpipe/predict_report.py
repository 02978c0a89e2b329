"""The report of `maskpipe predict`: face dicts, per-input entries, the summary and its text lines.

A face dict (the JSON of `maskpipe predict`, `maskpipe serve` and the MLflow pyfunc model):

    {"box": [xmin, ymin, xmax, ymax],          # face box in image pixels (detector, calibrated)
     "padded_box": [...],                      # the region classified (crop stage padding)
     "detector_score": 0.998,
     "label": "with_mask", "confidence": 0.93,
     "probabilities": {"with_mask": 0.93, "without_mask": 0.05, ...}}

One-class models give ``label`` = the trained class or ``anomaly``, ``confidence`` null and
``anomaly_score`` / ``threshold`` instead. An input entry has ``source``, ``type`` (image /
video), ``faces`` (video: ``frames``), ``error`` (null, or why this file gave no result, naming
it) and ``warnings`` (video: e.g. fewer frames decoded than the header announced). Files of a
folder that are not predicted (videos, other files, links) are listed in ``skipped``.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any


def _faces_of(entry: dict[str, Any]) -> Iterable[dict[str, Any]]:
    if entry.get("type") == "video":
        for frame in entry["frames"]:
            yield from frame["faces"]
    else:
        yield from entry.get("faces") or []


def summarize(
    inputs: Sequence[dict[str, Any]], skipped: Sequence[dict[str, Any]] | None = None
) -> dict[str, Any]:
    """Counts over the inputs; with ``skipped`` (a folder's files that were not predicted) also
    the warnings and the skipped files by kind."""
    labels = Counter(face["label"] for entry in inputs for face in _faces_of(entry))
    out: dict[str, Any] = {
        "inputs": len(inputs),
        "errors": sum(1 for e in inputs if e.get("error")),
        "faces": sum(labels.values()),
        "by_label": dict(sorted(labels.items())),
    }
    if skipped is not None:
        out["warnings"] = sum(len(e.get("warnings") or []) for e in inputs)
        out["skipped"] = dict(sorted(Counter(s["kind"] for s in skipped).items()))
    return out


def format_face(face: dict[str, Any]) -> str:
    box = ",".join(str(v) for v in face["box"])
    if face.get("confidence") is None:
        return f"box=({box})  {face['label']}  error={face['anomaly_score']:.5f} (threshold {face['threshold']:.5f})"
    probs = "  ".join(f"{c}={p:.3f}" for c, p in face["probabilities"].items())
    return f"box=({box})  {face['label']} {face['confidence']:.3f}  [{probs}]"


def report_lines(report: dict[str, Any]) -> list[str]:
    """Human-readable lines: one per face, one per input without faces, errors, warnings and
    skipped files; the last line is the summary."""
    lines = []
    for entry in report["inputs"]:
        if entry.get("error"):
            lines.append(f"{entry['source']}: ERROR {entry['error']}")
        elif entry["type"] == "video":
            lines.append(
                f"{entry['source']}: {entry['frames_total']} frames, {len(entry['frames'])} sampled "
                f"(every {entry['every_n_frames']}), {entry['faces']} faces"
            )
            for frame in entry["frames"]:
                for i, face in enumerate(frame["faces"], 1):
                    lines.append(
                        f"  frame {frame['frame']} ({frame['time']:.2f}s) face {i}: {format_face(face)}"
                    )
        elif not entry["faces"]:
            lines.append(f"{entry['source']}: no faces found")
        else:
            for i, face in enumerate(entry["faces"], 1):
                lines.append(f"{entry['source']} face {i}: {format_face(face)}")
        for warning in entry.get("warnings") or []:
            lines.append(f"{entry['source']}: WARNING {warning}")
    for item in report.get("skipped") or []:
        lines.append(f"{item['source']}: skipped ({item['reason']})")
    s = report["summary"]
    by = ", ".join(f"{k} {v}" for k, v in s["by_label"].items()) or "none"
    tail = f"; {s['errors']} unreadable" if s["errors"] else ""
    if s.get("warnings"):
        tail += f"; {s['warnings']} warning(s)"
    if s.get("skipped"):
        tail += "; skipped " + ", ".join(f"{n} {kind}" for kind, n in s["skipped"].items())
    lines.append(f"{s['inputs']} input(s), {s['faces']} face(s): {by}{tail}")
    return lines
