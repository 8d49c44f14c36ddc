"""Every layout, every bad-file kind, grouping, the cache and the one-line errors, on tiny generated images."""

from __future__ import annotations

import logging
import os
import shutil
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from bench.data import cache, class_weights, inspect, load, load_dataset
from bench.errors import DataError
from bench.data import detect_layout, list_layouts
from bench.data.splits import exclusions

FORMATS = {"png": "PNG", "jpg": "JPEG", "bmp": "BMP", "tif": "TIFF"}


@pytest.fixture(autouse=True)
def data_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache"


def write_image(path: Path, seed: int, *, size=(24, 18), mode="RGB") -> Path:
    """A small distinct image: random 2-pixel blocks, detailed enough that JPEG keeps files distinct
    and that no two images are near-duplicates of each other."""
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    blocks = rng.integers(0, 256, (9, 12, 3), dtype=np.uint8)
    rgb = Image.fromarray(np.kron(blocks, np.ones((2, 2, 1), np.uint8))).resize(size)
    image = rgb if mode == "RGB" else rgb.convert(mode)
    image.save(path, FORMATS[path.suffix.lstrip(".").lower()])
    return path


def class_folders(root: Path, counts: dict[str, int], start: int = 0) -> Path:
    exts = list(FORMATS)
    for c, (name, n) in enumerate(counts.items()):
        for i in range(n):
            write_image(root / name / f"img{i}.{exts[(c + i) % len(exts)]}", start + 1000 * c + i)
    return root


def make_class_folders(tmp_path: Path) -> str:
    return str(class_folders(tmp_path / "cells", {"ALPHA": 10, "BETA": 10, "GAMMA": 10}))


def make_split_folders(tmp_path: Path) -> str:
    root = tmp_path / "splitset"
    class_folders(root / "TRAIN", {"A": 10, "B": 10})
    class_folders(root / "Valid", {"A": 3, "B": 3}, start=100)
    class_folders(root / "test", {"A": 3, "B": 3}, start=200)
    class_folders(root / "test_simple", {"A": 2, "B": 2}, start=300)  # not a split: ignored
    return str(root)


def make_filename_labels(tmp_path: Path) -> str:
    root = tmp_path / "cnmc"
    for patient in range(1, 7):
        for label, prefix in (("all", "UID_"), ("hem", "UID_H")):
            for image in range(3):
                fold = f"fold_{patient % 3}"
                write_image(root / fold / label / f"{prefix}{patient}_{image}_1_{label}.bmp", patient * 100 + image + (50 if label == "hem" else 0))
    return str(root)


def make_card(tmp_path: Path) -> str:
    root = tmp_path / "store" / "smears"
    class_folders(root / "train", {"EOS": 12, "NEU": 12})
    class_folders(root / "test", {"EOS": 4, "NEU": 4}, start=500)
    rows = [(f"train/{c}/{p.name}", f"{c}-smear{i % 4}") for c in ("EOS", "NEU")
            for i, p in enumerate(sorted((root / "train" / c).iterdir()))]
    rows += [(f"test/{c}/{p.name}", f"{c}-test{i % 2}") for c in ("EOS", "NEU")
             for i, p in enumerate(sorted((root / "test" / c).iterdir()))]
    pd.DataFrame(rows, columns=["file", "group_id"]).to_csv(root / "provenance.csv", index=False)
    card = tmp_path / "cards" / "smears.yaml"
    card.parent.mkdir()
    card.write_text("name: smears\nroot: ../store/smears\nlayout: split_folders\nsplits: {train: train, test: test}\n"
                    "groups: {csv: provenance.csv, file_column: file, group_column: group_id}\nresize_mode: crop\n")
    return str(card)


def make_npz(tmp_path: Path) -> str:
    rng = np.random.default_rng(0)
    arrays = {}
    for split, n in (("train", 40), ("val", 10), ("test", 10)):
        arrays[f"{split}_images"] = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(n) % 4).reshape(-1, 1)
    path = tmp_path / "bloodmnist_28.npz"
    np.savez(path, **arrays)
    return str(path)


FIXTURES = {
    "synthetic": lambda tmp_path: "synthetic?n_per_class=8",
    "card": make_card,
    "medmnist_npz": make_npz,
    "split_folders": make_split_folders,
    "filename_labels": make_filename_labels,
    "class_folders": make_class_folders,
}


