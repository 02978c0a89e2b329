"""Label and legend placement (maskpipe.draw_layout): inside the picture, no label over another."""

from __future__ import annotations

import itertools

import pytest

from maskpipe.draw_layout import clamp_into, legend_entries, legend_text, overlap, place_labels, place_legend


def rects(spots, sizes):
    return [(x, y, x + w, y + h) for (x, y), (w, h) in zip(spots, sizes, strict=True)]


def inside(r, image):
    return r[0] >= 0 and r[1] >= 0 and r[2] <= image[0] and r[3] <= image[1]


def test_overlap_and_clamp():
    assert overlap((0, 0, 10, 10), (5, 5, 15, 15)) == 25
    assert overlap((0, 0, 10, 10), (10, 0, 20, 10)) == 0  # touching is not overlapping
    assert clamp_into(-5, 95, (20, 10), (100, 100)) == (0, 90)
    assert clamp_into(10, 10, (200, 10), (100, 100)) == (0, 10)  # too wide: left edge wins


def test_single_label_sits_above_its_box():
    assert place_labels([(50, 50, 80, 80)], [(40, 12)], (200, 200)) == [(50, 37)]


def test_labels_at_the_border_stay_inside_the_image():
    image = (120, 90)
    faces = [(0, 0, 20, 20), (100, 70, 120, 90), (110, 0, 120, 15)]
    sizes = [(60, 14)] * 3
    for r in rects(place_labels(faces, sizes, image), sizes):
        assert inside(r, image)


def test_a_crowded_row_of_faces_gets_labels_that_do_not_overlap():
    """Ten 20 px faces side by side with 60 px labels: above-left for all would overlap 9 times."""
    image = (400, 300)
    faces = [(20 + 22 * i, 120, 40 + 22 * i, 140) for i in range(10)]
    sizes = [(60, 12)] * 10
    placed = rects(place_labels(faces, sizes, image), sizes)
    naive = [(f[0], f[1] - 13, f[0] + 60, f[1] - 1) for f in faces]
    assert sum(overlap(a, b) > 0 for a, b in itertools.combinations(naive, 2)) > 0
    assert all(inside(r, image) for r in placed)
    assert all(overlap(a, b) == 0 for a, b in itertools.combinations(placed, 2))


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="2 faces but 1 label sizes"):
        place_labels([(0, 0, 1, 1), (2, 2, 3, 3)], [(5, 5)], (10, 10))


def test_legend_counts_and_order():
    entries = legend_entries(["without_mask", "with_mask", "with_mask", "zebra", "mask_weared_incorrect"])
    assert entries == [("with_mask", 2), ("without_mask", 1), ("mask_weared_incorrect", 1), ("zebra", 1)]
    assert legend_text(entries)[-1] == "faces: 5" and legend_text(entries)[0] == "with_mask: 2"
    assert legend_entries([]) == [] and legend_text([]) == []


def test_legend_goes_to_the_corner_with_fewest_faces():
    image, size = (200, 100), (60, 30)
    assert place_legend(size, image) == (4, 66)  # bottom-left when nothing is in the way
    faces_bottom = [(0, 60, 200, 100)]
    x, y = place_legend(size, image, faces_bottom)
    assert y == 4  # moved to the top
    assert inside((x, y, x + 60, y + 30), image)


def test_annotate_draws_a_legend_and_no_label_over_another():
    """The drawing the CLI, the HTTP page and the video writer share (maskpipe.draw.annotate)."""
    from PIL import Image, ImageDraw

    from maskpipe import draw as draw_mod

    img = Image.new("RGB", (200, 120), (0, 0, 0))
    faces = [
        {"box": [10 + 22 * i, 30, 30 + 22 * i, 50], "label": "with_mask", "confidence": 0.9} for i in range(8)
    ]
    faces.append({"box": [185, 100, 199, 119], "label": "without_mask", "confidence": 0.8})
    placed = []
    real_text = ImageDraw.ImageDraw.text

    def spy(self, xy, text, *args, **kwargs):
        placed.append((xy, text))
        return real_text(self, xy, text, *args, **kwargs)

    ImageDraw.ImageDraw.text = spy
    try:
        out = draw_mod.annotate(img, faces)
    finally:
        ImageDraw.ImageDraw.text = real_text
    assert out.size == img.size and img.getpixel((0, 0)) == (0, 0, 0)  # a copy
    texts = [t for _, t in placed]
    assert "with_mask: 8" in texts and "without_mask: 1" in texts and "faces: 9" in texts
    labels = [(xy, t) for xy, t in placed if t.endswith(("0.90", "0.80"))]
    assert 0 < len(labels) < len(faces)  # 8 neighbours 22 px apart cannot all carry a label
    assert all(0 <= x < img.width and 0 <= y < img.height for (x, y), _ in labels)
