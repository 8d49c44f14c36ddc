"""Which geometry suits the Kaggle blood-cells fields: resize mode (pad / crop / stretch / cell) and size, measured.

The Kaggle images are 320x240 microscope fields with one white cell, often off-centre (the augmented copies are
shifted, rotated and sheared). `pad` keeps the whole field (letterboxed to a square), `crop` keeps the centre square
(240x240), `stretch` squeezes the field and `cell` keeps a square of `bench.images.CELL_WINDOW` × 240 px around the
stained nucleus; each is then resized to the side. A row `cell:64:0.6` sets the window to 0.6 (its decode goes to a
temporary cache, since the decode cache keys on mode and size only). Every row trains the same model (the scratch space's default CNN, augmentation off) with the
same seed and epochs through the project's `fit_and_score`, on a subset of the train split (a seeded `--fraction`
of its source groups), and scores it on the validation split that `load_dataset` carves from train by source
group, subset the same way. The official test split is never read.

    nice .venv/bin/python benchmarks/geometry_kaggle.py [--fraction 0.3] [--epochs 5] [--seeds 0]
        [--rows pad:64,crop:64,cell:64,cell:64:0.6,cell:96]

"load s" is the uncached decode of the whole card (12,444 images at this row's geometry), "s per run" one fit.

Measured 2026-12-02 on the 2-core machine shared with two other developers (load average 5.7 at the start, 5.7-7.3
during), `nice .venv/bin/python benchmarks/geometry_kaggle.py --fraction 0.3 --epochs 4 --seeds 0,1
--rows crop:64,cell:64,cell:96,cell:64:0.6,crop:96` (mean ± std over the two seeds):

| geometry | train / val images | val F1 macro | val accuracy | s per run | load s |
|---|---:|---:|---:|---:|---:|
| crop 64 px | 2,636 / 806 | 0.441 ± 0.075 | 0.544 ± 0.038 | 153 | 43 |
| cell 64 px | 2,636 / 806 | 0.579 ± 0.004 | 0.694 ± 0.002 | 148 | 40 |
| cell 96 px | 2,636 / 806 | 0.601 ± 0.002 | 0.712 ± 0.002 | 394 | 76 |
| cell 64 px (window 0.6) | 2,636 / 806 | 0.576 ± 0.008 | 0.690 ± 0.011 | 142 | 73 |
| crop 96 px | 2,636 / 806 | 0.391 ± 0.034 | 0.520 ± 0.029 | 357 | 44 |

The load times swing with the other jobs on the machine (see datasets/README.md for the per-image decode cost).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def group_subset(dataset, fraction: float, seed: int):
    """`dataset` with only a seeded `fraction` of the groups of its train and validation splits (test emptied)."""
    splits = dataset.splits
    groups = np.array(sorted(set(splits.loc[splits.split.isin(["train", "val"]), "group"])))
    chosen = set(np.random.default_rng(seed).permutation(groups)[: max(2, round(fraction * len(groups)))])
    keep = {part: splits.loc[splits.split == part, "group"].isin(chosen).to_numpy() for part in ("train", "val")}
    return replace(dataset, x_train=dataset.x_train[keep["train"]], y_train=dataset.y_train[keep["train"]],
                   x_val=dataset.x_val[keep["val"]], y_val=dataset.y_val[keep["val"]],
                   x_test=dataset.x_test[:0], y_test=dataset.y_test[:0], groups_test=None)


@contextmanager
def geometry(window: str | None):
    """A fresh decode cache for the row (its uncached load is timed); `window` sets the `cell` window meanwhile."""
    from bench import images

    saved = images.CELL_WINDOW, os.environ.get("BENCH_CACHE_DIR")
    with tempfile.TemporaryDirectory(prefix="geometry-") as cache:
        os.environ["BENCH_CACHE_DIR"] = cache
        images.CELL_WINDOW = float(window) if window else images.CELL_WINDOW
        try:
            yield
        finally:
            images.CELL_WINDOW = saved[0]
            os.environ.pop("BENCH_CACHE_DIR") if saved[1] is None else os.environ.update(BENCH_CACHE_DIR=saved[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="blood_cells_kaggle")
    parser.add_argument("--fraction", type=float, default=0.3, help="of the train split's source groups")
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--seeds", default="0", help="comma-separated training seeds")
    parser.add_argument("--rows", default="pad:64,crop:64,cell:64,cell:64:0.6,cell:96",
                        help="mode:size[:cell window],...")
    args = parser.parse_args()

    from bench.data import load_dataset
    from bench.search.space import defaults, load_space
    from bench.training import fit_and_score, start_trial

    params = {**defaults(load_space("scratch_cnn")), "augment": False}
    seeds = [int(s) for s in args.seeds.split(",")]
    from bench import machine
    print(f"{datetime.date.today()}, {machine.describe()}, load average {os.getloadavg()[0]:.1f}; "
          f"{args.data}, {args.fraction:.0%} of the train split's groups, scratch_cnn defaults, {args.epochs} epochs, "
          f"seeds {seeds}; validation carved from train by group; best epoch's validation score\n")
    print("| geometry | train / val images | val F1 macro | val accuracy | s per run | load s |\n"
          "|---|---:|---:|---:|---:|---:|")
    for row in args.rows.split(","):
        mode, size, *window = row.split(":")
        with geometry(window[0] if window else None):
            started = time.perf_counter()
            loaded = load_dataset(args.data, image_size=int(size), resize_mode=mode, seed=0)
            load_seconds = time.perf_counter() - started
        dataset = group_subset(loaded, args.fraction, 0)
        f1, accuracy, seconds = [], [], []
        for seed in seeds:
            start_trial(seed)
            started = time.perf_counter()
            fit = fit_and_score(params, dataset, family="scratch_cnn", epochs=args.epochs, seed=seed)
            seconds.append(time.perf_counter() - started)
            best = fit.history[fit.best_epoch - 1]  # 1-based
            f1.append(best["val_f1_macro"])
            accuracy.append(best["val_accuracy"])
        spread = lambda values: f"{np.mean(values):.3f}" + (f" ± {np.std(values):.3f}" if len(values) > 1 else "")
        name = f"{mode} {size} px" + (f" (window {window[0]})" if window else "")
        print(f"| {name} | {len(dataset.y_train):,} / {len(dataset.y_val):,} | {spread(f1)} | "
              f"{spread(accuracy)} | {np.mean(seconds):.0f} | {load_seconds:.0f} |", flush=True)


if __name__ == "__main__":
    main()