def test_every_registered_layout_has_a_fixture():
    assert set(list_layouts()) - {"medmnist"} == set(FIXTURES)


@pytest.mark.parametrize("layout", [name for name in list_layouts() if name in FIXTURES])
def test_layout_is_detected_and_loads_into_three_splits(layout, tmp_path):
    data = FIXTURES[layout](tmp_path)
    assert detect_layout(data).name == layout
    ds = load_dataset(data, image_size=32, seed=1)
    for x, y in ((ds.x_train, ds.y_train), (ds.x_val, ds.y_val), (ds.x_test, ds.y_test)):
        assert x.dtype == np.uint8 and x.shape[1:] == (32, 32, 3) and len(x) == len(y) > 0
        assert y.dtype == np.int64 and set(np.unique(y)) == set(range(len(ds.class_names)))
    assert list(ds.splits.columns) == ["file", "class", "group", "split"]
    assert len(ds.splits) == len(ds.y_train) + len(ds.y_val) + len(ds.y_test)
    assert list(ds.skipped.columns) == ["file", "reason"]
    assert "\n" not in ds.summary and ds.summary.startswith(f"data {data}:")
    assert len(ds.fingerprint) == 16


def test_split_folders_honour_official_splits_case_insensitively(tmp_path):
    ds = load(make_split_folders(tmp_path), image_size=16)
    counts = ds.dataset.splits["split"].value_counts().to_dict()
    assert counts == {"train": 20, "val": 6, "test": 6}
    assert not ds.dataset.splits["file"].str.startswith("test_simple").any()
    assert "ignored folders: test_simple" in ds.notes


def test_filename_labels_map_all_and_hem_and_group_by_patient(tmp_path):
    ds = load_dataset(make_filename_labels(tmp_path), image_size=16)
    assert ds.class_names == ["ALL", "HEM"]
    assert set(ds.splits["group"]) == {f"UID_{p}" for p in range(1, 7)} | {f"UID_H{p}" for p in range(1, 7)}
    assert ds.splits.groupby("group")["split"].nunique().max() == 1
    assert ds.groups_test is not None and set(ds.groups_test) <= set(ds.splits.loc[ds.splits.split == "test", "group"])


def test_card_groups_never_span_two_splits(tmp_path):
    ds = load_dataset(make_card(tmp_path), image_size=16)
    assert ds.splits.groupby("group")["split"].nunique().max() == 1
    assert set(ds.splits.loc[ds.splits.split == "test", "file"].str[:5]) == {"test/"}
    assert (ds.splits["split"] == "val").sum() > 0


def test_card_drops_train_copies_of_a_group_in_the_official_test(tmp_path):
    card = make_card(tmp_path)
    csv = tmp_path / "store" / "smears" / "provenance.csv"
    frame = pd.read_csv(csv)
    frame.loc[frame.file.str.startswith("train/EOS/img0"), "group_id"] = "EOS-test0"  # one train copy of a test smear
    frame.to_csv(csv, index=False)
    ds = load_dataset(card, image_size=16)
    assert list(ds.skipped["file"]) == ["train/EOS/img0.png"]
    assert ds.skipped["reason"].iloc[0] == "group leak: EOS-test0 is also in the official test split"
    assert ds.splits.groupby("group")["split"].nunique().max() == 1


def test_card_exclude_drops_a_group_or_a_file_with_its_reason_and_a_typo_is_one_line(tmp_path):
    card = Path(make_card(tmp_path))
    plain = load_dataset(str(card), image_size=16)
    card.write_text(card.read_text() + "exclude:\n  NEU-smear1: one cell, two labels\n  train/EOS/img0.png: out of focus\n")
    ds = load_dataset(str(card), image_size=16)
    neu1 = plain.splits.loc[plain.splits.group == "NEU-smear1", "file"].tolist()
    assert len(neu1) == 3 and sorted(ds.skipped["file"]) == sorted(neu1 + ["train/EOS/img0.png"])
    assert set(ds.skipped["reason"]) == {"excluded: one cell, two labels", "excluded: out of focus"}
    assert not set(ds.skipped["file"]) & set(ds.splits["file"]) and len(ds.splits) == len(plain.splits) - 4
    assert ds.fingerprint != plain.fingerprint
    card.write_text(card.read_text().replace("NEU-smear1:", "NEU-smear9:"))
    with pytest.raises(DataError, match=r"exclude: 'NEU-smear9' is neither a group nor a file of this dataset$"):
        load_dataset(str(card), image_size=16)


