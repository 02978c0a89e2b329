"""Mean face shapes are data (synth/mean_shapes.json) fitted by scripts/fit_mean_shape.py; the
synth package has no import circle through them."""

from __future__ import annotations

import ast
import importlib.util
import json
from pathlib import Path

import numpy as np

from maskpipe.synth import mean_shape

REPO = Path(__file__).resolve().parents[1]


def load_script():
    spec = importlib.util.spec_from_file_location("fit_mean_shape", REPO / "scripts" / "fit_mean_shape.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def maskpipe_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("maskpipe"):
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("maskpipe")}
    return found


def test_mean_shape_imports_nothing_of_maskpipe():
    assert maskpipe_imports(Path(mean_shape.__file__)) == set()  # landmarks -> mean_shape, never back


def test_shipped_shapes():
    shapes = mean_shape.mean_shapes()
    assert {mean_shape.DEFAULT, mean_shape.DETECTOR_BOX} <= set(shapes)
    assert all(s.shape == (68, 2) for s in shapes.values())
    assert np.array_equal(mean_shape.mean_shape("no_such_dataset"), shapes[mean_shape.DEFAULT])
    # the jaw runs left to right, the chin (point 8) is the lowest jaw point
    default = shapes[mean_shape.DEFAULT]
    assert np.all(np.diff(default[:17, 0]) > 0) and default[:17, 1].argmax() == 8


def test_fit_and_write_round_trip(tmp_path):
    script = load_script()
    rng = np.random.default_rng(0)
    base = rng.uniform(0, 1, (68, 2))
    boxes = [(10.0, 20.0, 110.0, 220.0), (0.0, 0.0, 50.0, 50.0)]
    samples = []
    for i in range(25):
        x0, y0, x1, y1 = boxes[i % 2]
        pts = np.column_stack([x0 + base[:, 0] * (x1 - x0), y0 + base[:, 1] * (y1 - y0)])
        samples.append((pts, boxes[i % 2]))
    shapes, counts = script.fit_from_samples({"big": samples, "small": samples[:5]})
    assert set(shapes) == {"default", "big"} and counts == {"default": 30, "big": 25}  # "small" < 20 faces
    assert np.allclose(shapes["big"], base)
    out = tmp_path / "shapes.json"
    script.write_shapes(shapes, counts, out)
    doc = json.loads(out.read_text())
    assert doc["big"]["faces"] == 25
    assert np.array_equal(np.asarray(doc["big"]["points"]), np.round(base, 3))
