"""The embedded default dataset "synthetic": seeded, stained-smear-like single-cell images in 8 classes.

Each image is drawn from its own generator seeded by (seed, class, index), so the output is byte-identical
for the same arguments and `n_per_class=100` is a prefix (per class) of `n_per_class=200`. Rendering is
numpy only: shapes are signed distance fields on a normalised coordinate grid ([-1, 1] across the image),
composited as optical densities (Beer-Lambert), so overlapping cells darken the way stained cells do.
`difficulty` in [0, 1] widens stain, illumination, noise and blur jitter, crowds more red cells over the
cell, and pulls each class's morphology toward its neighbours (2-lobed neutrophils, pale eosinophil
granules, sparse basophil granules, big lymphocytes, shallow monocyte notches, notched immature cells).

Calibration (200/class, 64 px, stratified 60% train / 20% validation, measured on 2 shared CPU cores):
a Conv32-Pool-Conv64-Pool-Conv128-GAP-Dense128 CNN, Adam 1e-3, batch 32, 12 epochs, reaches validation
macro-F1 0.975 / 0.91-0.94 / 0.73 at difficulty 0 / 0.5 / 1; logistic regression on 8x8-averaged
pixels scores 0.96 / 0.79 / 0.43. Translation, illumination gradients and white balance are what keep
the pixel model down; the CNN, which pools local colour and texture, is barely affected by them.

The default is 0.8 (it was 0.5, where the default `make search` reached validation macro-F1 0.98-0.997 and
could not show one strategy beating another). `benchmarks/synthetic_calibration.py` (2026-12-01, data as
`make search` loads it, seed 0, 10 epochs, best epoch; `--rows lr --difficulties 0.5,0.7,0.8,0.9,1` at load
average 1-6, `--rows ref,warm,default --difficulties 0.8,1` at load 6-8, the machine shared with other jobs):

| difficulty | LR on 8x8 pixels | keras_sequential_cnn | same, as warm-start trial | scratch_cnn default |
|---:|---:|---:|---:|---:|
| 0.5 | 0.802 | | | |
| 0.7 | 0.656 | | | |
| 0.8 | 0.563 | 0.834 | 0.844 | 0.901 |
| 0.9 | 0.516 | | | |
| 1.0 | 0.472 | 0.719 | 0.752 | 0.826 |

The default search (`python -m bench search`, 10 trials x 10 epochs, 64 px) at 0.8, load average ~7: seed 0
best 0.876 (the warm-start reference trial 0.832) in 532 s; seed 1 best 0.802 (reference 0.779) in 429 s.
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from bench.errors import DataError
from bench.validation import Rules, at_least, between, check

CLASS_NAMES: tuple[str, ...] = (
    "neutrophil", "eosinophil", "basophil", "lymphocyte",
    "monocyte", "erythroblast", "immature_granulocyte", "platelet",
)
MIN_SIZE, MAX_SIZE = 16, 512
CELL_SCALE = 1.1

Rgb = tuple[float, float, float]


@dataclass
class _Canvas:
    """Optical density accumulated over the image, plus this image's stain and jitter draws."""

    u: np.ndarray            # x coordinate of pixel centres, in [-1, 1]
    v: np.ndarray            # y coordinate
    pix: float               # pixel width in the same units
    od: np.ndarray           # (H, W, 3) optical density
    rng: np.random.Generator
    d: float                 # difficulty
    hue: float               # stain jitter shared by every colour in the image
    sat: float
    strength: float

    def od_of(self, rgb: Rgb) -> np.ndarray:
        """Optical density of a stain colour after this image's hue/saturation jitter."""
        h, s, v = colorsys.rgb_to_hsv(*(c / 255.0 for c in rgb))
        jittered = colorsys.hsv_to_rgb((h + self.hue) % 1.0, min(1.0, s * self.sat), v)
        return -np.log(np.clip(np.asarray(jittered), 0.02, 1.0)) * self.strength

    def paint(self, alpha: np.ndarray, rgb: Rgb, amount: float = 1.0) -> None:
        self.od += (alpha * np.float32(amount))[..., None] * self.od_of(rgb).astype(np.float32)

    def local(self, cx: float, cy: float, angle: float) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates in a frame centred at (cx, cy) and rotated by `angle`."""
        x, y, c, s = self.u - cx, self.v - cy, math.cos(angle), math.sin(angle)
        return c * x + s * y, -s * x + c * y

    def soft(self, sdf: np.ndarray, width: float = 1.5) -> np.ndarray:
        """Anti-aliased inside mask of a signed distance field (negative inside)."""
        return np.clip(0.5 - sdf / (width * self.pix), 0.0, 1.0)

    def texture(self, freq: float, n: int = 8) -> np.ndarray:
        """Smooth zero-mean noise of roughly unit variance: a sum of random plane waves."""
        rng, out = self.rng, np.zeros_like(self.u)
        for _ in range(n):
            a = rng.uniform(0, 2 * math.pi)
            f = freq * rng.uniform(0.6, 1.4)
            out += np.cos(f * (math.cos(a) * self.u + math.sin(a) * self.v) + rng.uniform(0, 2 * math.pi))
        return out * math.sqrt(2.0 / n)

    def granules(self, cx: float, cy: float, radius: float, n: int, size: float) -> np.ndarray:
        """Alpha of `n` round granules of radius `size` scattered uniformly in a disc."""
        r = radius * np.sqrt(self.rng.uniform(0, 1, n))
        t = self.rng.uniform(0, 2 * math.pi, n)
        h, w = self.u.shape
        px = (cx + r * np.cos(t) + 1) / self.pix - 0.5
        py = (cy + r * np.sin(t) + 1) / self.pix - 0.5
        field = np.zeros((h + 2, w + 2))
        x0, y0 = np.floor(px).astype(int), np.floor(py).astype(int)
        fx, fy = px - x0, py - y0
        weight = self.rng.uniform(0.6, 1.0, n)
        for dx, dy, wgt in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            np.add.at(field, (np.clip(y0 + dy + 1, 0, h + 1), np.clip(x0 + dx + 1, 0, w + 1)), wgt * weight)
        sigma = max(size / self.pix, 0.5)
        return np.clip(_blur(field, sigma)[1:-1, 1:-1] * 2 * math.pi * sigma**2, 0.0, 1.0)


def _blur(img: np.ndarray, sigma: float) -> np.ndarray:
    """Separable Gaussian blur over the first two axes (reflect padding)."""
    if sigma < 0.3:
        return img
    k = max(1, math.ceil(3 * sigma))
    kernel = np.exp(-0.5 * (np.arange(-k, k + 1) / sigma) ** 2)
    kernel /= kernel.sum()
    h, w = img.shape[:2]
    pad = [(k, k), (k, k)] + [(0, 0)] * (img.ndim - 2)
    p = np.pad(img, pad, mode="reflect" if min(h, w) > k else "edge")
    rows = sum(kernel[i] * p[i:i + h] for i in range(2 * k + 1))
    return sum(kernel[i] * rows[:, i:i + w] for i in range(2 * k + 1))


def _blob_sdf(x: np.ndarray, y: np.ndarray, radius: float, rng: np.random.Generator, wobble: float) -> np.ndarray:
    """Signed distance to a disc whose rim is perturbed by a few low-order harmonics."""
    r = np.hypot(x, y)
    theta = np.arctan2(y, x)
    rim = np.ones_like(r)
    for k in (2, 3, 5):
        rim += wobble * rng.uniform(-1, 1) / k * np.cos(k * theta + rng.uniform(0, 2 * math.pi))
    return r - radius * rim


def _capsule_sdf(x: np.ndarray, y: np.ndarray, a: np.ndarray, b: np.ndarray, radius: float) -> np.ndarray:
    ab = b - a
    t = np.clip(((x - a[0]) * ab[0] + (y - a[1]) * ab[1]) / max(float(ab @ ab), 1e-9), 0.0, 1.0)
    return np.hypot(x - a[0] - t * ab[0], y - a[1] - t * ab[1]) - radius


def _lobe_chain(rng: np.random.Generator, n: int, step: float) -> np.ndarray:
    """Centres of `n` nuclear lobes along a gently curving chain, centred on the origin."""
    heading, turn = rng.uniform(0, 2 * math.pi), rng.choice([-1.0, 1.0])
    points = [np.zeros(2)]
    for _ in range(n - 1):
        heading += turn * rng.uniform(0.3, 1.1)
        points.append(points[-1] + step * np.array([math.cos(heading), math.sin(heading)]))
    pts = np.array(points)
    return pts - pts.mean(axis=0)


def _fit_inside(points: np.ndarray, reach: float) -> np.ndarray:
    """Shrink a lobe chain toward its centre so that no lobe centre lies beyond `reach`."""
    far = float(np.hypot(points[:, 0], points[:, 1]).max())
    return points * min(1.0, reach / max(far, 1e-9))


def _lobed_nucleus(c: _Canvas, x: np.ndarray, y: np.ndarray, n: int, lobe: float, step: float,
                   reach: float) -> np.ndarray:
    centres = _fit_inside(_lobe_chain(c.rng, n, step), reach)
    sdf = np.full_like(x, np.inf)
    for i, (px, py) in enumerate(centres):
        sdf = np.minimum(sdf, _blob_sdf(x - px, y - py, lobe * c.rng.uniform(0.85, 1.1), c.rng, 0.25))
        if i:
            sdf = np.minimum(sdf, _capsule_sdf(x, y, centres[i - 1], centres[i], lobe * 0.3))
    return c.soft(sdf)


def _ambiguity(c: _Canvas) -> float:
    """How far this image's morphology drifts toward a neighbouring class: 0 at difficulty 0."""
    return c.d * c.rng.uniform(0.0, 1.0) ** 1.5


