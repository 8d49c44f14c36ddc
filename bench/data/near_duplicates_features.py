"""Per-image near-duplicate features (one decode of the file at a fixed size, whatever `image_size`), and
the check that two images show the same field.

`image_features` gives a colour histogram of the non-black pixels (the fill a rotation or shift leaves)
and ORB keypoints of the grey image and of its mirror (ORB is rotation invariant, so the mirror covers
both flips), strongest first. `same_field` matches the descriptors (cross-checked) and keeps the pair when
an affine RANSAC finds enough inliers: rotation, shift, shear and flips all pass, different fields do not.
`Overlaps.partial` joins two groups whose fields overlap only partly (two smears of neighbouring fields):
several of their least-augmented images agree on one rotation + shift over close descriptor matches.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np
import pandas as pd
from PIL import Image

from bench.images import to_rgb8

SIDE = 240  # the long side the features read (the Kaggle fields are 320x240)
KEYPOINTS = 100  # per orientation
LEVELS = 3  # ORB pyramid levels: the copies differ by rotation/shift/shear, barely by scale
BITS = 3  # histogram bits per colour channel
BINS, _SHIFT = 1 << BITS, 8 - BITS
DARK = 60  # r+g+b at or below this is fill, not smear
INLIERS = 12  # affine RANSAC inliers that make two images one field


@dataclass
class Features:
    """Features of n images: `hist` (n, BINS³) float16, unit length; `points` (n, 2, K, 2) float16 and
    `desc` (n, 2, K, 32) uint8 of the image [0] and its mirror [1]; `counts` (n, 2) int16 keypoints found."""

    hist: np.ndarray
    points: np.ndarray
    desc: np.ndarray
    counts: np.ndarray

    @classmethod
    def empty(cls, n: int) -> "Features":
        return cls(np.zeros((n, BINS ** 3), np.float16), np.zeros((n, 2, KEYPOINTS, 2), np.float16),
                   np.zeros((n, 2, KEYPOINTS, 32), np.uint8), np.zeros((n, 2), np.int16))

    @classmethod
    def stack(cls, rows: list[tuple]) -> "Features":
        out = cls.empty(len(rows))
        for i, row in enumerate(rows):
            if row is not None:
                out.hist[i], out.points[i], out.desc[i], out.counts[i] = row
        return out

    def take(self, rows) -> "Features":
        return Features(self.hist[rows], self.points[rows], self.desc[rows], self.counts[rows])

    def save(self, file) -> None:
        """Into `file`, a path or a binary handle (as `np.savez` takes)."""
        np.savez(file, hist=self.hist, points=self.points, desc=self.desc, counts=self.counts)

    @classmethod
    def load(cls, path) -> "Features":
        with np.load(path) as z:
            return cls(z["hist"], z["points"], z["desc"], z["counts"])

    def __len__(self) -> int:
        return len(self.counts)


_ORB = None


def _orb():
    global _ORB
    if _ORB is None:
        cv2.setNumThreads(1)
        _ORB = cv2.ORB_create(nfeatures=KEYPOINTS, nlevels=LEVELS, fastThreshold=8)
    return _ORB


def image_features(image: Image.Image) -> tuple:
    """(hist, points, desc, counts) of one opened image (any mode and size): it is decoded again at SIDE
    on the long side, so the features do not depend on the size the pixels are cached at."""
    image.draft("RGB", (SIDE, SIDE))
    image = to_rgb8(image)
    scale = SIDE / max(image.size)
    size = (max(1, round(image.width * scale)), max(1, round(image.height * scale)))
    rgb = cv2.resize(np.asarray(image, dtype=np.uint8), size, interpolation=cv2.INTER_LINEAR)
    r, g, b = (rgb[..., c].astype(np.uint16) for c in range(3))
    bins = ((r >> _SHIFT) << (2 * BITS)) | ((g >> _SHIFT) << BITS) | (b >> _SHIFT)
    hist = np.bincount(bins[(r + g + b) > DARK], minlength=BINS ** 3).astype(np.float32)
    hist = np.sqrt(hist / max(hist.sum(), 1.0))
    grey = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    points = np.zeros((2, KEYPOINTS, 2), np.float16)
    desc = np.zeros((2, KEYPOINTS, 32), np.uint8)
    counts = np.zeros(2, np.int16)
    for side, img in enumerate((grey, np.ascontiguousarray(grey[:, ::-1]))):
        found, d = _orb().detectAndCompute(img, None)
        if d is None:
            continue
        order = np.argsort([-k.response for k in found])[:KEYPOINTS]
        points[side, :len(order)] = np.array([k.pt for k in found], np.float32)[order]
        desc[side, :len(order)], counts[side] = d[order], len(order)
    return hist.astype(np.float16), points, desc, counts


class Checker:
    """`inliers(i, j)`: the affine RANSAC inliers of image i (or its mirror) against image j."""

    def __init__(self, features: Features):
        self.f = features
        self.matcher = cv2.BFMatcher(cv2.NORM_HAMMING, crossCheck=True)
        self.checks = 0

    def inliers(self, i: int, j: int) -> int:
        f, best = self.f, 0
        self.checks += 1
        target = f.desc[j, 0, :f.counts[j, 0]]
        for side in (0, 1) if len(target) >= INLIERS else ():
            if f.counts[i, side] < INLIERS:
                continue
            matches = self.matcher.match(f.desc[i, side, :f.counts[i, side]], target)
            if len(matches) >= INLIERS:
                a = f.points[i, side, [m.queryIdx for m in matches]].astype(np.float32)
                b = f.points[j, 0, [m.trainIdx for m in matches]].astype(np.float32)
                _, mask = cv2.estimateAffine2D(a, b, method=cv2.RANSAC, ransacReprojThreshold=3.0,
                                               maxIters=500)
                best = max(best, 0 if mask is None else int(mask.sum()))
            if best >= INLIERS:
                break
        return best

    def same_field(self, i: int, j: int) -> bool:
        return self.inliers(i, j) >= INLIERS

    def rigid(self, i: int, si: int, j: int, sj: int, max_distance: int = 256) -> tuple[int, np.ndarray | None]:
        """(inliers, 3x3 map) of side si of image i onto side sj of image j under a rotation + shift
        RANSAC (scale within 10 %: one microscope, no zoom) over matches at most `max_distance` bits apart."""
        f = self.f
        matches = [m for m in self.matcher.match(f.desc[i, si, :f.counts[i, si]], f.desc[j, sj, :f.counts[j, sj]])
                   if m.distance <= max_distance]
        if len(matches) < 3:
            return 0, None
        a = f.points[i, si, [m.queryIdx for m in matches]].astype(np.float32)
        b = f.points[j, sj, [m.trainIdx for m in matches]].astype(np.float32)
        m, mask = cv2.estimateAffinePartial2D(a, b, method=cv2.RANSAC, ransacReprojThreshold=3.0, maxIters=1000)
        if m is None or abs(np.sqrt(abs(np.linalg.det(m[:, :2]))) - 1) > 0.1:
            return 0, None
        return int(mask.sum()), np.vstack([m, [0, 0, 1]])


REPRESENTATIVES = 3  # partial overlaps: a group's least-augmented images (widest keypoint hull: least fill)
CLOSE = 48  # Hamming bits: only close descriptor matches count towards a partial overlap
PARTIAL_INLIERS, AGREE, PARTIAL_TOTAL, SHIFT_PX = 5, 2, 12, 8.0


def hull_areas(f: Features) -> np.ndarray:
    """Area of each image's keypoint hull: the black fill of a rotation or shift holds no keypoints, so
    the widest hull marks the least-augmented copy."""
    return np.array([cv2.contourArea(cv2.convexHull(f.points[i, 0, :n].astype(np.float32))) if n >= 3 else 0.0
                     for i, n in enumerate(f.counts[:, 0].tolist())])


class Overlaps:
    """`partial(ga, gb)`: do groups ga and gb (label arrays from stage 1) photograph overlapping fields?
    Each group's REPRESENTATIVES are registered onto its first (in both mirror senses); every pair of
    representatives across the groups that keeps >= PARTIAL_INLIERS close matches under a rotation + shift
    gives a map from one first representative to the other. Overlapping fields give the same map from
    several pairs (>= AGREE, >= PARTIAL_TOTAL inliers together, centres within SHIFT_PX); chance matches
    between distinct smears (a nucleus, fill corners) scatter."""

    def __init__(self, checker: Checker, labels: np.ndarray, areas: np.ndarray):
        self.checker, self.labels, self.areas, self.frames = checker, labels, areas, {}
        self.centre = np.array([SIDE / 2, SIDE * 3 / 8, 1.0])

    def _frames(self, group: int) -> list[list[tuple[int, int, np.ndarray]]]:
        """Per mirror sense h: (image, side, map onto the first representative's side h)."""
        if group not in self.frames:
            rigid = self.checker.rigid
            members = np.flatnonzero(self.labels == group)
            reps, seen = [], set()
            for m in members[np.argsort(self.areas[members], kind="stable")[::-1]].tolist():
                key = self.checker.f.desc[m].tobytes()  # identical copies are one piece of evidence, not several
                if key not in seen:
                    seen.add(key)
                    reps.append(m)
                if len(reps) == REPRESENTATIVES:
                    break
            frames = []
            for h in (0, 1):
                frame = [(reps[0], h, np.eye(3))]
                for r in reps[1:]:
                    (n, m), side = max(((rigid(r, s, reps[0], h), s) for s in (0, 1)), key=lambda x: x[0][0])
                    if n >= INLIERS:
                        frame.append((r, side, m))
                frames.append(frame)
            self.frames[group] = frames
        return self.frames[group]

    def partial(self, ga: int, gb: int) -> bool:
        """Either way round: matching and RANSAC are not symmetric, and a weak overlap may pass one way."""
        return self._partial(ga, gb) or self._partial(gb, ga)

    def _partial(self, ga: int, gb: int) -> bool:
        a_frames, (b_frame, _) = self._frames(ga), self._frames(gb)
        for a_frame in a_frames:
            maps = []
            for a, sa, ta in a_frame:
                for b, sb, tb in b_frame:
                    n, u = self.checker.rigid(a, sa, b, sb, CLOSE)
                    if n >= PARTIAL_INLIERS:
                        maps.append((n, tb @ u @ np.linalg.inv(ta)))
            for _, v in maps:
                agree = [n for n, w in maps if np.abs((w - v) @ self.centre).max() < SHIFT_PX
                         and np.abs(w[:2, :2] - v[:2, :2]).max() < 0.1]
                if len(agree) >= AGREE and sum(agree) >= PARTIAL_TOTAL:
                    return True
        return False


NEIGHBOURS = 10  # stage 1: each image is checked against its nearest histograms
VOTE_DESCRIPTORS, VOTES, RATIO = 100, 5, 0.8  # stage 2: descriptor votes that make two groups a candidate
_ROWS = 2048  # rows of one histogram-similarity block


class _Groups:
    def __init__(self, n: int):
        self.parent = np.arange(n)

    def find(self, x: int) -> int:
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def labels(self) -> np.ndarray:
        roots = np.array([self.find(x) for x in range(len(self.parent))], np.int64)
        return np.unique(roots, return_inverse=True)[1].astype(np.int64)


def _nearest(hist: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(i, j, similarity) for each image's k nearest histograms, most similar first (blocks, not n x n)."""
    rows, cols, sims = [], [], []
    for start in range(0, len(hist), _ROWS):
        sim = hist[start:start + _ROWS] @ hist.T
        sim[np.arange(len(sim)), start + np.arange(len(sim))] = -1
        near = np.argpartition(-sim, k - 1, axis=1)[:, :k]
        rows.append(np.repeat(start + np.arange(len(sim)), k))
        cols.append(near.ravel())
        sims.append(np.take_along_axis(sim, near, 1).ravel())
    i, j, s = map(np.concatenate, (rows, cols, sims))
    order = np.argsort(-s, kind="stable")
    return i[order], j[order], s[order]


def _votes(f: Features, reps: np.ndarray, owners: np.ndarray) -> list[tuple[int, int]]:
    """Pairs of representatives (image indices) of different owners (groups) that share >= VOTES
    ratio-test matches (an LSH index), most first."""
    keep = f.counts[reps, 0] >= INLIERS
    reps, owners = reps[keep], owners[keep]
    if len(reps) < 3:
        return []
    train = [f.desc[r, 0, :min(VOTE_DESCRIPTORS, f.counts[r, 0])] for r in reps]
    matcher = cv2.FlannBasedMatcher(dict(algorithm=6, table_number=10, key_size=20, multi_probe_level=0),
                                    dict(checks=50))
    matcher.add(train)
    matcher.train()
    asker, queries = [], []
    for k, r in enumerate(reps):
        for side in (0, 1):
            d = f.desc[r, side, :min(VOTE_DESCRIPTORS, f.counts[r, side])]
            queries.append(d)
            asker += [k] * len(d)
    per_group = int(np.unique(owners, return_counts=True)[1].max())
    votes: dict[tuple[int, int], int] = {}
    for k, found in zip(asker, matcher.knnMatch(np.concatenate(queries), k=per_group + 2)):
        hits = [m for m in found if owners[m.imgIdx] != owners[k]]
        if len(hits) >= 2 and hits[0].distance < RATIO * hits[1].distance:
            key = (min(k, hits[0].imgIdx), max(k, hits[0].imgIdx))
            votes[key] = votes.get(key, 0) + 1
    return [(reps[k], reps[x]) for (k, x), v in sorted(votes.items(), key=lambda kv: -kv[1]) if v >= VOTES]


def feature_groups(f: Features) -> np.ndarray:
    """Group label (int64, 0..k-1) per image. Stage 1 links each image to those of its NEIGHBOURS nearest
    histograms that pass `Checker.same_field` (pairs already in one group are not checked, so ~1 check
    per image). Stage 2 joins groups whose representatives (the first and the least-augmented image of
    each) share >= VOTES ratio-test descriptor matches and either pass the same check (copies of one field
    that stage 1 left apart, largely overlapping fields) or `Overlaps.partial` (fields that overlap only
    partly: few inliers each, but one consistent rotation + shift)."""
    n = len(f)
    if n < 2:
        return np.zeros(n, np.int64)
    cv2.setRNGSeed(0)  # RANSAC draws: the same features give the same groups, whatever ran before
    groups, checker = _Groups(n), Checker(f)
    i, j, _ = _nearest(f.hist.astype(np.float32), min(NEIGHBOURS, n - 1))
    for a, b in zip(i.tolist(), j.tolist()):
        ra, rb = groups.find(a), groups.find(b)
        if ra != rb and checker.same_field(a, b):
            groups.parent[ra] = rb
    first, areas = groups.labels(), hull_areas(f)
    overlaps = Overlaps(checker, first, areas)
    _, firsts = np.unique(first, return_index=True)
    widest = pd.Series(areas).groupby(first).idxmax().to_numpy()
    reps = np.unique(np.r_[firsts, widest])
    for a, b in _votes(f, reps, first[reps]):
        ra, rb = groups.find(a), groups.find(b)
        if ra != rb and (checker.same_field(a, b) or overlaps.partial(first[a], first[b])):
            groups.parent[ra] = rb
    return groups.labels()
