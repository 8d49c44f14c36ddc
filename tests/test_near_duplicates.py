"""Near-duplicate groups on generated smears with known augmented copies: 8 rotations/flips, 1-pixel
shifts, JPEG re-encoding, and Keras `ImageDataGenerator`-style draws (rotation up to 20°, shifts up to
10 %, shear, flips, black fill). The grouping, and what loading, splitting and `inspect` make of it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from scipy.ndimage import gaussian_filter
from sklearn.metrics import adjusted_rand_score

from bench.data import inspect, load
from bench.data import near_duplicates as nd
from bench.data import near_duplicates_features as ndf
from bench.errors import DataError

SIZE = (160, 120)  # not square, so a quarter turn changes the shape
DIHEDRAL = [None, *list(Image.Transpose)[:7]]
CLASSES, SOURCES_PER_CLASS = ("EOS", "NEU"), 6


@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))


def cell_field(seed: int, size: tuple[int, int] = SIZE) -> Image.Image:
    """A random 'smear': pale background, 15 soft red discs, one purple blob, and a grain a few pixels
    wide (the texture ORB keypoints need; it survives JPEG)."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[:h, :w].astype(np.float64)
    img = np.empty((h, w, 3))
    img[:] = rng.uniform(200, 235, 3)
    for _ in range(15):
        cx, cy, r = rng.uniform(0, w), rng.uniform(0, h), rng.uniform(8, 16)
        disc = 1 / (1 + np.exp(((xx - cx) ** 2 + (yy - cy) ** 2) ** 0.5 - r))
        img += disc[..., None] * (rng.uniform(150, 200, 3) - img) * 0.8
    cx, cy = rng.uniform(0.3 * w, 0.7 * w), rng.uniform(0.3 * h, 0.7 * h)
    ax, ay = rng.uniform(10, 22, 2)
    img += np.exp(-(((xx - cx) / ax) ** 2 + ((yy - cy) / ay) ** 2))[..., None] * (np.array([110.0, 60, 150]) - img)
    img += gaussian_filter(rng.normal(0, 1, (h, w)), 1.5)[..., None] * 40
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int = 70) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def keras_copy(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Like Keras `ImageDataGenerator(rotation_range=20, width/height_shift_range=0.1, shear_range=0.2,
    horizontal_flip, vertical_flip, fill_mode="constant")`, then JPEG: one affine map, black fill."""
    w, h = image.size
    angle, shear = np.radians(rng.uniform(-20, 20)), rng.uniform(-0.2, 0.2)
    tx, ty = rng.uniform(-0.1, 0.1) * w, rng.uniform(-0.1, 0.1) * h
    rotate = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    m = rotate @ np.array([[1, -np.sin(shear)], [0, np.cos(shear)]])
    centre = np.array([w / 2, h / 2])
    offset = centre - m @ centre + (tx, ty)  # output -> input, as PIL's AFFINE takes it
    out = image.transform(image.size, Image.Transform.AFFINE, (*m[0], offset[0], *m[1], offset[1]),
                          Image.Resampling.BILINEAR, fillcolor=(0, 0, 0))
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    return jpeg(out, quality=int(rng.integers(75, 95)))


def copies(image: Image.Image, rng: np.random.Generator) -> list[Image.Image]:
    """The 8 rotations/flips, 2 shifts of up to 1 pixel, JPEG q70, a 2-3 px crop + rotation + JPEG, and
    2 Keras-style draws."""
    w, h = image.size
    out = [image if t is None else image.transpose(t) for t in DIHEDRAL]
    for _ in range(2):
        dx, dy, ex, ey = rng.integers(0, 2, 4)
        out.append(image.crop((dx, dy, w - ex, h - ey)))
    out.append(jpeg(image))
    out.append(jpeg(image.crop((3, 2, w - 2, h - 3)).transpose(DIHEDRAL[1 + int(rng.integers(7))])))
    return out + [keras_copy(image, rng) for _ in range(2)]


@pytest.fixture(scope="module")
def generated() -> tuple[list[Image.Image], np.ndarray]:
    rng = np.random.default_rng(0)
    images, sources = [], []
    for k in range(len(CLASSES) * SOURCES_PER_CLASS):
        made = copies(cell_field(1000 + k), rng)
        images += made
        sources += [k] * len(made)
    return images, np.array(sources)


def write_folders(root: Path, images: list[Image.Image], sources: np.ndarray) -> Path:
    """Class folders; re-encoded copies as JPEG, the rest as PNG."""
    for i, (image, source) in enumerate(zip(images, sources)):
        folder = root / CLASSES[source // SOURCES_PER_CLASS]
        folder.mkdir(parents=True, exist_ok=True)
        image.save(folder / f"img{i:03d}.{'jpg' if i % 14 >= 12 else 'png'}")
    return root


def features(images: list[Image.Image]) -> ndf.Features:
    return ndf.Features.stack([ndf.image_features(image.copy()) for image in images])


def test_every_copy_groups_with_its_source_and_no_two_sources_merge(generated):
    images, sources = generated
    found = ndf.feature_groups(features(images))
    assert adjusted_rand_score(sources, found) == 1.0


def test_keras_style_copies_are_the_same_field_and_distinct_smears_are_not():
    rng = np.random.default_rng(5)
    originals = [cell_field(2000 + k) for k in range(4)]
    drawn = [keras_copy(image, rng) for image in originals for _ in range(6)]
    f = features(originals + drawn)
    checker = ndf.Checker(f)
    for k in range(4):
        for c in range(6):
            assert checker.same_field(4 + 6 * k + c, k)  # each draw, or its mirror, maps onto its source
        for other in range(4):
            if other != k:
                assert checker.inliers(k, other) < ndf.INLIERS and checker.inliers(4 + 6 * k, other) < ndf.INLIERS
    truth = np.r_[np.arange(4), np.repeat(np.arange(4), 6)]
    assert adjusted_rand_score(truth, ndf.feature_groups(f)) == 1.0


def test_two_smears_of_overlapping_halves_of_one_field_are_one_group_and_distinct_fields_are_not():
    w, h = SIZE
    field = cell_field(3000, (w * 3 // 2, h))  # two smears photograph its left and right two thirds
    left, right = field.crop((0, 0, w, h)), field.crop((w // 2, 0, w * 3 // 2, h))
    rng = np.random.default_rng(0)
    sources = [left, right, cell_field(3001), cell_field(3002)]
    images = [copy for source in sources for copy in [source] + [keras_copy(source, rng) for _ in range(5)]]
    f = features(images)
    assert adjusted_rand_score(np.repeat([0, 0, 1, 2], 6), ndf.feature_groups(f)) == 1.0
    overlaps = ndf.Overlaps(ndf.Checker(f), np.repeat(np.arange(4), 6), ndf.hull_areas(f))  # a group per smear
    assert overlaps.partial(0, 1) and overlaps.partial(1, 0)
    assert not any(overlaps.partial(a, b) for a, b in ((0, 2), (1, 3), (2, 3), (3, 0)))


def test_features_leave_the_image_alone_and_read_any_mode_and_size():
    image = cell_field(7).convert("RGBA")
    before = image.tobytes()
    hist, points, desc, counts = ndf.image_features(image)
    assert image.tobytes() == before and image.mode == "RGBA"
    assert hist.shape == (ndf.BINS ** 3,) and abs(float((hist.astype(np.float32) ** 2).sum()) - 1) < 1e-2
    assert counts.tolist() == [ndf.KEYPOINTS, ndf.KEYPOINTS] and desc.shape == (2, ndf.KEYPOINTS, 32)
    assert points.max() <= ndf.SIDE
    big, small = (ndf.image_features(cell_field(7).resize(size)) for size in ((640, 480), (200, 150)))
    assert ndf.Checker(ndf.Features.stack([big, small])).same_field(0, 1)  # one fixed decode size
    blank = ndf.Features.stack([ndf.image_features(Image.new("L", (50, 40))), None, big])
    assert ndf.feature_groups(blank).tolist() == [0, 1, 2] and ndf.feature_groups(blank.take([2])).tolist() == [0]


def test_loading_groups_copies_and_carved_splits_keep_each_source_in_one_split(tmp_path, generated):
    images, sources = generated
    root = write_folders(tmp_path / "smears", images, sources)
    loaded = load(str(root), image_size=32)
    splits = loaded.dataset.splits
    truth = sources[splits["file"].str.extract(r"img(\d+)")[0].astype(int).to_numpy()]
    assert adjusted_rand_score(truth, splits["group"]) == 1.0
    assert splits.assign(source=truth).groupby("source")["split"].nunique().max() == 1
    assert "12 near-duplicate groups in 168 images (largest 14, 0 singletons)" in loaded.dataset.summary


def test_near_duplicates_turn_off_by_argument_data_option_and_card(tmp_path, generated):
    images, sources = generated
    root = write_folders(tmp_path / "smears", images, sources)
    card = tmp_path / "smears.yaml"
    card.write_text(f"root: {root}\nlayout: class_folders\nnear_duplicates: false\n")
    on = load(str(root), image_size=32).dataset
    for off in (load(str(root), image_size=32, near_duplicates=False).dataset,
                load(f"{root}?near_duplicates=off", image_size=32).dataset, load(str(card), image_size=32).dataset):
        assert (off.splits["group"] == "").all() and off.groups_test is None
        assert "near-duplicate" not in off.summary and off.fingerprint != on.fingerprint
    with pytest.raises(DataError, match="'near_duplicates' parameter must be one of on, true"):
        load(f"{root}?near_duplicates=maybe", image_size=32)


def test_inspect_reports_the_clusters_and_writes_a_thumbnail_sheet(tmp_path, generated):
    images, sources = generated
    root = write_folders(tmp_path / "smears", images, sources)
    sheet = tmp_path / "sheet.png"
    text = inspect(str(root), image_size=32, sheet=sheet)
    assert "near-duplicate clusters: 12 groups (12 of 2+ images, 168 images in them), largest 14 images" in text
    assert f"thumbnail sheet (the 8 largest clusters): {sheet}" in text
    with Image.open(sheet) as png:
        assert png.size == (10 * 64, 8 * 64)