def _cell(c: _Canvas, radius: float, cyto: Rgb, amount: float = 1.0):
    """Draw a cytoplasm and return (local x, local y, radius, cytoplasm alpha, centre) for the nucleus."""
    rng, d = c.rng, c.d
    cx, cy = rng.uniform(-1, 1, 2) * (0.25 + 0.3 * d)
    radius *= CELL_SCALE * rng.uniform(0.92 - 0.08 * d, 1.08 + 0.08 * d)
    x, y = c.local(cx, cy, rng.uniform(0, 2 * math.pi))
    alpha = c.soft(_blob_sdf(x, y, radius, rng, 0.12 + 0.1 * d), 2.0)
    c.paint(alpha * (1 + 0.12 * c.texture(9.0, 3)), cyto, amount)
    return x, y, radius, alpha, (cx, cy)


def _neutrophil(c: _Canvas) -> None:
    x, y, r, cyto, (cx, cy) = _cell(c, 0.56, (228, 208, 228), 1.3)
    c.paint(c.granules(cx, cy, r * 0.9, 50, 0.018) * cyto, (205, 150, 195), 0.5)
    n = 2 if c.rng.uniform() < 0.35 * c.d else int(c.rng.integers(3, 6))
    nucleus = _lobed_nucleus(c, x, y, n, r * 0.26, r * 0.46, r * 0.6)
    c.paint(nucleus * (1 + 0.15 * c.texture(14.0)), (100, 45, 135))


