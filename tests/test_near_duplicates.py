"""Near-duplicate groups on generated smears with known augmented copies: 8 rotations/flips, 1-pixel
shifts, JPEG re-encoding. The hash, the grouping, and what loading, splitting and `inspect` make of it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from sklearn.metrics import adjusted_rand_score

from bench.data import inspect, load
from bench.data import near_duplicates as nd
from bench.errors import DataError

SIZE = (160, 120)  # not square, so a quarter turn changes the shape
DIHEDRAL = [None, *list(Image.Transpose)[:7]]
CLASSES, SOURCES_PER_CLASS = ("EOS", "NEU"), 6


@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))


def cell_field(seed: int) -> Image.Image:
    """A smooth random 'smear': pale background, 15 soft red discs and one purple blob."""
    rng = np.random.default_rng(seed)
    w, h = SIZE
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
    return Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))


def jpeg(image: Image.Image, quality: int = 70) -> Image.Image:
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def copies(image: Image.Image, rng: np.random.Generator) -> list[Image.Image]:
    """The 8 rotations/flips, 4 shifts of up to 1 pixel, JPEG q70, and a 2-3 px crop + rotation + JPEG."""
    w, h = image.size
    out = [image if t is None else image.transpose(t) for t in DIHEDRAL]
    for _ in range(4):
        dx, dy, ex, ey = rng.integers(0, 2, 4)
        out.append(image.crop((dx, dy, w - ex, h - ey)))
    out.append(jpeg(image))
    out.append(jpeg(image.crop((3, 2, w - 2, h - 3)).transpose(DIHEDRAL[1 + int(rng.integers(7))])))
    return out


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


def test_hash_is_identical_for_all_rotations_and_flips():
    for seed in range(3):
        image = cell_field(seed)
        for variant in (image, jpeg(image).crop((1, 3, 151, 117))):  # odd sizes too
            assert len({nd.image_hash(variant if t is None else variant.transpose(t)) for t in DIHEDRAL}) == 1


def test_hash_is_two_64_bit_ints_the_same_in_any_mode_and_leaves_the_image_alone():
    image = cell_field(7).convert("RGBA")
    before = image.tobytes()
    value = nd.image_hash(image)
    assert len(value) == 2 and all(isinstance(v, int) and 0 <= v < 2 ** 64 for v in value)
    assert nd.from_hex([nd.to_hex(value)]).tolist() == [list(value)]
    assert image.tobytes() == before and image.mode == "RGBA"
    assert nd.image_hash(cell_field(7).convert("L")) == nd.image_hash(cell_field(7)) == value


def test_groups_equal_the_known_sources_and_no_link_joins_two(generated):
    images, sources = generated
    hashes = np.array([nd.image_hash(image) for image in images], dtype=np.uint64)
    found = nd.near_duplicate_groups(hashes)
    assert adjusted_rand_score(sources, found) == 1.0
    i, j = nd.close_pairs(hashes, nd.DEFAULT_THRESHOLD)
    assert len(i) and np.all(sources[i] == sources[j])
    distances = np.bitwise_count(hashes[:, None, :, None] ^ hashes[None, :, None, :]).min(axis=(2, 3))
    assert distances[sources[:, None] != sources[None]].min() > nd.DEFAULT_THRESHOLD  # a margin, not luck
    # one source sits near a moment tie: a 1-pixel shift picks another orientation, the second hash rescues it
    assert adjusted_rand_score(sources, nd.near_duplicate_groups(hashes[:, 0])) < 1.0


def test_close_pairs_equal_brute_force_and_edge_cases():
    rng = np.random.default_rng(1)
    base = rng.integers(0, 2 ** 63, 40, dtype=np.uint64)
    flips = np.left_shift(np.uint64(1), rng.integers(0, 64, 40).astype(np.uint64))
    h = np.concatenate([base, base ^ flips, rng.integers(0, 2 ** 63, 2000, dtype=np.uint64)])
    i, j = nd.close_pairs(h, 5)
    brute_i, brute_j = np.nonzero(np.triu(np.bitwise_count(h[:, None] ^ h[None]) <= 5, 1))
    assert sorted(zip(i.tolist(), j.tolist())) == sorted(zip(brute_i.tolist(), brute_j.tolist()))
    assert nd.near_duplicate_groups(np.zeros(0, np.uint64)).shape == (0,)
    h = np.array([0, 0b111, 0b1111111, 2 ** 64 - 1], dtype=np.uint64)
    assert nd.near_duplicate_groups(h, threshold=3).tolist() == [0, 0, 1, 2]
    with pytest.raises(DataError, match="'threshold' parameter must be an integer between 0 and 64"):
        nd.near_duplicate_groups(h, threshold=65)


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
