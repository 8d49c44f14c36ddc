"""Near-duplicate grouping (`bench.data.near_duplicates`) on the Kaggle blood-cells folder (train + test,
12,444 images) against the provenance `group_id` (../shared/datasets/blood_cells_kaggle/SOURCE.md):
adjusted Rand index, pair precision/recall (pairs put in one group that truly share one, and the
reverse), groups, how many true groups a group-carved 80/20 split puts on both sides, and time: a first
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


def report(truth: np.ndarray, found: np.ndarray) -> str:
    (_, fp), (fn, tp) = pair_confusion_matrix(truth, found)
    rng = np.random.default_rng(0)
    found_groups = np.unique(found)
    validation = set(rng.choice(found_groups, len(found_groups) // 5, replace=False).tolist())
    split = np.array([f in validation for f in found])
    crossing = pd.Series(split).groupby(truth).nunique().gt(1).sum()
    return (f"ARI {adjusted_rand_score(truth, found):.4f}; pair precision {tp / max(tp + fp, 1):.4f}, "
            f"recall {tp / max(tp + fn, 1):.4f}; {len(found_groups)} groups found ({len(set(truth))} true); "
            f"{crossing} true groups in both train and validation of an 80/20 group split")


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
