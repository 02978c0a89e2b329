"""`maskpipe predict` on awkward inputs (issue 13): a bad image among good ones, files that are
not images inside a folder, a truncated video. Every case writes what it can and says what it
could not, naming the file."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from model_factory import make_model
from PIL import Image
from typer.testing import CliRunner

from maskpipe.cli import app
from maskpipe.detect import Detection
from maskpipe.predict import Predictor, PredictSettings, predict_path, report_lines
from maskpipe.video import TruncatedVideoWarning


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_model(tmp_path_factory.mktemp("models"), "binary")


def picture(width: int, height: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8))


class BoxDetector:
    """One fixed face box per image, and a crash on pictures of one size (a detector bug)."""

    def __init__(self, crash_size=None):
        self.crash_size = crash_size

    def __call__(self, img):
        if img.size == self.crash_size:
            raise RuntimeError("torch.cat(): expected a non-empty list of Tensors")
        return [Detection(box=(0.0, 0.0, float(img.width), float(img.height)), score=1.0)]


def bad_image_folder(root: Path) -> Path:
    folder = root / "photos"
    (folder / "sub").mkdir(parents=True)
    picture(160, 120, 1).save(folder / "good1.png")
    picture(90, 110, 2).save(folder / "sub" / "good2.jpg")
    picture(1, 1).save(folder / "tiny1x1.png")
    picture(12, 12).save(folder / "tiny12.png")
    picture(500, 15).save(folder / "strip500x15.png")
    data = bytearray((folder / "good1.png").read_bytes())
    (folder / "corrupt.png").write_bytes(bytes(data[: len(data) // 3]))
    (folder / "text.png").write_text("a text file renamed .png")
    return folder


GOOD = {"good1.png", "sub/good2.jpg"}
BAD = {"tiny1x1.png", "tiny12.png", "strip500x15.png", "corrupt.png", "text.png"}


def test_cli_folder_with_bad_images_keeps_the_good_results(tmp_path, model):
    """Issue 13 item 2: a tiny image crashed the detector and `predict <folder>` exited 1 with no
    JSON and no pictures for the good images. Real detector (MTCNN) here."""
    folder = bad_image_folder(tmp_path)
    out, viz = tmp_path / "out.json", tmp_path / "viz"
    result = CliRunner().invoke(
        app,
        [
            "predict",
            str(folder),
            "--model",
            str(model),
            "--output",
            str(out),
            "--save-viz",
            str(viz),
            "--batch-size",
            "3",
        ],
    )
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    by_source = {e["source"]: e for e in report["inputs"]}
    assert set(by_source) == GOOD | BAD
    for source in GOOD:
        assert by_source[source]["error"] is None
        assert (viz / source).is_file()  # the annotated picture was written
    for source, entry in by_source.items():
        if entry["error"]:
            assert Path(source).name in entry["error"], entry["error"]  # every error names its file
    assert by_source["corrupt.png"]["error"] and by_source["text.png"]["error"]
    # tiny images: zero faces, or an error naming the file - never a lost run
    assert all(by_source[s]["faces"] == [] for s in BAD)
    assert report["summary"]["inputs"] == 7 and report["summary"]["errors"] >= 2
    assert any("text.png" in line and "ERROR" in line for line in result.stdout.splitlines())


def test_a_file_that_crashes_the_detector_costs_only_itself(tmp_path, model):
    """The batch is retried image by image; the failing one gets an error naming it."""
    folder = bad_image_folder(tmp_path)
    pred = Predictor.from_path(model, PredictSettings(batch_size=4))
    pred.detector = BoxDetector(crash_size=(500, 15))
    report = predict_path(folder, pred, viz_dir=tmp_path / "viz", progress=False)
    by_source = {e["source"]: e for e in report["inputs"]}
    strip = by_source["strip500x15.png"]["error"]
    assert strip.startswith("strip500x15.png: RuntimeError: torch.cat()")
    for source in GOOD | {"tiny12.png", "tiny1x1.png"}:
        assert by_source[source]["error"] is None and len(by_source[source]["faces"]) == 1
        assert (tmp_path / "viz" / source).is_file()
    assert report["summary"]["errors"] == 3  # the strip, corrupt.png, text.png


def test_folder_counts_what_it_does_not_predict(tmp_path, model):
    """Issue 13 item 6: videos, text files and symlink loops inside a folder were skipped silently."""
    folder = tmp_path / "mixed"
    (folder / "deeper").mkdir(parents=True)
    picture(64, 64).save(folder / "face.png")
    (folder / "clip.mp4").write_bytes(b"\x00" * 64)
    (folder / "notes.txt").write_text("hello")
    (folder / "deeper" / "readme.md").write_text("hello")
    os.symlink("loop_b", folder / "loop_a")
    os.symlink("loop_a", folder / "loop_b")
    os.symlink("missing.png", folder / "dangling.png")
    os.symlink("..", folder / "deeper" / "up")  # a directory link: not followed (no endless recursion)
    os.mkfifo(folder / "pipe.png")
    pred = Predictor.from_path(model)
    pred.detector = BoxDetector()
    report = predict_path(folder, pred, progress=False)
    assert [e["source"] for e in report["inputs"]] == ["face.png"]
    assert report["summary"]["skipped"] == {
        "broken_link": 3,
        "link_not_followed": 1,
        "other_file": 2,
        "special_file": 1,
        "video": 1,
    }
    kinds = {s["source"]: s["kind"] for s in report["skipped"]}
    assert (
        kinds["clip.mp4"] == "video"
        and kinds["notes.txt"] == "other_file"
        and kinds["loop_a"] == "broken_link"
    )
    assert kinds["pipe.png"] == "special_file" and kinds[str(Path("deeper") / "up")] == "link_not_followed"
    lines = report_lines(report)
    assert "clip.mp4: skipped (a video inside a folder; predict it on its own)" in lines
    assert lines[-1].endswith(
        "skipped 3 broken_link, 1 link_not_followed, 2 other_file, 1 special_file, 1 video"
    )


def write_truncated_mp4(path: Path, frames: int = 60, keep: float = 0.4) -> None:
    """An MP4 with its index (moov) at the start (faststart), then its data cut to ``keep``."""
    import av

    rng = np.random.default_rng(0)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as out:
        stream = out.add_stream("mpeg4", rate=Fraction(10))
        stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
        for _ in range(frames):
            frame = av.VideoFrame.from_ndarray(
                rng.integers(0, 256, (48, 64, 3), dtype=np.uint8), format="rgb24"
            )
            for packet in stream.encode(frame):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    data = path.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")  # the index really is at the start
    path.write_bytes(data[: int(len(data) * keep)])


def test_truncated_video_is_reported_with_the_numbers(tmp_path, model):
    """Issue 13 item 6: a truncated MP4 gave 13 of 60 frames with exit 0 and no warning."""
    video = tmp_path / "cut.mp4"
    write_truncated_mp4(video)
    pred = Predictor.from_path(model)
    pred.detector = BoxDetector()
    with pytest.warns(TruncatedVideoWarning, match=r"cut\.mp4: decoded \d+ of the 60 frames"):
        report = predict_path(video, pred, every_n=5, progress=False)
    (entry,) = report["inputs"]
    assert entry["frames_expected"] == 60 and 0 < entry["frames_total"] < 60
    assert entry["warnings"] == [
        f"decoded {entry['frames_total']} of the 60 frames the header announces (truncated file?)"
    ]
    assert report["summary"]["warnings"] == 1
    assert any("cut.mp4: WARNING decoded" in line for line in report_lines(report))


def test_complete_video_has_no_warning(tmp_path, model):
    video = tmp_path / "whole.mp4"
    write_truncated_mp4(video, frames=12, keep=1.0)
    pred = Predictor.from_path(model)
    pred.detector = BoxDetector()
    report = predict_path(video, pred, every_n=5, progress=False)
    (entry,) = report["inputs"]
    assert entry["frames_total"] == entry["frames_expected"] == 12 and entry["warnings"] == []
    assert report["summary"]["warnings"] == 0


def test_cli_prints_the_truncation_warning(tmp_path, model):
    video = tmp_path / "cut.mp4"
    write_truncated_mp4(video)
    out = tmp_path / "out.json"
    result = CliRunner().invoke(
        app,
        ["predict", str(video), "--model", str(model), "-q", "--every-n-frames", "30", "--output", str(out)],
    )
    assert result.exit_code == 0, result.output
    assert "warning(s)" in result.stdout.splitlines()[-1]
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("warning:")]
    assert "cut.mp4: decoded" in line and "of the 60 frames the header announces" in line
    assert json.loads(out.read_text())["inputs"][0]["frames_expected"] == 60
