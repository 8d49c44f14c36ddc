"""Near-duplicate grouping on the Kaggle blood-cells folder (train + test, 12,444 images) against the
provenance `group_id` (../shared/datasets/blood_cells_kaggle/SOURCE.md): adjusted Rand index, pair
precision/recall (pairs put in one group that truly share one, and the reverse), time, and how many
true groups a group-carved 80/20 split puts on both sides.

    PYTHONPATH=$PWD nice .venv/bin/python benchmarks/near_duplicates_kaggle.py [--method dhash|features]

`dhash` is what `bench.data.near_duplicates` does today. `features` is the candidate replacement
measured for issue 14 (not yet in the package): per image a colour histogram (8x8x8 bins of the
non-black pixels) and ORB keypoints of the image and its mirror (240 px wide, 150 per side); stage 1
links each image to its 10 nearest histograms when an affine RANSAC over cross-checked ORB matches keeps
>= 12 inliers (pairs already in one component are not checked, so ~n checks); stage 2 joins the
components whose representatives share >= 5 ratio-test ORB matches and pass the same check
(overlapping fields of different smears, which `group_id` merges).
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image
from sklearn.metrics import adjusted_rand_score
from sklearn.metrics.cluster import pair_confusion_matrix

ROOT = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "blood_cells_kaggle"
WIDTH, KEYPOINTS, NEIGHBOURS, INLIERS, VOTES = 240, 150, 10, 12, 5


def features(path: str):
    import cv2
    cv2.setNumThreads(1)
    with Image.open(path) as image:
        image.draft("RGB", (WIDTH, WIDTH))
        rgb = np.asarray(image.convert("RGB").resize((WIDTH, WIDTH * image.height // image.width), Image.BILINEAR))
    pixels = rgb.reshape(-1, 3).astype(np.int64)
    pixels = pixels[pixels.sum(1) > 60]  # not the black fill
    hist = np.bincount((pixels // 32) @ np.array([64, 8, 1]), minlength=512).astype(np.float32)
    grey = np.ascontiguousarray(cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY))
    orb = cv2.ORB_create(nfeatures=KEYPOINTS, fastThreshold=8)
    points, descriptors = np.zeros((2, KEYPOINTS, 2), np.float32), np.zeros((2, KEYPOINTS, 32), np.uint8)
    counts = np.zeros(2, np.int64)
    for side, img in enumerate((grey, np.ascontiguousarray(grey[:, ::-1]))):
        kp, d = orb.detectAndCompute(img, None)
        if d is None:
            continue
        order = np.argsort([-k.response for k in kp])
        points[side, :len(kp)] = np.array([k.pt for k in kp], np.float32)[order]
        descriptors[side, :len(kp)], counts[side] = d[order], len(kp)
    return np.sqrt(hist / max(hist.sum(), 1)), points, descriptors, counts


class Groups:
    def __init__(self, n):
        self.parent = np.arange(n)

    def find(self, x):
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def labels(self):
        return np.array([self.find(x) for x in range(len(self.parent))])


def feature_groups(files: list[str], workers: int) -> np.ndarray:
    import cv2
    with ProcessPoolExecutor(workers) as pool:
        hist, points, desc, counts = map(np.stack, zip(*pool.map(features, files, chunksize=64)))
    t_features = time.perf_counter()
    bf = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)

    def inliers(i, j):
        best = 0
        for side in (0, 1):
            matches = bf.match(desc[i, side, :counts[i, side]], desc[j, 0, :counts[j, 0]])
            if len(matches) >= 3:
                a = points[i, side, [m.queryIdx for m in matches]]
                b = points[j, 0, [m.trainIdx for m in matches]]
                _, mask = cv2.estimateAffine2D(a, b, method=cv2.RANSAC, ransacReprojThreshold=3.0)
                best = max(best, 0 if mask is None else int(mask.sum()))
            if best >= INLIERS:
                break
        return best

    groups, n = Groups(len(files)), len(files)
    sim = hist @ hist.T
    np.fill_diagonal(sim, -1)
    near = np.argpartition(-sim, NEIGHBOURS, axis=1)[:, :NEIGHBOURS]
    a, b = np.repeat(np.arange(n), NEIGHBOURS), near.ravel()
    checks = 0
    for k in np.argsort(-sim[a, b], kind="stable"):
        ri, rj = groups.find(a[k]), groups.find(b[k])
        if ri != rj:
            checks += 1
            if inliers(a[k], b[k]) >= INLIERS:
                groups.parent[ri] = rj
    t_stage1 = time.perf_counter()
    labels = groups.labels()
    _, reps = np.unique(labels, return_index=True)
    train = [desc[r, 0, :counts[r, 0]] for r in reps]
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    matcher.add(list(train))
    matcher.train()
    votes = {}
    for k, r in enumerate(reps):
        for side in (0, 1):
            for pair in matcher.knnMatch(desc[r, side, :counts[r, side]], k=3):
                hits = [m for m in pair if m.imgIdx != k]
                if len(hits) >= 2 and hits[0].distance < 0.8 * hits[1].distance:
                    key = (min(k, hits[0].imgIdx), max(k, hits[0].imgIdx))
                    votes[key] = votes.get(key, 0) + 1
    joined = 0
    for (k, x), v in sorted(votes.items(), key=lambda kv: -kv[1]):
        if v >= VOTES and groups.find(reps[k]) != groups.find(reps[x]) and inliers(reps[k], reps[x]) >= INLIERS:
            groups.parent[groups.find(reps[k])] = groups.find(reps[x])
            joined += 1
    print(f"features {t_features - START:.1f} s, stage 1 {t_stage1 - t_features:.1f} s ({checks} checks, "
          f"{len(reps)} components), stage 2 {time.perf_counter() - t_stage1:.1f} s ({joined} joins)")
    return groups.labels()


def dhash_groups(files: list[str], workers: int) -> np.ndarray:
    from bench.data import near_duplicates as nd
    with ProcessPoolExecutor(workers) as pool:
        hashes = np.array(list(pool.map(_dhash, files, chunksize=64)), dtype=np.uint64)
    return nd.near_duplicate_groups(hashes)


def _dhash(path: str):
    from bench.data import near_duplicates as nd
    with Image.open(path) as image:
        return nd.image_hash(image)


def report(truth: np.ndarray, found: np.ndarray, seconds: float) -> None:
    (tn, fp), (fn, tp) = pair_confusion_matrix(truth, found)
    rng = np.random.default_rng(0)
    found_groups = np.unique(found)
    validation = set(rng.choice(found_groups, len(found_groups) // 5, replace=False).tolist())
    split = np.array([f in validation for f in found])
    crossing = pd.Series(split).groupby(truth).nunique().gt(1).sum()
    print(f"ARI {adjusted_rand_score(truth, found):.4f}; pair precision {tp / max(tp + fp, 1):.4f}, "
          f"recall {tp / max(tp + fn, 1):.4f}; {len(found_groups)} groups found ({len(set(truth))} true); "
          f"{seconds:.1f} s; {crossing} true groups in both train and validation of an 80/20 group split")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("dhash", "features"), default="features")
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    table = pd.read_csv(ROOT / "provenance.csv")
    table = table[table["split"].isin(["train", "test"])].reset_index(drop=True)
    paths = [str(ROOT / f) for f in table["file"]]
    START = time.perf_counter()
    found = (feature_groups if args.method == "features" else dhash_groups)(paths, args.workers)
    report(table["group_id"].to_numpy(), found, time.perf_counter() - START)
