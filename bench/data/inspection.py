"""The `data inspect` report: counts per class and split, image sizes, groups, duplicates, leakage."""

from __future__ import annotations

import pandas as pd

from bench.data.loading import cross_class_duplicates, load
from bench.data.types import Loaded
from bench.data.splits import SPLITS

SHOW = 8  # examples listed per finding


def _examples(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    lines = [f"    {'  '.join(str(v) for v in row)}" for row in frame[columns].head(SHOW).itertuples(index=False)]
    return lines + ([f"    … and {len(frame) - SHOW} more"] if len(frame) > SHOW else [])


def _in_two_splits(table: pd.DataFrame, key: str) -> pd.DataFrame:
    spread = table.groupby(key)["split"].transform("nunique")
    return table[spread > 1].sort_values([key, "split"])


def report(loaded: Loaded) -> str:
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


def inspect(data: str, *, image_size: int = 64, seed: int = 0) -> str:
    """The report `python -m bench data inspect --data …` prints."""
    return report(load(data, image_size=image_size, seed=seed))
