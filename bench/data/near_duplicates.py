"""Near-duplicate grouping: a 64-bit perceptual hash per image, then the connected components of the
images whose hashes differ in at most `threshold` bits.

`image_hash` is computed once per file in the decode pass (`bench.data.cache`) and cached with the
pixels; `near_duplicate_groups` links the hashes (single linkage) and `group_table` makes the
components the groups of a table that declares none, so carved splits keep copies together.

The hash is exactly invariant to the 8 rotations/flips and robust to small shifts and JPEG
re-encoding: grey level; an exact 32×32 area average (integer overlap weights in float64, so it
commutes with flips, which PIL's `resize` does not); `imagehash.dhash` of the two orientations that
come nearest to first intensity moments mx >= my >= 0 (exact integers). Two, because near a tie a
1-pixel shift can swap the winner: images link when best–best, best–second or second–best are close.
dhash was chosen over phash/whash/ahash for the fewest false links between distinct real smears,
which is what ruins single linkage. It does NOT group copies made with free rotation, shear and
~10 % shifts (Keras `ImageDataGenerator` style, as in the Kaggle blood-cells set): measured in
`datasets/README.md` (ARI 0.077 vs the provenance groups); declare groups for such data instead.
ORB keypoints checked by affine RANSAC do group them (ARI 0.964, `benchmarks/near_duplicates_kaggle.py
--method features`), but are not wired in here yet (too slow so far: 240 s on loaded 2 cores).
"""

from __future__ import annotations

import hashlib
import os
import uuid
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

import imagehash
import numpy as np
import pandas as pd
from PIL import Image
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from bench import paths
from bench.errors import DataError
from bench.validation import Rules, between, check, one_of

HASH_BITS = 64
SMALL = 32  # side of the area-averaged grey image the hash reads
DEFAULT_THRESHOLD = 8  # generated copies are within 6 bits, distinct generated sources >= 16 apart
GROUP_PREFIX = "dup:"
HASH_COLUMN = "dhash"  # 2 x 16 hex digits per image (best, second orientation) in the cached index and table
_CHUNK = 1024  # rows of one pairwise-distance block (1024 x n uint8)
_WEIGHTS = np.left_shift(np.uint64(1), np.arange(63, -1, -1, dtype=np.uint64))
RULES: Rules = (("threshold", between(0, HASH_BITS)),)


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
    """(n_out, n_in) integer overlap weights; exactly centro-symmetric, so the shrink commutes with flips."""
    lo_out = np.arange(n_out)[:, None] * n_in
    lo_in = np.arange(n_in)[None, :] * n_out
    overlap = np.minimum(lo_out + n_in, lo_in + n_out) - np.maximum(lo_out, lo_in)
    return np.clip(overlap, 0, None).astype(np.float64)


def _shrink(gray: np.ndarray, size: int = SMALL) -> np.ndarray:
    """Exact area average of a 2-D uint8 array to size x size (integer sums stay below 2**53)."""
    h, w = gray.shape
    total = _area_matrix(h, size) @ gray.astype(np.float64) @ _area_matrix(w, size).T
    return np.rint(total / float(h * w)).astype(np.uint8)


def _ranked(small: np.ndarray) -> list[tuple[int, int]]:
    """(−margin, dhash) of the 8 rotations/flips of `small`, best first. The margin, min(mx − my, my)
    of the first moments about the centre, is >= 0 for exactly one transform unless there is a tie; a
    flip negates a moment and a transpose swaps them, so the ranking is the same for any rotation or
    flip of the input. Far steadier under crops than the minimum over all 8 hashes."""
    coord = (2 * np.arange(small.shape[0]) - (small.shape[0] - 1)).astype(np.int64)
    scored = []
    for k in range(4):
        for t in (np.rot90(small, k), np.rot90(small, k)[:, ::-1]):
            a = t.astype(np.int64)
            mx, my = int((a.sum(0) * coord).sum()), int((a.sum(1) * coord).sum())
            scored.append((-min(mx - my, my), t))
    cut = sorted(score for score, _ in scored)[1]  # hash only the top two (and any tied with the second)
    return sorted((score, _dhash(t)) for score, t in scored if score <= cut)


def _dhash(small: np.ndarray) -> int:
    bits = imagehash.dhash(Image.fromarray(np.ascontiguousarray(small))).hash.ravel()
    return int((bits.astype(np.uint64) * _WEIGHTS).sum(dtype=np.uint64))


def image_hash(image: Image.Image) -> tuple[int, int]:
    """Two 64-bit hashes (best and second orientation) of a PIL image of any mode and size, identical
    for its 8 rotations/flips.

    It reads the pixels without changing `image`; call it after `decode_opened`, which has loaded
    them at the JPEG `draft` scale (before it, `convert` would decode the full size)."""
    gray = image.convert("L") if image.mode in ("L", "RGB") else image.convert("RGB").convert("L")
    (_, best), (_, second) = _ranked(_shrink(np.asarray(gray, dtype=np.uint8)))[:2]
    return best, second


def to_hex(value: tuple[int, int]) -> str:
    return f"{value[0]:016x}{value[1]:016x}"


def from_hex(values) -> np.ndarray:
    """(n, 2) uint64 from `to_hex` strings."""
    return np.array([(int(v[:16], 16), int(v[16:], 16)) for v in values], dtype=np.uint64).reshape(-1, 2)


def _popcount(x: np.ndarray) -> np.ndarray:
    if hasattr(np, "bitwise_count"):  # numpy >= 2
        return np.bitwise_count(x)
    table = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)
    return table[x.view(np.uint8)].reshape(*x.shape, 8).sum(-1, dtype=np.uint8)


