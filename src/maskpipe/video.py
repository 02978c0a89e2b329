"""Prediction on a video (PyAV): every n-th frame classified, optionally an annotated copy.

A video that decodes to fewer frames than its header announces (e.g. an MP4 cut short after
its index) is not an error - the frames that are there get results - but the entry carries a
warning with both numbers, and so does the CLI output.
"""

from __future__ import annotations

import os
import warnings
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from maskpipe.draw import annotate
from maskpipe.predict_errors import PredictError

if TYPE_CHECKING:
    from maskpipe.predictor import Predictor

VIDEO_EXTENSIONS = {".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv"}


class TruncatedVideoWarning(UserWarning):
    """Fewer frames decoded than the container header announced."""


def is_video_file(path: Path) -> bool:
    return path.suffix.lower() in VIDEO_EXTENSIONS


def _video_codec() -> str:
    import av

    for name in ("libx264", "mpeg4"):
        try:
            av.codec.Codec(name, "w")
            return name
        except Exception:
            continue
    raise PredictError("no H.264 or MPEG-4 encoder in this PyAV build; cannot write an annotated video")


def predict_video(
    path: Path,
    predictor: Predictor,
    every_n: int | None = None,
    viz_path: Path | None = None,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Faces in every ``every_n``-th frame (0, n, 2n, ...). With ``viz_path`` every frame is written
    to an annotated video, showing the latest sampled frame's boxes."""
    import av
    from tqdm import tqdm

    every_n = every_n or predictor.settings.video_every_n_frames
    try:
        container = av.open(str(path))
    except Exception as exc:
        raise PredictError(f"{path}: cannot open video ({exc.__class__.__name__}: {exc})") from exc
    frames: list[dict[str, Any]] = []
    notes: list[str] = []
    out = ostream = None
    tmp_target = None
    try:
        if not container.streams.video:
            raise PredictError(f"{path}: no video stream")
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
        fps = float(rate)
        width, height = stream.codec_context.width, stream.codec_context.height
        if width * height > predictor.settings.max_pixels:
            raise PredictError(
                f"{path}: {width}x{height} frames exceed the {predictor.settings.max_pixels} pixel limit"
            )
        if viz_path is not None:
            viz_path.parent.mkdir(parents=True, exist_ok=True)
            tmp_target = viz_path.with_name(f".{viz_path.stem}.tmp{viz_path.suffix or '.mp4'}")
            out = av.open(str(tmp_target), "w")
            ostream = out.add_stream(_video_codec(), rate=Fraction(rate).limit_denominator(1000))
            ostream.width, ostream.height = width - width % 2, height - height % 2  # yuv420p needs even sides
            ostream.pix_fmt = "yuv420p"
        last: list[dict[str, Any]] = []
        expected = int(stream.frames or 0)  # 0: the container does not say
        bar = tqdm(
            total=expected or None,
            unit="frame",
            desc=path.name,
            disable=None if progress is None else not progress,
        )
        index = -1
        try:
            for index, frame in enumerate(container.decode(stream)):
                img = None
                if index % every_n == 0:
                    img = frame.to_image()
                    last = predictor.predict_image(img)
                    t = float(frame.time) if frame.time is not None else index / fps
                    frames.append({"frame": index, "time": round(t, 3), "faces": last})
                if out is not None:
                    img = img if img is not None else frame.to_image()
                    viz = annotate(img, last).crop((0, 0, ostream.width, ostream.height))
                    for packet in ostream.encode(av.VideoFrame.from_image(viz)):
                        out.mux(packet)
                bar.update(1)
        except av.FFmpegError as exc:
            if index < 0:
                raise
            notes.append(f"decoding stopped after frame {index} ({exc})")
        finally:
            bar.close()
        read = index + 1
        if expected and read < expected:
            notes.append(f"decoded {read} of the {expected} frames the header announces (truncated file?)")
        for note in notes:
            warnings.warn(f"{path}: {note}", TruncatedVideoWarning, stacklevel=2)
        if out is not None:
            for packet in ostream.encode():
                out.mux(packet)
            out.close()
            out = None
            os.replace(tmp_target, viz_path)
        return {
            "source": str(path),
            "type": "video",
            "fps": round(fps, 3),
            "width": width,
            "height": height,
            "frames_total": read,
            "frames_expected": expected or None,
            "every_n_frames": every_n,
            "frames": frames,
            "faces": sum(len(f["faces"]) for f in frames),
            "error": None,
            "warnings": notes,
            **({"visualization": str(viz_path)} if viz_path is not None else {}),
        }
    except PredictError:
        raise
    except av.FFmpegError as exc:
        raise PredictError(f"{path}: cannot decode video ({exc})") from exc
    finally:
        container.close()
        if out is not None:
            out.close()
        if tmp_target is not None and tmp_target.exists():
            tmp_target.unlink()
