"""Resize mode `cell`: a square window around the purple-stained cell, the centre crop when nothing is stained."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image, ImageDraw

from bench import images
from bench.serving.pyfunc import ServingLimits, parse_request

PLASMA, RED_CELL, NUCLEUS = (228, 226, 232), (222, 170, 180), (120, 70, 200)  # colours of a stained smear


def field(width: int = 320, height: int = 240, nucleus: tuple[int, int] | None = None, radius: int = 16) -> Image.Image:
    """Pale plasma with pink red cells, and a purple nucleus centred at `nucleus` (x, y) if given."""
    image = Image.new("RGB", (width, height), PLASMA)
    draw = ImageDraw.Draw(image)
    for x in range(20, width, 70):
        for y in range(20, height, 70):
            draw.ellipse((x - 18, y - 18, x + 18, y + 18), fill=RED_CELL)
    if nucleus:
        x, y = nucleus
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=NUCLEUS)
    return image


def png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def centre_box(width: int, height: int) -> tuple[int, int, int, int]:
    side = round(images.CELL_WINDOW * min(width, height))
    left, top = round((width - side) / 2), round((height - side) / 2)
    return left, top, left + side, top + side


@pytest.mark.parametrize("nucleus", [(250, 70), (60, 190), (300, 225)], ids=["top-right", "bottom-left", "corner"])
def test_window_holds_an_off_centre_nucleus(nucleus):
    image = field(nucleus=nucleus)
    left, top, right, bottom = images.cell_box(image)
    assert right - left == bottom - top == round(images.CELL_WINDOW * 240)
    assert 0 <= left and 0 <= top and right <= 320 and bottom <= 240  # clamped inside: never black fill
    x, y = nucleus
    assert left <= x - 10 and x + 10 <= right and top <= y - 10 and y + 10 <= bottom
    out = images.decode(png(image), 32, "cell").astype(int)
    purple = (out[..., 2] - (out[..., 0] + out[..., 1]) / 2) > 60
    assert purple.sum() > 20  # the nucleus reaches the model's input


def test_window_centres_on_the_nucleus_when_it_can():
    left, top, right, bottom = images.cell_box(field(nucleus=(200, 110)))
    assert abs((left + right) / 2 - 200) <= 8 and abs((top + bottom) / 2 - 110) <= 8


def test_larger_stained_mass_beats_platelet_sized_specks():
    image = field(nucleus=(240, 150))
    draw = ImageDraw.Draw(image)
    for x, y in [(60, 40), (90, 200), (150, 60), (30, 120)]:
        draw.ellipse((x - 3, y - 3, x + 3, y + 3), fill=NUCLEUS)
    left, top, right, bottom = images.cell_box(image)
    assert left <= 240 <= right and top <= 150 <= bottom


@pytest.mark.parametrize("image", [Image.new("RGB", (320, 240), PLASMA), field(), Image.new("RGB", (320, 240))],
                         ids=["blank", "red-cells-only", "black"])
def test_no_stained_blob_falls_back_to_the_centre_crop(image):
    assert images.stain_peak(image) is None
    assert images.cell_box(image) == centre_box(320, 240)
    expected = image.resize((24, 24), Image.Resampling.BILINEAR, box=centre_box(320, 240))
    np.testing.assert_array_equal(np.asarray(images.fit(image, 24, "cell")), np.asarray(expected))


@pytest.mark.parametrize("width, height", [(320, 240), (240, 320), (500, 37), (9, 9), (1, 1), (64, 64), (2000, 1500)])
@pytest.mark.parametrize("mode", ["RGB", "L", "RGBA"])
def test_any_size_and_colour_mode_gives_size_square_rgb_uint8(width, height, mode):
    image = field(width, height, nucleus=(width // 3, height // 2), radius=max(1, min(width, height) // 8))
    out = images.decode(png(image.convert(mode)), 40, "cell")
    assert out.shape == (40, 40, 3) and out.dtype == np.uint8


def test_same_input_same_output():
    data = png(field(nucleus=(90, 80)))
    first = images.decode(data, 48, "cell")
    np.testing.assert_array_equal(first, images.decode(data, 48, "cell"))
    two_equal_nuclei = field(nucleus=(80, 120))
    ImageDraw.Draw(two_equal_nuclei).ellipse((224, 104, 256, 136), fill=NUCLEUS)
    assert images.cell_box(two_equal_nuclei) == images.cell_box(two_equal_nuclei.copy())


def test_jpeg_draft_keeps_the_window_at_full_detail():
    buffer = io.BytesIO()
    field(nucleus=(250, 70)).save(buffer, "JPEG", quality=95)
    with Image.open(io.BytesIO(buffer.getvalue())) as image:
        image.load()
        full = np.asarray(images.fit(image, 64, "cell"), dtype=np.int16)
    assert np.abs(images.decode(buffer.getvalue(), 64, "cell").astype(np.int16) - full).mean() < 2


def test_serving_applies_the_same_window():
    data = png(field(nucleus=(260, 60)))
    limits = ServingLimits(max_batch=2, max_image_bytes=1_000_000, max_image_pixels=1_000_000)
    encoded = pd.DataFrame({"image": [base64.b64encode(data).decode()]})
    served = parse_request(encoded, image_size=32, resize_mode="cell", limits=limits)
    np.testing.assert_array_equal(served[0], images.decode(data, 32, "cell"))
    pixels = np.asarray(field(nucleus=(260, 60)))[None].tolist()
    served = parse_request(pixels, image_size=32, resize_mode="cell", limits=limits)
    np.testing.assert_array_equal(served[0], images.fit(field(nucleus=(260, 60)), 32, "cell"))
