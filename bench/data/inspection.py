"""The `data inspect` report: counts per class and split, image sizes, groups, near-duplicate clusters (with a
thumbnail sheet), duplicates, leakage."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from bench import paths
from bench.data.loading import cross_class_duplicates, load
from bench.data.near_duplicates import GROUP_PREFIX
from bench.data.types import Loaded
from bench.data.splits import SPLITS

SHOW = 8  # examples listed per finding
SHEET_ROWS, SHEET_COLUMNS, THUMB = 8, 10, 64  # clusters on the sheet, images per cluster, thumbnail side (px)


def _examples(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    lines = [f"    {'  '.join(str(v) for v in row)}" for row in frame[columns].head(SHOW).itertuples(index=False)]
    return lines + ([f"    … and {len(frame) - SHOW} more"] if len(frame) > SHOW else [])


def _in_two_splits(table: pd.DataFrame, key: str) -> pd.DataFrame:
    spread = table.groupby(key)["split"].transform("nunique")
    return table[spread > 1].sort_values([key, "split"])


def _pixels(loaded: Loaded, rows: np.ndarray) -> list[np.ndarray]:
    """Decoded images of table rows: the dataset holds them per split, in table order."""
    ds, split = loaded.dataset, loaded.table["split"]
    position = split.groupby(split).cumcount().to_numpy()
    arrays = {"train": ds.x_train, "val": ds.x_val, "test": ds.x_test}
    return [np.asarray(arrays[split.iat[r]][position[r]]) for r in rows]


def contact_sheet(loaded: Loaded, path: Path) -> Path:
    """A PNG with one row per largest near-duplicate cluster (up to SHEET_COLUMNS images each)."""
    groups = loaded.table["group"]
    largest = groups.value_counts().head(SHEET_ROWS)
    largest = largest[largest > 1]
    sheet = Image.new("RGB", (SHEET_COLUMNS * THUMB, max(1, len(largest)) * THUMB), "white")
    for row, group in enumerate(largest.index):
        members = np.flatnonzero(groups.to_numpy() == group)[:SHEET_COLUMNS]
        for column, pixels in enumerate(_pixels(loaded, members)):
            sheet.paste(Image.fromarray(pixels).resize((THUMB, THUMB)), (column * THUMB, row * THUMB))
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(path)
    return path


def _clusters(loaded: Loaded, sheet: Path | None) -> list[str]:
    table = loaded.table
    if not table["group"].str.startswith(GROUP_PREFIX).all():
        return []
    sizes = table["group"].value_counts()
    many = sizes[sizes > 1]
    lines = ["", f"near-duplicate clusters: {len(sizes):,} groups ({len(many):,} of 2+ images, "
             f"{int(many.sum()):,} images in them), largest {int(sizes.max())} images"]
    for group, n in many.head(SHOW).items():
        members = table[table["group"] == group]
        lines.append(f"    {group} ({n} images, {', '.join(sorted(set(members['class'])))}): "
                     + ", ".join(members["file"].head(4)) + (", …" if n > 4 else ""))
    if len(many) and sheet is not None:
        lines.append(f"  thumbnail sheet (the {min(len(many), SHEET_ROWS)} largest clusters): {contact_sheet(loaded, sheet)}")
    return lines


def report(loaded: Loaded, *, sheet: Path | None = None) -> str:
    ds, table = loaded.dataset, loaded.table
    lines = [ds.summary, f"layout: {loaded.layout}", f"split rule: {loaded.rule}", f"fingerprint: {ds.fingerprint}"]
    lines += [f"note: {note}" for note in loaded.notes]

    counts = pd.crosstab(table["class"], pd.Categorical(table["split"], categories=SPLITS), dropna=False)
    counts.columns.name, counts.index.name = None, "class"
    counts["all"] = counts.sum(axis=1)
    counts.loc["all"] = counts.sum()
    lines += ["", "images per class and split:", counts.to_string()]

    sizes = (table["width"].astype(str) + "x" + table["height"].astype(str)).value_counts()
    lines += ["", "source image sizes (width x height): "
              + ", ".join(f"{size} ({n:,})" for size, n in sizes.head(SHOW).items())
              + (f", … {len(sizes) - SHOW} more sizes" if len(sizes) > SHOW else "")]

    if ds.groups_test is None:
        lines += ["", "groups: none known (each image is its own group; copies of one source could straddle splits)"]
    else:
        per_split = ds.splits.groupby("split")["group"].nunique().reindex(list(SPLITS), fill_value=0)
        sizes_per_group = ds.splits.groupby("group").size()
        lines += ["", "groups: " + ", ".join(f"{s} {n}" for s, n in per_split.items())
                  + f"; images per group median {sizes_per_group.median():.0f}, max {sizes_per_group.max()}"]

    lines += _clusters(loaded, sheet)

    within = table[table.duplicated("sha1", keep=False)]
    across = cross_class_duplicates(table)
    lines += ["", f"byte-identical duplicates: {within['sha1'].nunique()} sets ({len(within)} files); "
              f"{across['sha1'].nunique()} sets span more than one class"]
    lines += _examples(across, ["sha1", "class", "split", "file"])

    hash_leaks = _in_two_splits(table, "sha1")
    group_leaks = _in_two_splits(ds.splits, "group") if ds.groups_test is not None else ds.splits.iloc[:0]
    dropped = ds.skipped[ds.skipped["reason"].str.startswith("group leak")]
    lines += ["", f"leakage: {hash_leaks['sha1'].nunique()} identical contents in two splits, "
              f"{group_leaks['group'].nunique()} groups in two splits"]
    lines += _examples(hash_leaks, ["sha1", "split", "file"]) + _examples(group_leaks, ["group", "split", "file"])
    if len(dropped):
        lines += [f"  official splits shared groups: {len(dropped)} images dropped from the lower split"]
        lines += _examples(dropped, ["file", "reason"])

    unusable = ds.skipped[~ds.skipped["reason"].str.startswith("group leak")]
    lines += ["", f"skipped files: {len(unusable)}"] + _examples(unusable, ["file", "reason"])
    return "\n".join(lines)


def inspect(data: str, *, image_size: int | None = None, seed: int = 0, sheet: str | Path | None = None) -> str:
    """The report `python -m bench data inspect --data …` prints. The near-duplicate thumbnail sheet goes
    to `sheet`, by default `<cache>/inspect/near_duplicates-<fingerprint>.png`."""
    loaded = load(data, image_size=image_size, seed=seed)
    default = paths.cache_dir() / "inspect" / f"near_duplicates-{loaded.dataset.fingerprint}.png"
    return report(loaded, sheet=Path(sheet) if sheet is not None else default)
