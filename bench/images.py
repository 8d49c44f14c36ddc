"""Decode any common microscope image into a fixed-size 8-bit RGB array, the same way in training and serving."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

RESIZE_MODES = ("pad", "crop", "stretch")
MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 1024  # the side, in pixels, a model may take
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff")
# Refuse images whose pixel count suggests a decompression bomb (PIL warns at ~89 M).
MAX_PIXELS = 64_000_000


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


def fit(image: Image.Image, size: int, mode: str = "pad") -> Image.Image:
    """Resize to `size`×`size`: `pad` keeps the whole field, `crop` keeps the centre, `stretch` neither."""
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
    image.draft("RGB", (size, size))
    image.load()
    return np.asarray(fit(to_rgb8(image), size, mode), dtype=np.uint8)
