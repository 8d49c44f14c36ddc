"""The public data entry: `load_dataset(data, ...) -> Dataset`, `inspect(data, ...)`, `class_weights`.

`data` is "synthetic" (options: `synthetic?n_per_class=100&difficulty=0.7`), `medmnist:<name>@<size>`,
a dataset card (a name in `datasets/` or a path to a .yaml), a MedMNIST `.npz`, or a directory whose
layout is detected (split folders, file-name labels, class folders); see `bench.layouts` and
`datasets/README.md`. Images are decoded once into a memory-mapped cache, unusable files are
skipped with a reason, and the splits never let a group (a source smear, a patient) span two of
train, validation and test.
"""

from __future__ import annotations

import hashlib
import logging
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
from sklearn.utils.class_weight import compute_class_weight

import bench.array_sources  # noqa: F401  (registers synthetic, medmnist, npz)
import bench.cards  # noqa: F401  (registers dataset cards)
from bench.datacache import decode_files
from bench.errors import ConfigError, DataError
from bench.images import RESIZE_MODES
from bench.layouts import Source, content_fingerprint, detect_layout
from bench.splits import SPLITS, assign_splits, check_trainable, effective_groups, group_leaks

log = logging.getLogger("bench.data")
SKIPPED_COLUMNS = ["file", "reason"]
SPLIT_COLUMNS = ["file", "class", "group", "split"]


@dataclass
class Dataset:
    name: str
    class_names: list[str]
    image_size: int
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    fingerprint: str  # content + image size + resize mode + split rule and seed
    splits: pd.DataFrame  # file, class, group, split: one row per image used
    skipped: pd.DataFrame  # file, reason
    summary: str
    groups_test: np.ndarray | None = None
    resize_mode: str = "pad"  # how images were fitted to image_size; serving must do the same


