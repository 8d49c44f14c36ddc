"""Loading: `load_dataset(data, ...) -> Dataset`, `load` (with the per-image details), `class_weights`.

`data` is "synthetic" (options: `synthetic?n_per_class=100&difficulty=0.7`), `medmnist:<name>@<size>`,
a dataset card (a name in `datasets/` or a path to a .yaml), a MedMNIST `.npz`, or a directory whose
layout is detected (split folders, file-name labels, class folders); see `bench.data.layouts` and
`datasets/README.md`. Images are decoded once into a memory-mapped cache, unusable files are
skipped with a reason, and the splits never let a group (a source smear, a patient) span two of
train, validation and test. Where the data declares no groups, near-duplicate images (the same
field rotated, flipped, shifted or re-encoded) become the groups; `near_duplicates=False`, the card
key `near_duplicates: false` or the `--data` suffix `?near_duplicates=off` turns that off.
"""

from __future__ import annotations

import hashlib
import logging
import re

import numpy as np
import pandas as pd
from sklearn.utils.class_weight import compute_class_weight

from bench.data import near_duplicates as dups
from bench.data.cache import decode_files
from bench.errors import DataError
from bench.images import MAX_IMAGE_SIZE, MIN_IMAGE_SIZE, RESIZE_MODES
from bench.validation import Rules, between, check, satisfies
from bench.data.layouts import Source, content_fingerprint, detect_layout
from bench.data.layouts.cards import card_image_size
from bench.data.types import Dataset, Loaded
from bench.data.splits import SPLITS, assign_splits, check_trainable, effective_groups, exclusions, group_leaks

log = logging.getLogger("bench.data.loading")
SKIPPED_COLUMNS = ["file", "reason"]
SPLIT_COLUMNS = ["file", "class", "group", "split"]
DEFAULT_IMAGE_SIZE = 64  # when neither the caller nor the dataset card names one


def default_image_size(data: str, fallback: int = DEFAULT_IMAGE_SIZE) -> int:
    """The side `data` loads at when the caller names none: its dataset card's `image_size`, else `fallback`."""
    return card_image_size(dups.data_option(data)[0]) or fallback


def class_weights(y: np.ndarray, n_classes: int) -> dict[int, float]:
    """Balanced weights (n / (k · count)) for the classes present; 1.0 for absent ones."""
    present = np.unique(y)
    weights = compute_class_weight("balanced", classes=present, y=y)
    by_class = dict(zip(present.tolist(), weights.tolist()))
    return {i: float(by_class.get(i, 1.0)) for i in range(n_classes)}


ARGUMENT_RULES: Rules = (
    ("image_size", between(MIN_IMAGE_SIZE, MAX_IMAGE_SIZE)),
    ("resize_mode", satisfies(lambda v: v is None or v in RESIZE_MODES, f"None or one of {', '.join(RESIZE_MODES)}")),
)


def _materialise(source: Source, image_size: int, mode: str, grouping: bool):
    """Pixels, per-image table (file, class, official, group, sha1, width, height), skipped files, whether
    cached, and the near-duplicate features of the table's rows (None unless `grouping` and no file declares
    a group)."""
    if source.x is not None:
        x = source.x
        table = source.table.copy()
        table["sha1"] = [hashlib.sha1(img.tobytes()).hexdigest() for img in x]
        table["width"], table["height"] = x.shape[2], x.shape[1]
        return x, table, list(source.skipped), False, None
    files = source.files
    if files.empty:
        raise DataError(f"no usable images in {source.root} ({source.layout} layout; "
                        f"{len(source.skipped)} files skipped: {_reason_counts(source.skipped) or 'none found'})")
    if files["class"].nunique() < 2:
        raise DataError(f"a classifier needs at least 2 classes; {source.root} has 1 ({files['class'].iloc[0]})")
    decoded = decode_files(files, image_size, mode, features=grouping and bool((files["group"] == "").all()))
    source.files = files.assign(sha1=decoded.index["sha1"].to_numpy())  # content, for the fingerprint
    ok = decoded.index["ok"].to_numpy()
    skipped = list(source.skipped) + list(zip(files["file"][~ok], decoded.index["reason"][~ok]))
    table = files.loc[ok, ["file", "class", "official", "group"]].reset_index(drop=True)
    for column in ("sha1", "width", "height"):
        table[column] = decoded.index.loc[ok, column].to_numpy()
    features = decoded.features.take(np.flatnonzero(ok)) if decoded.features is not None else None
    return decoded.images, table, skipped, decoded.from_cache, features


def _kind(reason: str) -> str:
    return re.split(r" \(|: | '", reason)[0]


def _reason_counts(skipped: list[tuple[str, str]]) -> str:
    counts = pd.Series([_kind(r) for _, r in skipped], dtype=object).value_counts()
    return ", ".join(f"{n} {kind}" for kind, n in counts.items())