def _eosinophil(c: _Canvas) -> None:
    x, y, r, cyto, (cx, cy) = _cell(c, 0.58, (236, 210, 205))
    amb = _ambiguity(c)
    count = int(170 * (1 - 0.5 * amb))
    hue = tuple(np.array((235, 115, 75)) * (1 - amb) + np.array((205, 150, 195)) * amb)
    c.paint(c.granules(cx, cy, r * 0.92, count, 0.045) * cyto, hue, 1.0)
    n = 3 if c.rng.uniform() < 0.2 * c.d else 2
    c.paint(_lobed_nucleus(c, x, y, n, r * 0.3, r * 0.58, r * 0.5) * (1 + 0.15 * c.texture(14.0)), (105, 55, 140))


def _basophil(c: _Canvas) -> None:
    x, y, r, cyto, (cx, cy) = _cell(c, 0.52, (222, 200, 228))
    n = int(c.rng.integers(2, 4))
    c.paint(_lobed_nucleus(c, x, y, n, r * 0.32, r * 0.45, r * 0.5), (125, 75, 160), 0.8)
    count = int(110 * (1 - 0.6 * _ambiguity(c)))
    c.paint(c.granules(cx, cy, r * 0.95, count, 0.05) * cyto, (55, 20, 85), 1.0)


def _lymphocyte(c: _Canvas) -> None:
    amb = _ambiguity(c)
    x, y, r, cyto, _ = _cell(c, 0.40 * (1 + 0.35 * amb), (150, 185, 235))
    frac = c.rng.uniform(0.78, 0.88) - 0.15 * amb
    off = r * c.rng.uniform(0.0, 0.1)
    nucleus = c.soft(_blob_sdf(x - off, y, r * frac, c.rng, 0.1))
    c.paint(nucleus * (1 + 0.12 * c.texture(16.0)), (80, 40, 125), 1.15)


