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
from model_factory import make_model
from PIL import Image

from maskpipe.predict import Predictor, PredictSettings, resolve_model
from maskpipe.serve import ServeSettings, create_app

KAGGLE = "kaggle-face-mask-detection"
MULTI_FACE = "maksssksksss30"


def png_header_only(width: int, height: int) -> bytes:
    """A tiny PNG file whose header claims width x height pixels (a decompression bomb's shape)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + chunk(b"IEND", b"")
    )


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
        (
            "text file",
            dict(files={"file": ("notes.txt", b"hello, not an image", "text/plain")}),
            415,
            "not an image",
        ),
        ("truncated PNG", dict(files={"file": ("cut.png", truncated, "image/png")}), 422, "cut.png"),
        (
            "over the pixel limit",
            dict(files={"file": ("big.png", png_header_only(1200, 1000), "image/png")}),
            413,
            "exceeds the 1000000 pixel limit",
        ),
        (
            "decompression bomb",
            dict(files={"file": ("bomb.png", png_header_only(50_000, 50_000), "image/png")}),
            413,
            "bomb.png",
        ),
        (
            "body over the size limit",
            dict(files={"file": ("huge.png", b"\x89PNG" + os.urandom(700_000), "image/png")}),
            413,
            "request body too large",
        ),
        (
            "chunked body over the limit",
            dict(content=iter([b"x" * 200_000] * 4)),
            413,
            "request body too large",
        ),
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


# ------------------------------------------------------------------------------ issue 13: robustness
def test_health_names_the_model_but_not_its_path(client, model_path):
    response = client.get("/health")
    assert response.json()["model"]["model_name"] == "tiny_multiclass"
    assert str(model_path.parent) not in response.text and "source" not in response.json()["model"]
    assert response.json()["workers"] == ServeSettings().workers


def test_tiny_images_get_200_with_no_faces(client):
    for size in [(1, 1), (12, 12), (19, 19), (500, 15)]:
        response = client.post(
            "/predict", files={"file": ("tiny.png", png_bytes(Image.new("RGB", size, "gray")), "image/png")}
        )
        assert response.status_code == 200, (size, response.text)
        assert response.json()["faces"] == [] and response.json()["summary"]["faces"] == 0


@pytest.fixture
def app_parts(model_path):
    predictor = Predictor.from_path(model_path, PredictSettings(max_pixels=1_000_000))
    return predictor, create_app(predictor, max_body_bytes=600_000, workers=2)


def test_unexpected_error_is_a_clean_json_500_and_the_server_keeps_serving(app_parts, monkeypatch):
    predictor, app = app_parts
    real = predictor.predict_image
    calls = []

    def flaky(img):
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("secret internal state at /srv/x")
        return real(img)

    monkeypatch.setattr(predictor, "predict_image", flaky)
    with TestClient(app) as c:
        bad = c.post(
            "/predict", files={"file": ("a.png", png_bytes(Image.new("RGB", (64, 64))), "image/png")}
        )
        assert bad.status_code == 500 and bad.headers["content-type"] == "application/json"
        assert bad.json() == {
            "detail": "a.png: internal error while predicting (see the server log); "
            "other requests are not affected"
        }
        assert "Traceback" not in bad.text and "/srv/x" not in bad.text
        good = c.post(
            "/predict", files={"file": ("b.png", png_bytes(Image.new("RGB", (64, 64))), "image/png")}
        )
        assert good.status_code == 200 and good.json()["faces"] == []


def test_images_are_decoded_in_the_bounded_worker_pool_not_on_the_event_loop(app_parts, monkeypatch):
    """Issue 13 measured /health at 0.48 s while a 36-Mpx PNG decoded on the loop. Checked by
    thread and by ordering (no clock): /health answers while a decode is still blocked."""
    import asyncio
    import threading

    import maskpipe.serve as serve_mod

    _predictor, app = app_parts
    release, decoding = threading.Event(), threading.Event()
    seen = {}
    real_decode = serve_mod.decode_image

    def blocking_decode(data, max_pixels=None, name="upload"):
        seen["thread"] = threading.current_thread().name
        try:
            asyncio.get_running_loop()
            seen["on_loop"] = True
        except RuntimeError:  # no event loop runs in this thread
            seen["on_loop"] = False
        decoding.set()
        release.wait(30)  # only a safety net against a hang; the test releases it itself
        seen["released_by_test"] = release.is_set()
        return real_decode(data, max_pixels, name)

    monkeypatch.setattr(serve_mod, "decode_image", blocking_decode)
    with TestClient(app) as c:
        result = {}
        upload = threading.Thread(
            target=lambda: result.setdefault(
                "r",
                c.post(
                    "/predict", files={"file": ("p.png", png_bytes(Image.new("RGB", (64, 64))), "image/png")}
                ),
            )
        )
        upload.start()
        assert decoding.wait(30)
        health = c.get("/health")  # answered while the decode is still blocked
        assert health.status_code == 200 and not release.is_set()
        release.set()
        upload.join(30)
    assert result["r"].status_code == 200 and seen["released_by_test"]
    assert seen["on_loop"] is False and seen["thread"].startswith("maskpipe-serve")


def test_serve_workers_setting_is_bounded():
    assert ServeSettings.from_params({"workers": 3}).workers == 3
    for bad in (0, 64):
        with pytest.raises(ValueError, match="predict.serve.workers"):
            ServeSettings.from_params({"workers": bad})


# ------------------------------------------------------------------------------ MLflow pyfunc
@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """A private MLflow store (sqlite + artifacts) for this module."""
    root = tmp_path_factory.mktemp("mlflow")
    env = {
        "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
        "MASKPIPE_MLFLOW_ARTIFACTS": str(root / "mlartifacts"),
    }
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
def test_pyfunc_model_predicts_like_maskpipe_predict(registered, model_path, kaggle_png, shared, monkeypatch):
    from maskpipe.pyfunc import load

    model = load(f"models:/{registered}/latest")
    image_path = shared / KAGGLE / "images" / f"{MULTI_FACE}.png"
    monkeypatch.setenv("MASKPIPE_PYFUNC_ALLOWED_DIR", str(image_path.parent))  # the path column is opt-in
    frame = pd.DataFrame(
        [
            {"image": base64.b64encode(kaggle_png).decode()},
            {"path": str(image_path)},
            {"image": "not base64!"},
        ]
    )
    out = model.predict(frame, params={"annotate": True})
    expected = Predictor.from_path(model_path, PredictSettings()).predict_image(Image.open(image_path))
    assert out.loc[0, "faces"] == expected and out.loc[1, "faces"] == expected
    assert out.loc[0, "n_faces"] == len(expected) >= 4 and out.loc[0, "error"] is None
    assert "not valid base64" in out.loc[2, "error"] and out.loc[2, "faces"] == []
    assert Image.open(io.BytesIO(base64.b64decode(out.loc[0, "annotated_png"]))).size == (400, 242)


@pytest.fixture(scope="module")
def pyfunc_model(model_path):
    """The pyfunc model class as MLflow runs it, on the test artifact (no store needed)."""
    from maskpipe.pyfunc import MaskpipeModel

    model = MaskpipeModel()
    model.predictor = Predictor.from_path(model_path, PredictSettings(max_pixels=1_000_000))
    return model


def b64_png(img: Image.Image) -> str:
    return base64.b64encode(png_bytes(img)).decode()


def test_pyfunc_path_column_is_off_by_default(pyfunc_model, tmp_path, monkeypatch):
    monkeypatch.delenv("MASKPIPE_PYFUNC_ALLOWED_DIR", raising=False)
    server_file = tmp_path / "server_secret.png"
    Image.new("RGB", (64, 64), "red").save(server_file)
    out = pyfunc_model.predict(
        None,
        pd.DataFrame([{"path": str(server_file)}, {"image": b64_png(Image.new("RGB", (64, 64)))}]),
        params={"annotate": True},
    )
    assert (
        "'path' column is disabled" in out.loc[0, "error"]
        and "MASKPIPE_PYFUNC_ALLOWED_DIR" in out.loc[0, "error"]
    )
    assert out.loc[0, "width"] is None and out.loc[0, "annotated_png"] is None
    assert out.loc[1, "error"] is None and out.loc[1, "width"] == 64 and out.loc[1, "annotated_png"]


def test_pyfunc_path_column_stays_inside_the_allowed_folder(pyfunc_model, tmp_path, monkeypatch):
    allowed, outside = tmp_path / "allowed", tmp_path / "outside"
    (allowed / "sub").mkdir(parents=True)
    outside.mkdir()
    Image.new("RGB", (64, 48), "blue").save(allowed / "sub" / "ok.png")
    Image.new("RGB", (64, 64), "red").save(outside / "secret.png")
    (allowed / "link.png").symlink_to(outside / "secret.png")  # a link inside that points out
    (allowed / "dirlink").symlink_to(outside)
    monkeypatch.setenv("MASKPIPE_PYFUNC_ALLOWED_DIR", str(allowed))
    paths = [
        "sub/ok.png",
        str(allowed / "sub" / "ok.png"),  # relative and absolute, inside
        str(outside / "secret.png"),
        str(outside / "missing.png"),  # outside: exists / does not
        "../outside/secret.png",
        "../outside/missing.png",
        "link.png",
        "dirlink/secret.png",
        "/etc/passwd",
        "/etc/no-such-file",
        "sub/missing.png",
    ]
    out = pyfunc_model.predict(None, pd.DataFrame([{"path": p} for p in paths]))
    errors = dict(zip(paths, out["error"], strict=True))
    assert errors["sub/ok.png"] is None and out.loc[0, "width"] == 64 and out.loc[1, "height"] == 48
    for path in paths[2:-1]:
        assert (
            errors[path] == f"path {path!r}: not allowed (only images inside the allowed folder can be read)"
        ), path
        assert out.loc[paths.index(path), "width"] is None
    # inside the folder a missing file may say so, without the server's own folder names
    assert "file not found" in errors["sub/missing.png"] and str(allowed) not in errors["sub/missing.png"]


def test_pyfunc_bad_row_gets_an_error_the_others_their_results(pyfunc_model, monkeypatch):
    real = pyfunc_model.predictor.predict_image

    def fails_on_odd_size(img):
        if img.size == (33, 33):
            raise RuntimeError("internal detail /srv/secret")
        return real(img)

    monkeypatch.setattr(pyfunc_model.predictor, "predict_image", fails_on_odd_size)
    rows = [
        {"image": b64_png(Image.new("RGB", (1, 1)))},
        {"image": b64_png(Image.new("RGB", (500, 15)))},
        {"image": b64_png(Image.new("RGB", (33, 33)))},
        {"image": "not base64!"},
        {"image": b64_png(Image.new("RGB", (64, 64)))},
    ]
    out = pyfunc_model.predict(None, pd.DataFrame(rows), params={"annotate": True})
    assert list(out["error"])[:2] == [None, None] and list(out["n_faces"])[:2] == [0, 0]  # tiny: zero faces
    assert out.loc[2, "error"] == "internal error while predicting this row (RuntimeError)"
    assert "not valid base64" in out.loc[3, "error"]
    assert out.loc[4, "error"] is None and out.loc[4, "width"] == 64 and out.loc[4, "annotated_png"]
    assert not any("Traceback" in str(e) or "/srv/secret" in str(e) for e in out["error"])


def test_pyfunc_model_holds_no_pickle(registered, store):
    from maskpipe import tracking

    mlflow = tracking.configure()
    local = Path(mlflow.artifacts.download_artifacts(f"models:/{registered}/latest"))
    files = {p.relative_to(local).as_posix() for p in local.rglob("*") if p.is_file()}
    assert {"MLmodel", "pyfunc_model.py", "artifacts/model.pt", "artifacts/predict_settings.json"} <= files
    assert not [f for f in files if f.endswith((".pkl", ".pickle", ".cloudpickle"))]
    assert (
        json.loads((local / "artifacts" / "predict_settings.json").read_text())["detector"]["name"]
        == "retinaface"
    )


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
    env = {
        **os.environ,
        **store,
        "MLFLOW_DISABLE_TELEMETRY": "true",
        # mlflow starts `uvicorn` by name: the venv's bin must be on PATH
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    log = tmp_path / "serve.log"
    with open(log, "wb") as fh:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlflow",
                "models",
                "serve",
                "-m",
                f"models:/{registered}/latest",
                "--env-manager",
                "local",
                "-h",
                "127.0.0.1",
                "-p",
                str(port),
                "-w",
                "1",
            ],
            stdout=fh,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
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
        payload = json.dumps(
            {
                "dataframe_records": [
                    {"image": base64.b64encode(kaggle_png).decode()},
                    {"image": base64.b64encode(b"GIF89a-broken").decode()},
                ]
            }
        )
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=payload.encode(),
            headers={"Content-Type": "application/json"},
        )
        answer = json.loads(urllib.request.urlopen(request, timeout=60).read())
        good, bad = answer["predictions"]
        expected = Predictor.from_path(model_path, PredictSettings()).predict_image(
            Image.open(shared / KAGGLE / "images" / f"{MULTI_FACE}.png")
        )
        assert good["faces"] == json.loads(json.dumps(expected)) and good["error"] is None
        assert bad["faces"] == [] and "image" in bad["error"]
    finally:
        os.killpg(proc.pid, 15)  # mlflow runs uvicorn as a child: stop the whole group we started
        proc.wait(timeout=30)
