"""`maskpipe serve`: the predictor over HTTP (FastAPI + uvicorn), bound to 127.0.0.1 by default.

    GET  /          web page: upload a photo, see it annotated, faces listed
    GET  /health    {"status": "ok", "model": {...}, "limits": {...}}
    POST /predict   an image (multipart field ``file``, or the raw bytes as the body)
                    -> {"faces": [...], "width", "height", "summary", "ms"}
                    ``?annotate=true`` adds ``annotated_png`` (a data: URL with boxes and labels)

Bad input gets a 4xx with ``{"detail": "<what is wrong>"}`` and the server keeps serving:
400 no image in the request, 413 body over ``max_body_bytes`` (checked while receiving, before
anything is parsed) or image over ``max_pixels`` (checked from the header, before decoding),
415 not an image, 422 an image that does not decode (truncated, corrupt). An image too small
to hold a face gets 200 with no faces. Anything unexpected gets a JSON 500 naming the upload
(the traceback goes to the server log only) and the server keeps serving.

Threads: uploads are decoded, predicted and annotated in a pool of ``workers`` threads
(``predict.serve.workers``, default 2), never on the event loop, so /health answers while a
36-Mpx PNG decodes. Predictions themselves run one at a time (one model, one detector);
with 2 workers the next upload decodes while the current one is predicted. The pool is
bounded on purpose: Starlette's default pool grows to 40 threads, and every thread that
allocates gets its own glibc malloc arena (issue 13 saw 46 threads and RSS climbing).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import io
import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from importlib import resources
from typing import Any

import anyio.to_thread
from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import HTMLResponse

from maskpipe.imaging import ImageReadError
from maskpipe.predict import ImageTooLarge, NotAnImage, Predictor, annotate, decode_image, summarize

log = logging.getLogger("maskpipe.serve")


@dataclass(frozen=True)
class ServeSettings:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_mb: float = 20.0
    workers: int = 2  # decode / predict threads (bounded: see the module doc)

    @property
    def max_body_bytes(self) -> int:
        return int(self.max_body_mb * 1024 * 1024)

    @classmethod
    def from_params(cls, cfg: dict[str, Any] | None, **overrides: Any) -> ServeSettings:
        cfg = {**(cfg or {}), **{k: v for k, v in overrides.items() if v is not None}}
        settings = cls(
            host=str(cfg.get("host", cls.host)),
            port=int(cfg.get("port", cls.port)),
            max_body_mb=float(cfg.get("max_body_mb", cls.max_body_mb)),
            workers=int(cfg.get("workers", cls.workers)),
        )
        if not 0 <= settings.port <= 65535:
            raise ValueError(f"port must be 0..65535, got {settings.port}")
        if settings.max_body_mb <= 0:
            raise ValueError(f"max_body_mb must be > 0, got {settings.max_body_mb}")
        if not 1 <= settings.workers <= 16:
            raise ValueError(f"predict.serve.workers must be 1..16 threads, got {settings.workers}")
        return settings


class _BodyTooLarge(Exception):
    pass


class BodySizeLimit:
    """ASGI middleware: 413 for request bodies over ``limit`` bytes.

    Content-Length is checked up front; chunked bodies are counted as they arrive, so a
    client cannot make the server buffer more than ``limit`` bytes either way.
    """

    def __init__(self, app, limit: int):
        self.app, self.limit = app, int(limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and length.isdigit() and int(length) > self.limit:
            return await self._reject(send, int(length))
        received = 0
        started = False

        async def limited_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _BodyTooLarge()
            return message

        async def tracking_send(message):
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracking_send)
        except _BodyTooLarge:
            if not started:
                await self._reject(send, received)

    async def _reject(self, send, size: int) -> None:
        import json

        body = json.dumps(
            {"detail": f"request body too large ({size} bytes > limit {self.limit} bytes)"}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 413,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(body)).encode()),
                    (b"connection", b"close"),
                ],
            }
        )
        await send({"type": "http.response.body", "body": body})


def page_html() -> str:
    return resources.files("maskpipe").joinpath("static/index.html").read_text(encoding="utf-8")


def create_app(
    predictor: Predictor,
    max_body_bytes: int = ServeSettings().max_body_bytes,
    workers: int = ServeSettings().workers,
):
    """The FastAPI app around one loaded predictor."""
    executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="maskpipe-serve")

    @contextlib.asynccontextmanager
    async def lifespan(_app):
        # Starlette moves big multipart uploads (spooled to disk) through anyio's pool, 40 threads
        # by default: bound it like ours.
        anyio.to_thread.current_default_thread_limiter().total_tokens = max(2, workers)
        yield
        executor.shutdown(wait=True, cancel_futures=True)

    app = FastAPI(
        title="maskpipe",
        description="Face-mask detection: faces found, each classified.",
        version=_version(),
        lifespan=lifespan,
    )
    lock = threading.Lock()
    max_pixels = predictor.settings.max_pixels
    # The model's name and shape only: its path on this machine is nobody's business (issue 13).
    model_info = {k: v for k, v in predictor.describe().items() if k != "source"}

    # async routes run on the event loop itself: no thread, no wait behind a prediction
    @app.get("/", response_class=HTMLResponse)
    async def index() -> str:
        return page_html()

    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "model": model_info,
            "detector": predictor.settings.detector.to_dict(),
            "limits": {"max_body_bytes": max_body_bytes, "max_pixels": max_pixels},
            "workers": workers,
        }

    @app.post("/predict")
    async def predict(request: Request, annotate: bool = False) -> dict[str, Any]:
        data, name = await _read_image_bytes(request)
        job = functools.partial(predict_upload, predictor, lock, data, name, max_pixels, annotate)
        try:
            return await asyncio.get_running_loop().run_in_executor(executor, job)
        except HTTPException:
            raise
        except Exception:
            log.exception("predicting %r failed", name)  # the traceback stays in the server log
            raise HTTPException(
                500,
                f"{name}: internal error while predicting (see the server log); "
                "other requests are not affected",
            ) from None

    app.add_middleware(BodySizeLimit, limit=max_body_bytes)
    return app


def predict_upload(
    predictor: Predictor, lock: threading.Lock, data: bytes, name: str, max_pixels: int | None, annotate: bool
) -> dict[str, Any]:
    """Decode + predict (+ annotate) one upload; runs in a worker thread. HTTPException for bad input."""
    try:
        img = decode_image(data, max_pixels, name=name)
    except ImageTooLarge as exc:
        raise HTTPException(413, str(exc)) from None
    except NotAnImage as exc:
        raise HTTPException(415, str(exc)) from None
    except ImageReadError as exc:
        raise HTTPException(422, str(exc)) from None
    del data
    t0 = time.perf_counter()
    with lock:
        faces = predictor.predict_image(img)
    out = {
        "source": name,
        "width": img.width,
        "height": img.height,
        "faces": faces,
        "summary": summarize([{"faces": faces}]),
        "ms": round(1000 * (time.perf_counter() - t0), 1),
    }
    if annotate:
        buf = io.BytesIO()
        _annotate(img, faces).save(buf, format="PNG")
        out["annotated_png"] = "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")
    return out


_annotate = annotate  # the route's query parameter is called `annotate` too


async def _read_image_bytes(request: Request) -> tuple[bytes, str]:
    ctype = request.headers.get("content-type", "")
    if ctype.startswith("multipart/form-data"):
        try:
            form = await request.form(max_files=1, max_fields=10)
        except _BodyTooLarge:
            raise
        except Exception as exc:
            raise HTTPException(400, f"cannot parse the upload form ({exc})") from None
        upload = form.get("file")
        if upload is None or isinstance(upload, str):
            raise HTTPException(400, "no image in the form: send it as the field 'file'")
        data = await upload.read()
        name = upload.filename or "upload"
    else:
        data = await request.body()
        name = "upload"
    if not data:
        raise HTTPException(
            400, "no image in the request: send a multipart field 'file' or the image bytes as the body"
        )
    return data, name


def _version() -> str:
    try:
        from importlib.metadata import version

        return version("maskpipe")
    except Exception:
        return "0"


def serve(predictor: Predictor, settings: ServeSettings) -> None:
    """Run the app with uvicorn until interrupted (one process: the model is loaded once)."""
    import uvicorn

    app = create_app(predictor, settings.max_body_bytes, settings.workers)
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info", workers=1)