def _distance(h: np.ndarray, start: int) -> np.ndarray:
    """Bits between rows start:start+_CHUNK and columns start: of (n, k) hashes: best–best, and with
    two columns also best–second and second–best (a tie that one image broke the other way)."""
    block, rest = h[start:start + _CHUNK], h[start:]
    d = _popcount(block[:, None, 0] ^ rest[None, :, 0])
    if h.shape[1] > 1:
        d = np.minimum(d, _popcount(block[:, None, 0] ^ rest[None, :, 1]))
        d = np.minimum(d, _popcount(block[:, None, 1] ^ rest[None, :, 0]))
    return d


def close_pairs(hashes: np.ndarray, threshold: int) -> tuple[np.ndarray, np.ndarray]:
    """(i, j), i < j, for every pair within `threshold` bits, from (n,) or (n, 2) hashes: the upper
    triangle in blocks (O(n²): ~1.5 s for 12k pairs of hashes; beyond ~100k images a multi-index
    hash would be needed)."""
    h = np.asarray(hashes, dtype=np.uint64)
    h = np.ascontiguousarray(h.reshape(len(h), -1))
    rows, cols = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    for start in range(0, len(h), _CHUNK):
        i, j = np.nonzero(_distance(h, start) <= threshold)
        keep = i < j  # both relative to `start`
        rows.append(start + i[keep])
        cols.append(start + j[keep])
    return np.concatenate(rows).astype(np.int64), np.concatenate(cols).astype(np.int64)


def near_duplicate_groups(hashes: np.ndarray, *, threshold: int = DEFAULT_THRESHOLD) -> np.ndarray:
    """Connected-component label (int64, 0..k-1) per image of (n,) or (n, 2) hashes, linking images
    within `threshold` bits."""
    check(RULES, {"threshold": threshold}, error=DataError)
    h = np.asarray(hashes, dtype=np.uint64)
    if len(h) == 0:
        return np.zeros(0, np.int64)
    i, j = close_pairs(h, threshold)
    graph = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(len(h), len(h)))
    return connected_components(graph, directed=False)[1].astype(np.int64)


@dataclass(frozen=True)
class GroupSummary:
    n_images: int
    n_groups: int
    largest: int
    singletons: int

    def __str__(self) -> str:
        return (f"{self.n_groups:,} near-duplicate groups in {self.n_images:,} images "
                f"(largest {self.largest}, {self.singletons:,} singletons)")


def group_summary(labels) -> GroupSummary:
    labels = np.asarray(labels)
    if labels.size == 0:
        return GroupSummary(0, 0, 0, 0)
    _, sizes = np.unique(labels, return_counts=True)
    return GroupSummary(int(labels.size), int(len(sizes)), int(sizes.max()), int((sizes == 1).sum()))


def _cached_groups(hashes: np.ndarray, threshold: int) -> np.ndarray:
    """`near_duplicate_groups`, kept in `<cache>/near_duplicates/` by content so cached loads skip the O(n²) pass."""
    digest = hashlib.sha256(np.ascontiguousarray(hashes).tobytes() + f"|{threshold}".encode()).hexdigest()[:24]
    folder = paths.cache_dir() / "near_duplicates"
    path = folder / f"{digest}.npy"
    if path.is_file():
        return np.load(path)
    labels = near_duplicate_groups(hashes, threshold=threshold)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{digest}-{uuid.uuid4().hex[:8]}.npy"
    np.save(tmp, labels)
    os.replace(tmp, path)  # atomic: a reader sees the whole file or none
    return labels


def group_table(table: pd.DataFrame, *, threshold: int = DEFAULT_THRESHOLD) -> GroupSummary | None:
    """Set `table["group"]` to `dup:<component>` when no row declares a group and every row has a
    hash; the summary of what was found, or None when the table was left alone."""
    if HASH_COLUMN not in table or (table["group"] != "").any() or (table[HASH_COLUMN] == "").any():
        return None
    labels = _cached_groups(from_hex(table[HASH_COLUMN]), threshold)
    table["group"] = [f"{GROUP_PREFIX}{k}" for k in labels]
    return group_summary(labels)


OPTION = "near_duplicates"


def data_option(data: str) -> tuple[str, bool | None]:
    """`data` without a `near_duplicates=on|off` query item, and that setting (None when absent):
    `cells?near_duplicates=off`, `synthetic?n_per_class=50&near_duplicates=off`."""
    base, mark, query = data.partition("?")
    if not mark:
        return data, None
    items = parse_qsl(query, keep_blank_values=True)
    values = [value for key, value in items if key == OPTION]
    if not values:
        return data, None
    setting = _switch(values[-1])
    rest = urlencode([(key, value) for key, value in items if key != OPTION])
    return base + (f"?{rest}" if rest else ""), setting


def _switch(value) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    check(((OPTION, one_of(ON + OFF)),), {OPTION: text}, error=DataError)
    return text in ON


ON, OFF = ("on", "true", "yes", "1"), ("off", "false", "no", "0")


def apply(table: pd.DataFrame, options: dict, argument: bool | None, option: bool | None) -> GroupSummary | None:
    """Group `table` by near-duplicates unless turned off (the load argument, then the `--data`
    option, then the card's `near_duplicates` key; on by default). Records the setting in `options`,
    which the fingerprint covers."""
    setting = next((s for s in (argument, option, options.get(OPTION)) if s is not None), True)
    enabled = _switch(setting)
    options[OPTION] = DEFAULT_THRESHOLD if enabled else False
    return group_table(table, threshold=DEFAULT_THRESHOLD) if enabled else None