def _fingerprint(source: Source, image_size: int, mode: str, rule: str, seed: int, fractions) -> str:
    text = f"{content_fingerprint(source)}|{image_size}|{mode}|{rule}|{seed}|{fractions}"
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def splits_fingerprint(splits: pd.DataFrame, sha1: pd.Series) -> str:
    """A hash of the actual file -> split assignment: every image's file, content (sha1), class, group and split,
    in file order. Equal fingerprints mean the same images in the same splits, whatever the image size, resize mode
    or the code that drew the split; the registry compares validation scores only under an equal one."""
    rows = splits.assign(sha1=sha1.to_numpy())[["file", "sha1", "class", "group", "split"]].astype(str)
    text = rows.sort_values(["file", "sha1"]).to_csv(index=False, lineterminator="\n")
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def cross_class_duplicates(table: pd.DataFrame) -> pd.DataFrame:
    """Rows whose bytes (or pixels, for array sources) are identical to a row of another class."""
    classes = table.groupby("sha1")["class"].transform("nunique")
    return table[classes > 1].sort_values(["sha1", "class"])


def load(data: str, *, image_size: int | None = None, seed: int = 0, val_fraction: float = 0.2,
         test_fraction: float = 0.2, resize_mode: str | None = None, near_duplicates: bool | None = None) -> Loaded:
    """`load_dataset` with the per-image details that `inspect` reports."""
    name = data
    data, option = dups.data_option(data)
    image_size = default_image_size(data) if image_size is None else image_size
    check(ARGUMENT_RULES, {"image_size": image_size, "resize_mode": resize_mode})
    layout = detect_layout(data)
    source = layout.load(data, image_size=image_size, seed=seed, options=None)
    mode = resize_mode or source.resize_mode
    grouping = dups.enabled(source.options, near_duplicates, option)
    x_all, table, skipped, from_cache, features = _materialise(source, image_size, mode, grouping)
    found = dups.apply(table, features, source.options, near_duplicates, option)

    keep, dropped = group_leaks(table, source.options.get("group_leak", "drop"))
    keep, excluded = exclusions(table, source.options.get("exclude"), keep)
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
    if skipped or dropped or excluded:
        bits = [f"skipped {len(skipped)} unusable files ({_reason_counts(skipped)})"] if skipped else []
        bits += [f"dropped {len(dropped)} images whose group is also in a higher official split"] if dropped else []
        bits += [f"excluded {len(excluded)} images the card lists as unusable"] if excluded else []
        log.warning("data: %s; see skipped_files.csv", "; ".join(bits))
    duplicates = cross_class_duplicates(table)
    if len(duplicates):
        log.warning("data: %d byte-identical files appear under more than one class (see `data inspect`)",
                    duplicates["sha1"].nunique())

    counts = " / ".join(f"{part} {int((split == part).sum()):,}" for part in SPLITS)
    group_counts = (" / ".join(str(len(set(groups[split == part]))) for part in SPLITS) + " groups"
                    if groups is not None else "no groups")
    group_counts += f" ({found})" if found else ""
    summary = (f"data {name}: {source.layout}, {len(class_names)} classes, {counts} images, {group_counts}, "
               f"{image_size}px {mode}, {len(skipped) + len(dropped) + len(excluded)} skipped"
               + (f", {duplicates['sha1'].nunique()} cross-class duplicates" if len(duplicates) else "")
               + (" (cached)" if from_cache else ""))
    splits = pd.DataFrame({"file": table["file"], "class": table["class"],
                           "group": groups if groups is not None else "", "split": split})[SPLIT_COLUMNS]
    dataset = Dataset(
        name=name, class_names=class_names, image_size=image_size,
        x_train=arrays["train"][0], y_train=arrays["train"][1],
        x_val=arrays["val"][0], y_val=arrays["val"][1],
        x_test=arrays["test"][0], y_test=arrays["test"][1],
        fingerprint=_fingerprint(source, image_size, mode, rule, seed, (val_fraction, test_fraction)),
        resize_mode=mode,
        splits=splits, splits_fingerprint=splits_fingerprint(splits, table["sha1"]),
        skipped=pd.DataFrame(skipped + dropped + excluded, columns=SKIPPED_COLUMNS),
        summary=summary,
        groups_test=None if groups is None else np.asarray(groups[split == "test"]),
    )
    return Loaded(dataset, table, source.layout, source.notes, rule, from_cache)


def load_dataset(data: str, *, image_size: int | None = None, seed: int = 0, val_fraction: float = 0.2,
                 test_fraction: float = 0.2, resize_mode: str | None = None,
                 near_duplicates: bool | None = None) -> Dataset:
    """Load, decode (cached), split and check a dataset; see the module docstring for `data`. `image_size`
    None means the dataset card's `image_size`, else 64."""
    return load(data, image_size=image_size, seed=seed, val_fraction=val_fraction, test_fraction=test_fraction,
                resize_mode=resize_mode, near_duplicates=near_duplicates).dataset