@dataclass
class Loaded:
    """A Dataset plus what `inspect` reports: the per-image table and the source's notes."""

    dataset: Dataset
    table: pd.DataFrame  # file, class, group, official, sha1, width, height, split
    layout: str
    notes: list[str]
    rule: str
    from_cache: bool


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced weights (n / (k · count)) for the classes present; 1.0 for absent ones."""
    present = np.unique(y)
    weights = compute_class_weight("balanced", classes=present, y=y)
    by_class = dict(zip(present.tolist(), weights.tolist()))
    return {i: float(by_class.get(i, 1.0)) for i in range(n_classes)}


def _check_arguments(image_size: int, resize_mode: str | None) -> None:
    if not isinstance(image_size, int) or not 8 <= image_size <= 1024:
        raise ConfigError(f"image_size must be an integer from 8 to 1024; got {image_size!r}")
    if resize_mode is not None and resize_mode not in RESIZE_MODES:
        raise ConfigError(f"resize_mode must be one of {list(RESIZE_MODES)}; got {resize_mode!r}")


def _materialise(source: Source, image_size: int, mode: str) -> tuple[np.ndarray, pd.DataFrame, list, bool]:
    """Pixels and per-image table (file, class, official, group, sha1, width, height) of a source."""
    if source.x is not None:
        x = source.x
        table = source.table.copy()
        table["sha1"] = [hashlib.sha1(img.tobytes()).hexdigest() for img in x]
        table["width"], table["height"] = x.shape[2], x.shape[1]
        return x, table, list(source.skipped), False
    files = source.files
    if files.empty:
        raise DataError(f"no usable images in {source.root} ({source.layout} layout; "
                        f"{len(source.skipped)} files skipped: {_reason_counts(source.skipped) or 'none found'})")
    if files["class"].nunique() < 2:
        raise DataError(f"a classifier needs at least 2 classes; {source.root} has 1 ({files['class'].iloc[0]})")
    decoded = decode_files(files, image_size, mode)
    ok = decoded.index["ok"].to_numpy()
    skipped = list(source.skipped) + list(zip(files["file"][~ok], decoded.index["reason"][~ok]))
    table = files.loc[ok, ["file", "class", "official", "group"]].reset_index(drop=True)
    for column in ("sha1", "width", "height"):
        table[column] = decoded.index.loc[ok, column].to_numpy()
    return decoded.images, table, skipped, decoded.from_cache


def _kind(reason: str) -> str:
    return re.split(r" \(|: | '", reason)[0]


def _reason_counts(skipped: list[tuple[str, str]]) -> str:
    counts = pd.Series([_kind(r) for _, r in skipped], dtype=object).value_counts()
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())


def _fingerprint(source: Source, image_size: int, mode: str, rule: str, seed: int, fractions) -> str:
    text = f"{content_fingerprint(source)}|{image_size}|{mode}|{rule}|{seed}|{fractions}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cross_class_duplicates(table: pd.DataFrame) -> pd.DataFrame:
    """Rows whose bytes (or pixels, for array sources) are identical to a row of another class."""
    classes = table.groupby("sha1")["class"].transform("nunique")
    return table[classes > 1].sort_values(["sha1", "class"])


def load(data: str, *, image_size: int = 64, seed: int = 0, val_fraction: float = 0.2,
         test_fraction: float = 0.2, resize_mode: str | None = None) -> Loaded:
    """`load_dataset` with the per-image details that `inspect` reports."""
    _check_arguments(image_size, resize_mode)
    layout = detect_layout(data)
    source = layout.load(data, image_size=image_size, seed=seed, options=None)
    mode = resize_mode or source.resize_mode
    x_all, table, skipped, from_cache = _materialise(source, image_size, mode)

    keep, dropped = group_leaks(table, source.options.get("group_leak", "drop"))
    table = table[keep].reset_index(drop=True)
    rows = np.flatnonzero(keep)
    class_names = list(source.class_names)
    index = {name: i for i, name in enumerate(class_names)}
    y = table["class"].map(index).to_numpy(dtype=np.int64)
    split, rule = assign_splits(table, y, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction)
    check_trainable(table["class"].to_numpy(), split, class_names)
    table["split"] = split

    arrays = {}
    for part in SPLITS:
        mask = split == part
        arrays[part] = (np.asarray(x_all[rows[mask]]), y[mask])
    groups = effective_groups(table)
    if skipped or dropped:
        bits = [f"skipped {len(skipped)} unusable files ({_reason_counts(skipped)})"] if skipped else []
        bits += [f"dropped {len(dropped)} images whose group is also in a higher official split"] if dropped else []
        log.warning("data: %s; see skipped_files.csv", "; ".join(bits))
    duplicates = cross_class_duplicates(table)
    if len(duplicates):
        log.warning("data: %d byte-identical files appear under more than one class (see `data inspect`)",
                    duplicates["sha1"].nunique())

    counts = " / ".join(f"{part} {int((split == part).sum()):,}" for part in SPLITS)
    group_counts = (" / ".join(str(len(set(groups[split == part]))) for part in SPLITS) + " groups"
                    if groups is not None else "no groups")
    summary = (f"data {data}: {source.layout}, {len(class_names)} classes, {counts} images, {group_counts}, "
               f"{image_size}px {mode}, {len(skipped) + len(dropped)} skipped"
               + (f", {duplicates['sha1'].nunique()} cross-class duplicates" if len(duplicates) else "")
               + (" (cached)" if from_cache else ""))
    dataset = Dataset(
        name=data, class_names=class_names, image_size=image_size,
        x_train=arrays["train"][0], y_train=arrays["train"][1],
        x_val=arrays["val"][0], y_val=arrays["val"][1],
        x_test=arrays["test"][0], y_test=arrays["test"][1],
        fingerprint=_fingerprint(source, image_size, mode, rule, seed, (val_fraction, test_fraction)),
        resize_mode=mode,
        splits=pd.DataFrame({"file": table["file"], "class": table["class"],
                             "group": groups if groups is not None else "", "split": split})[SPLIT_COLUMNS],
        skipped=pd.DataFrame(skipped + dropped, columns=SKIPPED_COLUMNS),
        summary=summary,
        groups_test=None if groups is None else np.asarray(groups[split == "test"]),
    )
    return Loaded(dataset, table, source.layout, source.notes, rule, from_cache)


def load_dataset(data: str, *, image_size: int = 64, seed: int = 0, val_fraction: float = 0.2,
                 test_fraction: float = 0.2, resize_mode: str | None = None) -> Dataset:
    """Load, decode (cached), split and check a dataset; see the module docstring for `data`."""
    return load(data, image_size=image_size, seed=seed, val_fraction=val_fraction,
                test_fraction=test_fraction, resize_mode=resize_mode).dataset


def inspect(data: str, *, image_size: int = 64, seed: int = 0) -> str:
    """The report `python -m bench data inspect --data …` prints."""
    from bench.inspect_data import report

    return report(load(data, image_size=image_size, seed=seed))
