"""Which test cells do fits lose, and does averaging them help? Reads the probability files that
`benchmarks/recipe_kaggle.py --save DIR` writes (one per fit), and prints each fit's validation macro-F1, test
accuracy and macro-F1, the same for the equal-weight mean of all of them (an ensemble that needs no retraining; its
validation score only when every fit used one validation carve), and every source group of the test split that some
fit gets under 99 % right, with each fit's accuracy on it and the class it is mostly called.

    python benchmarks/recipe_kaggle.py --seeds 0 --save fits/64px
    python benchmarks/recipe_kaggle.py --seeds 0 --image-size 96 --save fits/96px
    python benchmarks/compare_fits.py 64px=fits/64px/seed0.npz 96px=fits/96px/seed0.npz

A group every fit loses is a limit of the data (or of the whole recipe family), not of one configuration; the
README's Kaggle section reads these tables.
"""

from __future__ import annotations

import argparse

import numpy as np
import pandas as pd
from sklearn.metrics import f1_score


def load(spec: str) -> tuple[str, dict[str, np.ndarray]]:
    name, _, path = spec.rpartition("=")
    with np.load(path, allow_pickle=True) as f:
        return name or path, {key: f[key] for key in f.files}


def compare(fits: dict[str, dict[str, np.ndarray]], *, below: float = 0.99) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per fit, and the mean of all when there are several: validation macro-F1, test accuracy and
    macro-F1; one row per (class, group) of the test split that some fit gets under `below`, costliest to the first
    fit first: its images, each fit's accuracy on it, what the first fit mostly calls it, and the accuracy points that
    costs the first fit). The per-group columns are bench.metrics.group_losses of each fit."""
    from bench.metrics import group_losses

    first = next(iter(fits.values()))
    for name, f in fits.items():
        if not np.array_equal(f["y_test"], first["y_test"]):
            raise SystemExit(f"error: {name} was scored on other test images than the first fit")
    classes, y_test, groups = list(first["classes"]), first["y_test"], first["groups_test"]
    every = {**fits, **({"mean of all": _mean(fits)} if len(fits) > 1 else {})}
    preds = {name: f["test"].argmax(1) for name, f in every.items()}
    scores = pd.DataFrame([
        {"fit": name,
         "val F1 (macro)": np.nan if np.isnan(f["val"]).any() else f1_score(f["y_val"], f["val"].argmax(1),
                                                                            average="macro"),
         "test accuracy": (preds[name] == y_test).mean(), "test F1 (macro)": f1_score(y_test, preds[name],
                                                                                      average="macro")}
        for name, f in every.items()])
    tables = {name: group_losses(y_test, pred, groups, classes).set_index(["class", "group"])
              for name, pred in preds.items()}
    names, head = list(tables), next(iter(tables.values()))
    out = head[["images"]].join(pd.DataFrame({name: table["accuracy"] for name, table in tables.items()}))
    out[f"mostly called by {names[0]}"] = head["most_predicted"]
    out["points (first fit)"] = head["points_lost"] * 100
    return scores, out[(out[names] < below).any(axis=1)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("fits", nargs="+", metavar="[NAME=]FILE.npz")
    parser.add_argument("--below", type=float, default=0.99, help="list groups some fit gets under this accuracy")
    args = parser.parse_args(argv)
    scores, lost = compare(dict(load(spec) for spec in args.fits), below=args.below)
    print(scores.to_string(index=False, float_format="{:.3f}".format))
    print(lost.to_string(float_format="{:.2f}".format))
    return 0


def _mean(fits: dict[str, dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The equal-weight mean; its validation probabilities only where every fit was scored on one validation carve."""
    first = next(iter(fits.values()))
    carves = {str(f["splits_fingerprint"]) if "splits_fingerprint" in f else None for f in fits.values()}
    same_val = len(carves) == 1 and None not in carves
    val = np.mean([f["val"] for f in fits.values()], 0) if same_val else np.full_like(first["val"], np.nan)
    return {"val": val, "test": np.mean([f["test"] for f in fits.values()], 0), "y_val": first["y_val"]}


if __name__ == "__main__":
    raise SystemExit(main())
