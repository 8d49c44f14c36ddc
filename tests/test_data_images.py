"""bench.images.decode as the data loader uses it: EXIF orientation, and JPEG draft decoding staying faithful."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from bench.images import decode, fit, to_rgb8


def _jpeg(array: np.ndarray, **save) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "JPEG", quality=95, **save)
    return buffer.getvalue()


def test_exif_orientation_is_applied():
    left_red = np.zeros((20, 40, 3), np.uint8)
    left_red[:, :20] = (255, 0, 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90° clockwise to display"
    out = decode(_jpeg(left_red, exif=exif.tobytes()), 16, "stretch")
    assert out[:4, :, 0].mean() > 200 and out[-4:, :, 0].mean() < 60  # red ends up on top


def test_jpeg_draft_decode_matches_a_full_decode():
    rng = np.random.default_rng(0)
    field = np.kron(rng.integers(0, 256, (12, 16, 3), dtype=np.uint8), np.ones((20, 20, 1), np.uint8))
    data = _jpeg(field)  # 320x240, like a Kaggle field
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        full = np.asarray(fit(to_rgb8(image), 64, "pad"), dtype=np.int16)
    fast = decode(data, 64, "pad").astype(np.int16)
    assert fast.shape == (64, 64, 3) and np.abs(fast - full).mean() < 3
