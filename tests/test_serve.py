"""The HTTP app (through a test client), the MLflow pyfunc model, and `mlflow models serve`."""

from __future__ import annotations

import base64
import io
import json
import os
import socket
import struct
import subprocess
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import pandas as pd
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from maskpipe.predict import Predictor, PredictSettings, resolve_model
from maskpipe.serve import ServeSettings, create_app
from model_factory import make_model

KAGGLE = "kaggle-face-mask-detection"
MULTI_FACE = "maksssksksss30"


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims width x height pixels (a decompression bomb's shape)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def model_path(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("models"), "multiclass")


@pytest.fixture(scope="module")
def client(model_path):
    predictor = Predictor.from_path(model_path, PredictSettings(max_pixels=1_000_000))
    with TestClient(create_app(predictor, max_body_bytes=600_000)) as c:
        yield c


@pytest.fixture(scope="module")
def kaggle_png(shared) -> bytes:
    return (shared / KAGGLE / "images" / f"{MULTI_FACE}.png").read_bytes()


def test_health_and_page(client):
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert health["model"]["classes"] == ["with_mask", "without_mask", "mask_weared_incorrect"]
    assert health["limits"] == {"max_body_bytes": 600_000, "max_pixels": 1_000_000}
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'type="file"' in page.text and "predict?annotate=true" in page.text


@pytest.mark.shared
def test_predict_upload_and_raw_body(client, kaggle_png):
    upload = client.post("/predict", files={"file": ("crowd.png", kaggle_png, "image/png")})
    assert upload.status_code == 200, upload.text
    body = upload.json()
    assert body["source"] == "crowd.png" and (body["width"], body["height"]) == (400, 242)
    assert len(body["faces"]) >= 4 and body["summary"]["faces"] == len(body["faces"])
    assert "annotated_png" not in body
    raw = client.post("/predict?annotate=true", content=kaggle_png, headers={"content-type": "image/png"})
    assert raw.status_code == 200
    assert raw.json()["faces"] == body["faces"]
    url = raw.json()["annotated_png"]
    assert url.startswith("data:image/png;base64,")
    annotated = Image.open(io.BytesIO(base64.b64decode(url.split(",", 1)[1])))
    assert annotated.size == (400, 242)


@pytest.mark.shared
def test_bad_inputs_get_4xx_and_the_server_keeps_serving(client, kaggle_png):
    truncated = kaggle_png[: len(kaggle_png) // 2]
    cases = [
        ("empty body", dict(content=b""), 400, "no image"),
        ("form without file", dict(files={"other": (None, "x")}), 400, "field 'file'"),
        ("text file", dict(files={"file": ("notes.txt", b"hello, not an image", "text/plain")}), 415, "not an image"),
        ("truncated PNG", dict(files={"file": ("cut.png", truncated, "image/png")}), 422, "cut.png"),
        ("over the pixel limit", dict(files={"file": ("big.png", png_header_only(1200, 1000), "image/png")}),
         413, "exceeds the 1000000 pixel limit"),
        ("decompression bomb", dict(files={"file": ("bomb.png", png_header_only(50_000, 50_000), "image/png")}),
         413, "bomb.png"),
        ("body over the size limit", dict(files={"file": ("huge.png", b"\x89PNG" + os.urandom(700_000), "image/png")}),
         413, "request body too large"),
        ("chunked body over the limit", dict(content=iter([b"x" * 200_000] * 4)), 413, "request body too large"),
    ]
    for name, kwargs, status, message in cases:
        response = client.post("/predict", **kwargs)
        assert response.status_code == status, (name, response.text)
        assert message in response.json()["detail"], (name, response.json())
    good = client.post("/predict", files={"file": ("crowd.png", kaggle_png, "image/png")})
    assert good.status_code == 200 and len(good.json()["faces"]) >= 4
    assert client.get("/health").json()["status"] == "ok"


def test_serve_settings():
    s = ServeSettings.from_params({"host": "127.0.0.1", "port": 8000, "max_body_mb": 1}, port=9000)
    assert (s.host, s.port, s.max_body_bytes) == ("127.0.0.1", 9000, 1024 * 1024)
    assert ServeSettings().host == "127.0.0.1"  # never all interfaces unless asked
    with pytest.raises(ValueError, match="max_body_mb"):
        ServeSettings.from_params({"max_body_mb": 0})


# ------------------------------------------------------------------------------ MLflow pyfunc
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A private MLflow store (sqlite + artifacts) for this module."""
    root = tmp_path_factory.mktemp("mlflow")
    env = {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
           "MASKPIPE_MLFLOW_ARTIFACTS": str(root / "mlartifacts")}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    yield env
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(scope="module")
def registered(store, model_path) -> str:
    from maskpipe import tracking
    from maskpipe.pyfunc import log_pyfunc_model

    mlflow = tracking.configure()
    with mlflow.start_run(experiment_id=tracking.get_or_create_experiment()):
        info = log_pyfunc_model(model_path, "maskpipe-tiny_multiclass", settings=PredictSettings())
    assert info.registered_model_version == 1
    return "maskpipe-tiny_multiclass"


@pytest.mark.shared
def test_pyfunc_model_predicts_like_maskpipe_predict(registered, model_path, kaggle_png, shared):
    from maskpipe.pyfunc import load

    model = load(f"models:/{registered}/latest")
    image_path = shared / KAGGLE / "images" / f"{MULTI_FACE}.png"
    frame = pd.DataFrame([{"image": base64.b64encode(kaggle_png).decode()}, {"path": str(image_path)},
                          {"image": "not base64!"}])
    out = model.predict(frame, params={"annotate": True})
    expected = Predictor.from_path(model_path, PredictSettings()).predict_image(Image.open(image_path))
    assert out.loc[0, "faces"] == expected and out.loc[1, "faces"] == expected
    assert out.loc[0, "n_faces"] == len(expected) >= 4 and out.loc[0, "error"] is None
    assert "not valid base64" in out.loc[2, "error"] and out.loc[2, "faces"] == []
    assert Image.open(io.BytesIO(base64.b64decode(out.loc[0, "annotated_png"]))).size == (400, 242)


def test_pyfunc_model_holds_no_pickle(registered, store):
    from maskpipe import tracking

    mlflow = tracking.configure()
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{registered}/latest"))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {"MLmodel", "pyfunc_model.py", "artifacts/model.pt", "artifacts/predict_settings.json"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))]
    assert json.loads((local / "artifacts" / "predict_settings.json").read_text())["detector"]["name"] == "retinaface"


def test_predict_resolves_a_registered_model_name(registered, store, tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))  # a repo without data/models/
    path, source = resolve_model("tiny_multiclass")
    assert source == f"models:/{registered}/latest" and path.name == "model.pt"
    assert Predictor.from_path(path).meta["model_name"] == "tiny_multiclass"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.shared
def test_mlflow_models_serve_answers_invocations(registered, store, kaggle_png, model_path, shared, tmp_path):
    """`mlflow models serve -m models:/maskpipe-<m>/latest --env-manager local`, offline, on 127.0.0.1."""
    port = free_port()
    env = {**os.environ, **store, "MLFLOW_DISABLE_TELEMETRY": "true",
           # mlflow starts `uvicorn` by name: the venv's bin must be on PATH
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen([sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{registered}/latest",
                                 "--env-manager", "local", "-h", "127.0.0.1", "-p", str(port), "-w", "1"],
                                stdout=fh, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        deadline = time.monotonic() + 180
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"mlflow models serve did not come up:\n{log.read_text()[-3000:]}")
                time.sleep(0.5)
        payload = json.dumps({"dataframe_records": [{"image": base64.b64encode(kaggle_png).decode()},
                                                    {"image": base64.b64encode(b"GIF89a-broken").decode()}]})
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=payload.encode(),
                                         headers={"Content-Type": "application/json"})
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        good, bad = answer["predictions"]
        expected = Predictor.from_path(model_path, PredictSettings()).predict_image(
            Image.open(shared / KAGGLE / "images" / f"{MULTI_FACE}.png"))
        assert good["faces"] == json.loads(json.dumps(expected)) and good["error"] is None
        assert bad["faces"] == [] and "image" in bad["error"]
    finally:
        os.killpg(proc.pid, 15)  # mlflow runs uvicorn as a child: stop the whole group we started
        proc.wait(timeout=30)