def test_exclude_lists_only_rows_not_already_dropped():
    table = pd.DataFrame({"file": ["a.png", "b.png", "c.png"], "group": ["g1", "g1", "g2"]})
    keep, dropped = exclusions(table, {"g1": "two labels"}, np.array([False, True, True]))  # a.png: a group leak
    assert keep.tolist() == [False, False, True] and dropped == [("b.png", "excluded: two labels")]


def test_bare_card_name_resolves_in_the_cards_dir_and_root_in_bench_data_dir(tmp_path, monkeypatch):
    card = Path(make_card(tmp_path))
    card.write_text(card.read_text().replace("root: ../store/smears", "root: somewhere/else/smears"))
    monkeypatch.setattr("bench.paths.DATASET_CARDS_DIR", card.parent)
    monkeypatch.setenv("BENCH_DATA_DIR", str(tmp_path / "store"))
    ds = load_dataset("smears", image_size=16)
    assert ds.name == "smears" and ds.class_names == ["EOS", "NEU"]


def test_npz_gray_images_become_rgb_at_the_requested_size(tmp_path):
    ds = load_dataset(make_npz(tmp_path), image_size=20)
    assert ds.x_train.shape == (40, 20, 20, 3) and len(ds.y_val) == 10 and len(ds.y_test) == 10
    assert ds.class_names[:2] == ["basophil", "eosinophil"]
    assert np.array_equal(ds.x_train[..., 0], ds.x_train[..., 2])


def test_synthetic_options_and_bad_option(tmp_path):
    ds = load_dataset("synthetic?n_per_class=10&difficulty=0.3", image_size=16, seed=3)
    assert len(ds.class_names) == 8 and len(ds.y_train) + len(ds.y_val) + len(ds.y_test) == 80
    with pytest.raises(DataError, match="synthetic option must be one of"):
        load_dataset("synthetic?colour=red")


def test_synthetic_test_split_is_fixed_by_the_seed():
    a, b = load_dataset("synthetic?n_per_class=10", image_size=16), load_dataset("synthetic?n_per_class=10", image_size=16)
    assert a.fingerprint == b.fingerprint and np.array_equal(a.x_test, b.x_test)
    c = load_dataset("synthetic?n_per_class=10", image_size=16, seed=1)
    assert c.fingerprint != a.fingerprint


def test_medmnist_without_the_package_stops_with_one_line():
    pytest.importorskip("bench.data.loading")
    try:
        import medmnist  # noqa: F401
        pytest.skip("medmnist is installed; the download path needs the network")
    except ImportError:
        pass
    with pytest.raises(DataError, match="pip install medmnist") as err:
        load_dataset("medmnist:bloodmnist@64")
    assert "\n" not in str(err.value)


# ---------------------------------------------------------------- bad files


def _png_with_size(path: Path, width: int, height: int) -> None:
    """A valid tiny PNG whose header claims `width`×`height` (a decompression bomb's signature)."""
    write_image(path, 0, size=(2, 2))
    data = bytearray(path.read_bytes())
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    path.write_bytes(bytes(data))


BAD_FILES = {
    "empty.png": "zero bytes",
    "trunc.jpg": "truncated image",
    "fake.png": "not an image",
    "bomb.png": "decompression bomb",
    ".DS_Store": "hidden file",
    "notes.txt": "unsupported extension",
    "gone.png": "broken symlink",
}