def _monocyte(c: _Canvas) -> None:
    x, y, r, cyto, _ = _cell(c, 0.70, (172, 184, 216), 1.2)
    for _ in range(int(c.rng.integers(0, 4))):  # vacuoles: clear holes in the cytoplasm
        a, dist = c.rng.uniform(0, 2 * math.pi), r * c.rng.uniform(0.5, 0.8)
        hole = c.soft(_blob_sdf(x - dist * math.cos(a), y - dist * math.sin(a), r * 0.07, c.rng, 0.2))
        c.paint(cyto * hole, (172, 184, 216), -0.8)
    depth = c.rng.uniform(0.25, 0.45) * (1 - 0.8 * _ambiguity(c))
    body = _blob_sdf(x + r * 0.08, y, r * 0.62, c.rng, 0.15)
    notch = _blob_sdf(x - r * (0.54 + 0.4 - depth), y, r * 0.4, c.rng, 0.15)
    nucleus = c.soft(np.maximum(body, -notch), 2.5)
    c.paint(nucleus * (1 + 0.25 * c.texture(20.0)), (140, 100, 175), 0.85)


def _erythroblast(c: _Canvas) -> None:
    amb = _ambiguity(c)
    cyto = tuple(np.array((165, 160, 200)) * (1 - amb) + np.array((150, 185, 235)) * amb)
    x, y, r, _, _ = _cell(c, 0.37, cyto)
    frac = c.rng.uniform(0.5, 0.62) + 0.2 * amb
    nucleus = c.soft(_blob_sdf(x - r * c.rng.uniform(0, 0.15), y, r * frac, c.rng, 0.05))
    c.paint(nucleus, (45, 15, 60), 1.3 - 0.3 * amb)


def _immature_granulocyte(c: _Canvas) -> None:
    x, y, r, cyto, (cx, cy) = _cell(c, 0.68, (226, 196, 216))
    amb = _ambiguity(c)
    c.paint(c.granules(cx, cy, r * 0.92, int(110 * (1 - 0.5 * amb)), 0.03) * cyto, (165, 70, 140), 0.9)
    a, b = r * c.rng.uniform(0.5, 0.6), r * c.rng.uniform(0.36, 0.44)
    off = r * c.rng.uniform(0.1, 0.25)
    body = (np.hypot((x + off) / a, y / b) - 1) * b
    notch = np.hypot(x + off - a * (1.25 - 0.45 * amb), y) - a * 0.45
    nucleus = c.soft(np.maximum(body, -notch))
    c.paint(nucleus * (1 + 0.2 * c.texture(18.0)), (150, 90, 170), 0.85)


def _platelet(c: _Canvas) -> None:
    rng = c.rng
    for _ in range(int(rng.integers(1, 5))):
        cx, cy = rng.uniform(-0.45, 0.45, 2)
        x, y = c.local(cx, cy, 0.0)
        size = rng.uniform(0.08, 0.15)
        c.paint(c.soft(_blob_sdf(x, y, size, rng, 0.5), 2.0), (190, 170, 220), 1.0)
        core = c.granules(cx, cy, size * 0.55, int(rng.integers(5, 12)), 0.022)
        c.paint(core, (120, 60, 150), 0.9)


_RENDERERS: dict[str, Callable[[_Canvas], None]] = {
    "neutrophil": _neutrophil, "eosinophil": _eosinophil, "basophil": _basophil,
    "lymphocyte": _lymphocyte, "monocyte": _monocyte, "erythroblast": _erythroblast,
    "immature_granulocyte": _immature_granulocyte, "platelet": _platelet,
}


def _tint(rgb: Rgb, rng: np.random.Generator, spread: float) -> Rgb:
    """A colour with its own hue, saturation and value jitter, independent of the white-cell stain."""
    h, s, v = colorsys.rgb_to_hsv(*(x / 255.0 for x in rgb))
    h = (h + rng.uniform(-1, 1) * 0.08 * spread) % 1.0
    s = min(1.0, s * math.exp(rng.uniform(-1, 1) * 0.6 * spread))
    v = min(1.0, v * math.exp(rng.uniform(-1, 1) * 0.04 * spread))
    return tuple(255.0 * x for x in colorsys.hsv_to_rgb(h, s, v))


