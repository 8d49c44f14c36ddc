"""Decode any common microscope image into a fixed-size 8-bit RGB array, the same way in training and serving.

Resize modes: `pad` keeps the whole field (black bars), `crop` its centre square, `stretch` squeezes it, and `cell`
crops a square of `CELL_WINDOW` × the short side around the most purple-stained spot (a white cell's nucleus in a
Romanowsky/Wright-stained smear), or the centre square when nothing is stained. numpy and PIL only: this module is
copied into every logged model.
"""

from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

RESIZE_MODES = ("pad", "crop", "stretch", "cell")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 1024  # the side, in pixels, a model may take
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# Refuse images whose pixel count suggests a decompression bomb (PIL warns at ~89 M).
MAX_PIXELS = 64_000_000

# `cell`: the window's side as a fraction of the field's short side, and how the stain is found. A pixel's stain is
# blue minus the mean of red and green, less STAIN_FLOOR: WBC nuclei score ~60-90, red cells, plasma and black fill
# <= 0, platelets up to ~40 but over a few pixels only. The stain is scored on a copy whose short side is
# SCORE_SIDE px or more, box-blurred over a square of BLUR × the short side, so a nucleus outweighs platelets and noise.
# A peak whose mean stain is under MIN_STAIN means no stained cell: centre crop.
# Caches key on the mode's name: a change here that moves pixels needs a new bench.data.cache.CACHE_VERSION.
CELL_WINDOW = 0.5
STAIN_FLOOR, MIN_STAIN = 30.0, 4.0
SCORE_SIDE, BLUR = 60, 0.2


def to_rgb8(image: Image.Image) -> Image.Image:
    """Grayscale, RGBA, palette, CMYK and 16-bit images to 8-bit RGB, EXIF orientation applied."""
    image = ImageOps.exif_transpose(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        arr = np.asarray(image, dtype=np.float64)
        top = 65535.0 if image.mode.startswith("I;16") or arr.max() > 255 else 255.0
        image = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
    if image.mode in ("RGBA", "LA") or (image.mode == "P" and "transparency" in image.info):
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        image = Image.alpha_composite(background, rgba)
    return image.convert("RGB")


def stain_peak(image: Image.Image) -> tuple[float, float] | None:
    """The (x, y) centre, in `image` pixels, of the densest purple stain; None when no spot is stained enough."""
    factor = max(1, min(image.size) // SCORE_SIDE)
    small = image.reduce(factor) if factor > 1 else image  # block means, the short side SCORE_SIDE..2×SCORE_SIDE-1 px
    rgb = np.asarray(small, dtype=np.float32)
    stain = np.maximum(rgb[..., 2] - (rgb[..., 0] + rgb[..., 1]) / 2 - STAIN_FLOOR, 0.0)
    radius = max(1, round(BLUR * min(stain.shape) / 2))
    side = 2 * radius + 1
    # Box sums from an integral image, zero outside the field: a blob cut by the edge weighs less, never more.
    total = np.pad(np.pad(stain, radius).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    sums = total[side:, side:] - total[:-side, side:] - total[side:, :-side] + total[:-side, :-side]
    row, col = np.unravel_index(np.argmax(sums), sums.shape)  # the first maximum: deterministic on ties
    if sums[row, col] / side**2 < MIN_STAIN:
        return None
    # The box sum is flat while the box covers a smaller blob whole: centre on the stain's mass inside the box.
    top, left = max(0, row - radius), max(0, col - radius)
    patch = stain[top : row + radius + 1, left : col + radius + 1]
    weight = patch.sum()
    y = top + (patch.sum(1) @ np.arange(patch.shape[0])) / weight
    x = left + (patch.sum(0) @ np.arange(patch.shape[1])) / weight
    return (x + 0.5) * factor, (y + 0.5) * factor


def cell_box(image: Image.Image) -> tuple[int, int, int, int]:
    """The `cell` window (left, top, right, bottom): a CELL_WINDOW square on the stain peak, inside the image."""
    width, height = image.size
    side = max(1, round(CELL_WINDOW * min(width, height)))
    x, y = stain_peak(image) or (width / 2, height / 2)
    left = min(max(round(x - side / 2), 0), width - side)
    top = min(max(round(y - side / 2), 0), height - side)
    return left, top, left + side, top + side


def fit(image: Image.Image, size: int, mode: str = "pad") -> Image.Image:
    """Resize to `size`×`size`: `pad` keeps the whole field, `crop` keeps the centre, `stretch` neither, `cell`
    the window around the stained cell."""
    if mode == "cell":
        return image.resize((size, size), Image.Resampling.BILINEAR, box=cell_box(image))
    if mode == "stretch":
        return image.resize((size, size), Image.Resampling.BILINEAR)
    if mode == "crop":
        return ImageOps.fit(image, (size, size), Image.Resampling.BILINEAR)
    if mode == "pad":
        return ImageOps.pad(image, (size, size), Image.Resampling.BILINEAR, color=(0, 0, 0))
    raise ValueError(f"resize mode must be one of {RESIZE_MODES}; got {mode!r}")


def decode(data: bytes | str | Path, size: int, mode: str = "pad") -> np.ndarray:
    """Bytes or a path to a `size`×`size`×3 uint8 array; raises ValueError/OSError on unusable input."""
    source = io.BytesIO(data) if isinstance(data, (bytes, bytearray)) else data
    with Image.open(source) as image:
        return decode_opened(image, size, mode)


def decode_opened(image: Image.Image, size: int, mode: str = "pad") -> np.ndarray:
    """`decode` for an image PIL has opened (header read, pixels not yet loaded)."""
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise ValueError(f"image of {width}x{height} pixels is over the {MAX_PIXELS:,}-pixel limit")
    # JPEG can decode at 1/2, 1/4 or 1/8 scale straight from the DCT: several times faster, and
    # draft() never goes below `size` on either side, so the final resize still only shrinks.
    # `cell` keeps a CELL_WINDOW share of the short side, so it asks for that much more.
    wanted = math.ceil(size / CELL_WINDOW) if mode == "cell" else size
    image.draft("RGB", (wanted, wanted))
    image.load()
    return np.asarray(fit(to_rgb8(image), size, mode), dtype=np.uint8)