def make_bad_files(folder: Path) -> None:
    (folder / "empty.png").write_bytes(b"")
    good = write_image(folder / "source.jpg", 99, size=(200, 150)).read_bytes()
    (folder / "source.jpg").unlink()
    (folder / "trunc.jpg").write_bytes(good[: len(good) // 2])
    (folder / "fake.png").write_text("this is not a picture")
    _png_with_size(folder / "bomb.png", 9000, 9000)
    (folder / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (folder / "notes.txt").write_text("notes")
    os.symlink(folder / "does-not-exist.png", folder / "gone.png")


def test_every_bad_file_kind_is_skipped_with_its_reason(tmp_path, caplog):
    root = class_folders(tmp_path / "bad", {"A": 10, "B": 10})
    make_bad_files(root / "A")
    with caplog.at_level(logging.WARNING, logger="bench.data.loading"):
        ds = load_dataset(str(root), image_size=16)
    reasons = dict(zip(ds.skipped["file"], ds.skipped["reason"]))
    assert {Path(f).name for f in reasons} == set(BAD_FILES)
    for name, kind in BAD_FILES.items():
        assert reasons[f"A/{name}"].startswith(kind), (name, reasons[f"A/{name}"])
    assert len(ds.splits) == 20
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "skipped 7 unusable files" in warnings[0] and "\n" not in warnings[0]


def test_image_modes_and_formats_all_decode_to_rgb8(tmp_path):
    root = tmp_path / "modes"
    for i, mode in enumerate(["L", "RGBA", "P", "CMYK", "I;16", "RGB"]):
        for c in ("A", "B"):
            ext = {"CMYK": "jpg", "I;16": "png", "RGBA": "png", "P": "bmp"}.get(mode, "tif")
            for k in range(5):
                write_image(root / c / f"{mode.replace(';', '')}_{k}.{ext}", i * 100 + k + (50 if c == "B" else 0), mode=mode)
    ds = load_dataset(str(root), image_size=16)
    assert len(ds.splits) == 60 and ds.skipped.empty and ds.x_train.dtype == np.uint8


# ---------------------------------------------------------------- untrainable data: one line each


@pytest.mark.parametrize("build, message", [
    (lambda root: class_folders(root, {"A": 10}), "at least 2 classes"),
    (lambda root: class_folders(root, {"A": 10, "B": 1}), "class 'B' has no images in the"),
    (lambda root: (root / "A").mkdir(parents=True) or (root / "A" / "x.png").write_bytes(b""), "no usable images"),
    (lambda root: root.mkdir(), "no image layout recognised"),
    (lambda root: None, "is not 'synthetic'"),
])
def test_untrainable_data_stops_with_one_line(tmp_path, build, message):
    root = tmp_path / "data"
    build(root)
    with pytest.raises(DataError, match=message) as err:
        load_dataset(str(root), image_size=16)
    assert "\n" not in str(err.value)


def test_card_with_unknown_key_stops_with_one_line(tmp_path):
    card = Path(make_card(tmp_path))
    card.write_text(card.read_text() + "colour: blue\n")
    with pytest.raises(DataError, match=r"The 'key' parameter must be one of .* Got 'colour' instead"):
        load_dataset(str(card))


# ---------------------------------------------------------------- cache, fingerprint, inspect


def test_second_load_comes_from_the_cache_and_a_changed_file_changes_the_fingerprint(tmp_path, data_cache):
    root = Path(make_class_folders(tmp_path))
    first = load(str(root), image_size=16)
    second = load(str(root), image_size=16)
    assert not first.from_cache and second.from_cache
    assert first.dataset.fingerprint == second.dataset.fingerprint
    assert np.array_equal(first.dataset.x_train, second.dataset.x_train)
    assert isinstance(np.load(next(data_cache.glob("decoded/*/images.npy")), mmap_mode="r"), np.memmap)
    write_image(root / "ALPHA" / "img0.png", 12345)
    os.utime(root / "ALPHA" / "img0.png", ns=(1, 1))
    third = load(str(root), image_size=16)
    assert not third.from_cache and third.dataset.fingerprint != first.dataset.fingerprint
    assert load(str(root), image_size=24).dataset.fingerprint != third.dataset.fingerprint
    assert not list(data_cache.glob("decoded/.tmp-*"))


def test_a_copied_dataset_has_the_same_fingerprint_and_a_changed_pixel_another(tmp_path):
    """Content, not mtimes or the root: another machine's copy of the files gives the same fingerprint."""
    original = Path(make_card(tmp_path)).parent.parent / "store" / "smears"
    copy = tmp_path / "elsewhere" / "smears"
    shutil.copytree(original, copy)
    for path in copy.rglob("*"):
        os.utime(path, ns=(10**18, 10**18))  # new mtimes, as a copy to another machine would have
    first, copied = load(str(original), image_size=16), load(str(copy), image_size=16)
    assert not copied.from_cache and copied.dataset.fingerprint == first.dataset.fingerprint
    image = copy / "train" / "EOS" / "img0.png"
    pixels = np.asarray(Image.open(image)).copy()
    pixels[0, 0, 0] ^= 1
    Image.fromarray(pixels).save(image)
    assert load(str(copy), image_size=16).dataset.fingerprint != first.dataset.fingerprint


def test_an_interrupted_decode_leaves_no_cache_entry(tmp_path, data_cache, monkeypatch):
    root = make_class_folders(tmp_path)

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr("bench.data.cache._decode_chunk", interrupted)
    with pytest.raises(KeyboardInterrupt):
        load_dataset(root, image_size=16)
    assert [p.name for p in (data_cache / "decoded").iterdir() if not p.name.endswith(".lock")] == []
    monkeypatch.undo()
    monkeypatch.setenv("BENCH_CACHE_DIR", str(data_cache))
    assert not load(root, image_size=16).from_cache


def test_inspect_reports_counts_sizes_and_cross_class_duplicates(tmp_path):
    root = class_folders(tmp_path / "dups", {"A": 10, "B": 10})
    (root / "B" / "copy.png").write_bytes((root / "A" / "img0.png").read_bytes())
    text = inspect(str(root), image_size=16)
    assert "images per class and split:" in text and "24x18 (21)" in text
    assert "1 sets span more than one class" in text
    assert "near-duplicate clusters: 20 groups (1 of 2+ images, 2 images in them), largest 2 images" in text
    assert "groups: none known" in inspect(f"{root}?near_duplicates=off", image_size=16)


def test_class_weights_are_balanced():
    weights = class_weights(np.array([0, 0, 0, 1]), 3)
    assert weights == pytest.approx({0: 4 / 6, 1: 2.0, 2: 1.0})


def test_card_labels_csv_and_class_mapping(tmp_path):
    root = class_folders(tmp_path / "flat", {"raw": 12})
    files = sorted(p.name for p in (root / "raw").iterdir())
    pd.DataFrame({"file": [f"raw/{f}" for f in files[:10]], "label": ["x", "y"] * 5}).to_csv(root / "labels.csv", index=False)
    card = tmp_path / "flat.yaml"
    card.write_text("root: flat\nlayout: class_folders\nlabels: {csv: labels.csv, file_column: file, class_column: label}\n")
    ds = load_dataset(str(card), image_size=16, val_fraction=0.2, test_fraction=0.2)
    assert ds.class_names == ["x", "y"] and len(ds.splits) == 10
    assert sorted(ds.skipped["reason"]) == ["no label in the labels csv"] * 2


def test_an_image_beside_the_class_folders_is_skipped_but_a_readme_is_not(tmp_path):
    root = class_folders(tmp_path / "c", {"A": 10, "B": 10})
    write_image(root / "stray.png", 7)
    (root / "README.md").write_text("about")
    ds = load_dataset(str(root), image_size=16)
    assert ds.skipped.values.tolist() == [["stray.png", "not in a class folder"]]


def test_card_classes_rename_and_select_folders(tmp_path):
    make_class_folders(tmp_path)
    card = tmp_path / "pick.yaml"
    card.write_text("root: cells\nlayout: class_folders\nclasses: {ALPHA: alpha, BETA: beta}\n")
    ds = load_dataset(str(card), image_size=16)
    assert ds.class_names == ["alpha", "beta"] and len(ds.splits) == 20


@pytest.mark.skipif(cache.WORKERS < 2, reason="one CPU: images are decoded in process, no worker re-imports a script")
def test_a_script_without_a_main_guard_stops_with_one_clear_line_instead_of_hanging(tmp_path, data_cache):
    """The decoders are spawned, so they re-import the caller's script; before, a script whose top level loaded
    data waited for ever (its workers wait for the cache lock the parent holds while it waits for them)."""
    root = class_folders(tmp_path / "many", {"A": 210, "B": 210})  # 420 files: over POOL_MIN_FILES, so the pool
    script = tmp_path / "unguarded.py"
    script.write_text(f"from bench.data import load\nload({str(root)!r}, image_size=16)\n")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode != 0
    assert 'put its code under `if __name__ == "__main__":`' in done.stderr.splitlines()[-1]
    assert not list(data_cache.glob("decoded/.tmp-*")) and not list(data_cache.glob("decoded/*/index.csv"))