def _red_cells(c: _Canvas, crowded: bool) -> None:
    """Pale pink discs with central pallor, some overlapping the centre cell."""
    rng, d = c.rng, c.d
    colour = _tint((232, 165, 178), rng, 0.3 + 0.7 * d)
    n = int(rng.integers(2, 5 + round(4 * d))) + (1 if crowded else 0)
    for _ in range(n):
        a = rng.uniform(0, 2 * math.pi)
        radius = 0.34 * rng.uniform(0.9, 1.1)
        dist = rng.uniform(0.5 - 0.25 * d, 1.15) + (0.0 if not crowded else rng.uniform(-0.4, 0.0))
        x, y = c.local(dist * math.cos(a) * 1.0, dist * math.sin(a), rng.uniform(0, math.pi))
        x = x / rng.uniform(1.0, 1.15)
        rr = np.hypot(x, y)
        pallor = 1 - rng.uniform(0.4, 0.65) * np.exp(-((rr / (0.5 * radius)) ** 2))
        c.paint(c.soft(rr - radius, 2.0) * pallor, colour, rng.uniform(0.55, 0.8) / c.strength)


def _render(size: int, class_index: int, seed: int, index: int, d: float, grid: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    rng = np.random.default_rng([seed, class_index, index])
    zoom = math.exp(rng.uniform(-1, 1) * (0.12 + 0.15 * d))  # magnification: scales every object alike
    c = _Canvas(u=grid[0] / zoom, v=grid[1] / zoom, pix=2.0 / size / zoom, od=np.zeros((size, size, 3), np.float32), rng=rng,
                d=d, hue=rng.uniform(-1, 1) * (0.02 + 0.04 * d),
                sat=rng.uniform(0.85 - 0.2 * d, 1.1 + 0.1 * d),
                strength=math.exp(rng.uniform(-1, 1) * (0.1 + 0.15 * d)))
    name = CLASS_NAMES[class_index]
    _red_cells(c, crowded=name == "platelet")
    _RENDERERS[name](c)
    tint = _tint((236, 222, 232), rng, 0.3 + 0.7 * d)
    background = -np.log(np.asarray(tint) / 255.0)
    g = rng.uniform(-1, 1, 2) * (0.1 + 0.3 * d)
    light = (rng.uniform(0.78 - 0.12 * d, 1.05) * (1 + g[0] * c.u + g[1] * c.v)
             * (1 - rng.uniform(0, 0.1 + 0.2 * d) * (c.u**2 + c.v**2) / 2))
    white = np.exp(rng.uniform(-1, 1, 3) * (0.02 + 0.04 * d))  # camera white balance
    img = 255.0 * light[..., None] * white * np.exp(-(c.od + background))
    img = _blur(img, rng.uniform(0.3, 0.5 + 0.7 * d) * size / 64)
    img += rng.normal(0.0, 1.5 + 4.0 * d, img.shape)
    return np.clip(img + 0.5, 0, 255).astype(np.uint8)


RULES: Rules = (
    ("n_per_class", at_least(1)),
    ("image_size", between(MIN_SIZE, MAX_SIZE)),
    ("seed", at_least(0)),
    ("difficulty", between(0, 1, integer=False)),
)


def generate(n_per_class: int = 200, image_size: int = 64, *, seed: int = 0,
             difficulty: float = 0.8) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """images uint8 (N, image_size, image_size, 3), labels int64 (N,), class names; N = 8*n_per_class, ordered by class then index."""
    values = {"n_per_class": n_per_class, "image_size": image_size, "seed": seed, "difficulty": difficulty}
    check(RULES, {k: v.item() if isinstance(v, np.generic) else v for k, v in values.items()}, error=DataError)
    size = int(image_size)
    axis = (np.arange(size) + 0.5) * (2.0 / size) - 1.0
    grid = tuple(g.astype(np.float32) for g in np.meshgrid(axis, axis))  # float32: ~2x faster, ample precision
    images = np.empty((len(CLASS_NAMES) * n_per_class, size, size, 3), dtype=np.uint8)
    for k in range(len(CLASS_NAMES)):
        for i in range(n_per_class):
            images[k * n_per_class + i] = _render(size, k, int(seed), i, float(difficulty), grid)
    labels = np.repeat(np.arange(len(CLASS_NAMES), dtype=np.int64), n_per_class)
    return images, labels, list(CLASS_NAMES)
