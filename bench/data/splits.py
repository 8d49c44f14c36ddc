"""Train/validation/test assignment: official splits honoured, the rest carved by class and by group.

A carved split is one fold of a shuffled, seeded `StratifiedGroupKFold` (or `StratifiedKFold`
where no groups are known) with `round(1 / fraction)` folds, so the fraction is met as nearly as
whole groups allow and no group ever spans two splits. The test split depends only on the data
and the seed, never on a trial.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

from bench.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")
PRIORITY = {"test": 2, "val": 1, "train": 0}


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    for name, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{name} must be between 0 and 1 exclusive; got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise ConfigError(f"val_fraction + test_fraction must be below 1; got {val_fraction + test_fraction}")


def row_groups(table: pd.DataFrame) -> np.ndarray:
    """Group per row; a file is its own group where unknown."""
    return np.where(table["group"] != "", table["group"], "file:" + table["file"])


def effective_groups(table: pd.DataFrame) -> np.ndarray | None:
    """Group per row (a file is its own group where unknown), or None when no row has a group."""
    return row_groups(table) if (table["group"] != "").any() else None


def group_leaks(table: pd.DataFrame, policy: str) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """Rows to keep, and the dropped ones with reasons, where a group spans official splits.

    `drop` removes the copies in the lower-priority split (train < val < test), so the official
    test set stays whole; `keep` keeps them (inspect reports the leak); `error` stops.
    """
    keep = np.ones(len(table), dtype=bool)
    groups = effective_groups(table)
    official = table["official"].to_numpy()
    if groups is None or policy == "keep" or not (official != "").any():
        return keep, []
    rank = np.array([PRIORITY.get(s, -1) for s in official])
    top = pd.Series(rank).groupby(groups).transform("max").to_numpy()
    leaking = (official != "") & (rank < top)
    if leaking.any() and policy == "error":
        first = groups[leaking][0]
        raise DataError(f"group {first!r} is in more than one official split ({int(leaking.sum())} images affected)")
    names = {v: k for k, v in PRIORITY.items()}
    dropped = [(f, f"group leak: {g} is also in the official {names[t]} split")
               for f, g, t in zip(table["file"][leaking], groups[leaking], top[leaking])]
    return ~leaking, dropped


def exclusions(table: pd.DataFrame, exclude: dict[str, str] | None,
               keep: np.ndarray) -> tuple[np.ndarray, list[tuple[str, str]]]:
    """`keep` narrowed by the card's `exclude`, and the newly dropped rows with reasons: each key a group or a file
    (as listed) known to be unusable, e.g. one cell labelled two ways, with the reason shown in skipped_files.csv
    (a row `keep` already drops is not listed twice). A key that matches nothing is a one-line DataError (a typo
    would otherwise keep the images silently)."""
    keep = keep.copy()
    dropped: list[tuple[str, str]] = []
    for key, reason in (exclude or {}).items():
        hit = ((table["group"] == key) | (table["file"] == key)).to_numpy()
        if not hit.any():
            raise DataError(f"exclude: {key!r} is neither a group nor a file of this dataset")
        dropped += [(f, f"excluded: {reason}") for f in table["file"][hit & keep]]
        keep &= ~hit
    return keep, dropped


def _carve(y: np.ndarray, groups: np.ndarray | None, fraction: float, seed: int, what: str) -> np.ndarray:
    """Boolean mask of the rows held out: one stratified (grouped) fold of round(1/fraction)."""
    n_splits = max(2, round(1.0 / fraction))
    units = len(np.unique(groups)) if groups is not None else len(y)
    if units < n_splits:
        kind = "groups" if groups is not None else "images"
        raise DataError(f"{units} {kind} are too few to carve a {what} split of {fraction:.0%} (need at least {n_splits})")
    if groups is None:
        splitter, args = StratifiedKFold(n_splits, shuffle=True, random_state=seed), ()
    else:
        splitter, args = StratifiedGroupKFold(n_splits, shuffle=True, random_state=seed), (groups,)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "least populated class" — checked after, per class
        _, held = next(splitter.split(np.zeros(len(y)), y, *args))
    mask = np.zeros(len(y), dtype=bool)
    mask[held] = True
    return mask


def assign_splits(table: pd.DataFrame, y: np.ndarray, *, seed: int, val_fraction: float,
                  test_fraction: float) -> tuple[np.ndarray, str]:
    """Split name per row and the rule in words. `table` has columns file, official, group."""
    check_fractions(val_fraction, test_fraction)
    official = table["official"].to_numpy()
    groups = effective_groups(table)
    by = "by group, " if groups is not None else ""
    split = np.full(len(table), "train", dtype=object)
    rules = []
    if (official == "test").any():
        split[official == "test"] = "test"
        rules.append("official test")
    else:
        pool = official != "val"
        held = _carve(y[pool], None if groups is None else groups[pool], test_fraction, seed, "test")
        split[np.flatnonzero(pool)[held]] = "test"
        rules.append(f"test carved {by}1/{max(2, round(1 / test_fraction))}")
    if (official == "val").any():
        split[official == "val"] = "val"
        rules.append("official val")
    else:
        pool = split == "train"
        fraction = val_fraction if (official == "test").any() else val_fraction / (1.0 - test_fraction)
        held = _carve(y[pool], None if groups is None else groups[pool], fraction, seed + 1, "validation")
        split[np.flatnonzero(pool)[held]] = "val"
        rules.append(f"val carved {by}1/{max(2, round(1 / fraction))} of train")
    return split.astype(str), f"{'; '.join(rules)}; stratified by class, seed {seed}"


def check_trainable(classes: np.ndarray, split: np.ndarray, class_names: list[str]) -> None:
    """Every class in every split, at least two classes: a one-line DataError otherwise."""
    present = sorted(set(classes))
    if len(present) < 2:
        raise DataError(f"a classifier needs at least 2 classes with images; found {len(present)} ({', '.join(present)})")
    counts = pd.crosstab(pd.Series(classes, name="class"), pd.Series(split, name="split"))
    for name in class_names:
        for part in SPLITS:
            n = int(counts.at[name, part]) if name in counts.index and part in counts.columns else 0
            if n == 0:
                total = int(counts.loc[name].sum()) if name in counts.index else 0
                raise DataError(f"class {name!r} has no images in the {part} split ({total} images in all): "
                                f"too small for a train/validation/test split")
