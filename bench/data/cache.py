"""Decode image files once per (file listing, size, resize mode) into an on-disk uint8 `.npy` cache.

The cache key hashes every path with its size and mtime, so any change to a file makes a new
entry. An entry is a folder holding `images.npy` (only the decodable files, in listing order,
memory-mapped on load) and `index.csv` (per listed file: ok, reason, sha1 of its bytes, width,
height). The pass reads every byte once, so the content fingerprint costs no second read. When asked
(near-duplicate grouping), the same pass also computes each file's `near_duplicates_features` from a
fixed-size decode, saved as `<key>.features.npz` beside the entries under a key without the image
size, so every size reuses them; a cached entry without them gets a features-only pass. Entries are
built in a temporary folder and renamed into place, under a file lock, so a killed process never
leaves a partial entry and two processes never decode the same listing twice.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import shutil
import uuid
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
from filelock import FileLock
from PIL import Image, UnidentifiedImageError

from bench import paths
from bench.errors import DataError
from bench.data.near_duplicates_features import Features, image_features
from bench.images import decode_opened

CACHE_VERSION = "3"  # bump when decoding changes pixels or the index columns (3: features beside, not dhash)
WORKERS = min(2, os.cpu_count() or 1)
POOL_MIN_FILES = 400  # below this a process pool costs more than it saves
CHUNK = 128
# The decode pool's workers are spawned, so each re-imports the caller's __main__ script; one whose top level loads
# data would wait in a worker for the cache lock its parent holds, for ever. It stops instead, saying this.
UNGUARDED_MAIN = ("the image decoders are worker processes that re-import your script: put its code under "
                  "`if __name__ == \"__main__\":`")


@dataclass
class Decoded:
    images: np.ndarray  # uint8 (n_ok, S, S, 3), memory-mapped
    index: pd.DataFrame  # one row per input path: ok, reason, sha1, width, height
    from_cache: bool
    key: str
    features: Features | None = None  # one row per input path (zeros where not ok), when asked for


def cache_key(files: pd.DataFrame, size: int, mode: str) -> str:
    digest = hashlib.sha256(f"v{CACHE_VERSION}|{size}|{mode}".encode())
    digest.update(pd.util.hash_pandas_object(files[["path", "bytes", "mtime_ns"]], index=False).values.tobytes())
    return digest.hexdigest()[:24]


def reason_for(exc: BaseException) -> str:
    """One short reason per kind of unusable file, for skipped_files.csv."""
    text = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
    if isinstance(exc, Image.DecompressionBombError) or "pixel limit" in text:
        return f"decompression bomb ({text})"
    if isinstance(exc, UnidentifiedImageError):
        return "not an image (PIL cannot identify it)"
    if "truncated" in text.lower() or isinstance(exc, EOFError):
        return "truncated image"
    return f"unreadable ({type(exc).__name__}: {text[:100]})"


def _decode_one(path: str, size: int, mode: str, features: bool):
    """(array or None, features or None, reason, sha1, width, height) for one file; size 0 = features only."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        return None, None, reason_for(exc), "", 0, 0
    sha1 = hashlib.sha1(data).hexdigest()
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            pixels = decode_opened(image, size, mode) if size else None
        if features:
            with Image.open(io.BytesIO(data)) as image:
                return pixels, image_features(image), "", sha1, width, height
        return pixels, None, "", sha1, width, height
    except Exception as exc:  # PIL raises many types for bad files; each becomes a skip reason
        return None, None, reason_for(exc), sha1, 0, 0


def _decode_chunk(args: tuple[list[str], int, str, bool]):
    paths_, size, mode, features = args
    out = [_decode_one(p, size, mode, features) for p in paths_]
    arrays = [a for a, *_ in out if a is not None]
    stacked = np.stack(arrays) if arrays else np.zeros((0, size, size, 3), np.uint8)
    return stacked, [f for _, f, *_ in out], [meta for _, _, *meta in out]


def _decode_all(paths_: list[str], size: int, mode: str, target: Path | None,
                features: Path | None) -> pd.DataFrame:
    """Decode into `target` (skipped when None) and, when `features` is a path, save the features there."""
    chunks = [(paths_[i:i + CHUNK], size if target else 0, mode, features is not None)
              for i in range(0, len(paths_), CHUNK)]
    if len(paths_) >= POOL_MIN_FILES and WORKERS > 1:
        # spawn, not fork: the caller may already hold TensorFlow's threads, which fork can deadlock
        pool = ProcessPoolExecutor(WORKERS, mp_context=multiprocessing.get_context("spawn"))
        results = pool.map(_decode_chunk, chunks)
    else:
        pool, results = None, map(_decode_chunk, chunks)
    metas, parts, rows = [], [], []
    try:
        for stacked, found, meta in results:
            parts.append(stacked)
            rows += found
            metas += meta
    except BrokenProcessPool as exc:
        raise DataError(f"image decoding stopped: a decoder process died ({exc}); if you called this from a script, "
                        f"{UNGUARDED_MAIN}") from exc
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    if features is not None:
        paths.write_atomically(features, Features.stack(rows).save)
    index = pd.DataFrame(metas, columns=["reason", "sha1", "width", "height"])
    index.insert(0, "ok", index["reason"] == "")
    if target is None:
        return index
    images = np.lib.format.open_memmap(target, mode="w+", dtype=np.uint8, shape=(sum(len(p) for p in parts), size, size, 3))
    start = 0
    for part in parts:
        images[start:start + len(part)] = part
        start += len(part)
    images.flush()
    del images
    return index


def decode_files(files: pd.DataFrame, size: int, mode: str, features: bool = False) -> Decoded:
    """Decoded pixels of `files` (columns path, bytes, mtime_ns), from the cache when present; with
    `features`, also each file's near-duplicate features (from the cache when present)."""
    if getattr(multiprocessing.current_process(), "_inheriting", False):  # as multiprocessing.spawn itself checks
        raise DataError(f"data was loaded while a worker process was starting: {UNGUARDED_MAIN}")
    root = paths.cache_dir() / "decoded"
    root.mkdir(parents=True, exist_ok=True)
    key = cache_key(files, size, mode)
    entry = root / key
    saved = root / f"{cache_key(files, 0, 'features')}.features.npz" if features else None
    from_cache = True
    with FileLock(str(root / f"{key}.lock")):
        wanted = saved if saved is not None and not saved.is_file() else None
        if not (entry / "index.csv").is_file():
            from_cache = False
            shutil.rmtree(entry, ignore_errors=True)  # a partial entry from before atomic renames
            tmp = root / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            try:
                index = _decode_all(files["path"].tolist(), size, mode, tmp / "images.npy", wanted)
                index.to_csv(tmp / "index.csv", index=False)
                os.replace(tmp, entry)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        elif wanted is not None:
            from_cache = False
            _decode_all(files["path"].tolist(), size, mode, None, wanted)
    index = pd.read_csv(entry / "index.csv", dtype={"reason": str, "sha1": str}, keep_default_na=False)
    if len(index) != len(files):
        raise RuntimeError(f"cache entry {entry} lists {len(index)} files, expected {len(files)}; delete it")
    found = Features.load(saved) if saved is not None else None
    return Decoded(np.load(entry / "images.npy", mmap_mode="r"), index, from_cache, key, found)
