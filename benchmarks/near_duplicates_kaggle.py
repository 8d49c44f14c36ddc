"""Near-duplicate grouping (`bench.data.near_duplicates`) on the Kaggle blood-cells folder (train + test,
12,444 images) against the provenance `group_id` (../shared/datasets/blood_cells_kaggle/SOURCE.md):
adjusted Rand index, pair precision/recall (pairs put in one group that truly share one, and the
reverse), groups, how many true groups random group-carved 80/20 splits (20 seeds) put on both sides and
which true groups the grouping splits, and time: a first
`load` of the folder (decode + features + grouping, in a fresh cache) and a cached one.

    PYTHONPATH=$PWD nice .venv/bin/python benchmarks/near_duplicates_kaggle.py [--image-size 64]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics.cluster import pair_confusion_matrix

ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "blood_cells_kaggle"


SEEDS = 20  # random 80/20 carves of the found groups


def crossing(truth: np.ndarray, found: np.ndarray, seed: int) -> int:
    """True groups on both sides of a random 80/20 split of the found groups."""
    groups = np.unique(found)
    validation = np.random.default_rng(seed).choice(groups, len(groups) // 5, replace=False)
    return int(pd.Series(np.isin(found, validation)).groupby(truth).nunique().gt(1).sum())


def report(truth: np.ndarray, found: np.ndarray) -> str:
    (_, fp), (fn, tp) = pair_confusion_matrix(truth, found)
    per_seed = [crossing(truth, found, seed) for seed in range(SEEDS)]
    parts = pd.Series(found).groupby(truth).nunique()
    split = ", ".join(f"{g} ({n})" for g, n in parts[parts > 1].items())
    return (f"ARI {adjusted_rand_score(truth, found):.4f}; pair precision {tp / max(tp + fp, 1):.4f}, "
            f"recall {tp / max(tp + fn, 1):.4f}; {len(np.unique(found))} groups found ({len(set(truth))} true)\n"
            f"true groups in both train and validation of {SEEDS} random 80/20 group splits: "
            f"{per_seed} (mean {np.mean(per_seed):.2f}, {sum(c == 0 for c in per_seed)} of {SEEDS} splits with none)\n"
            f"true groups split over several found groups: {len(parts[parts > 1])}: {split or 'none'}")


def timed(label: str, fn):
    start, cpu = time.perf_counter(), os.times()
    out = fn()
    end = os.times()
    used = sum(end[:4]) - sum(cpu[:4])
    print(f"{label}: {time.perf_counter() - start:.1f} s wall, {used:.1f} s CPU (all processes), "
          f"load average {os.getloadavg()[0]:.1f}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, default=64)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as cache:
        os.environ["BENCH_CACHE_DIR"] = cache
        from bench.data import load
        from bench.data.cache import decode_files
        from bench.data.layouts import detect_layout
        from bench.data.near_duplicates_features import feature_groups

        timed("first load", lambda: load(str(ROOT), image_size=args.image_size))
        loaded = timed("cached load", lambda: load(str(ROOT), image_size=args.image_size))
        print(loaded.dataset.summary)
        files = detect_layout(str(ROOT)).load(str(ROOT), image_size=args.image_size, seed=0, options=None).files
        features = decode_files(files, args.image_size, "pad", features=True).features  # cached by now
        found = timed("grouping alone (uncached)", lambda: feature_groups(features))
    provenance = pd.read_csv(ROOT / "provenance.csv").set_index("file")["group_id"]
    truth = provenance.reindex(files["file"].to_numpy()).to_numpy()
    print(report(truth.astype(str), found))


if __name__ == "__main__":
    main()
