"""The layout registry: (detect, load) pairs that turn a `--data` string into a `Source`.

A `Source` is what a layout finds before any pixel is decoded: either a table of image files
(with class, official split and group per file) or arrays that are already images. Layouts are
tried in ascending `order`; the first whose `detect` accepts the string loads it. Adding a layout
is one decorated function in a module of this package, imported by its `__init__`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bench.errors import DataError
from bench.registry import Registry

FILE_COLUMNS = ["path", "file", "class", "official", "group", "bytes", "mtime_ns"]
SPLIT_NAMES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class Source:
    """Images found by a layout: `files` (one row per candidate file) or `arrays` (decoded already).

    `official` holds the published split of each image ("train", "val", "test") or "" where none
    is published; `group` holds the source (patient, smear…) or "" where unknown.
    """

    layout: str
    class_names: list[str]
    root: str
    resize_mode: str = "pad"
    files: pd.DataFrame | None = None
    x: np.ndarray | None = None  # uint8 (N,S,S,3), with `table` giving file/class/official/group per row
    table: pd.DataFrame | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    options: dict = field(default_factory=dict)  # layout options that change the result (fingerprinted)


@dataclass(frozen=True)
class Layout:
    """`load(data, *, image_size, seed, options) -> Source`, tried in ascending `order` by `detect`."""

    name: str
    order: int
    detect: Callable[[str], bool]
    load: Callable[..., Source]
    description: str


LAYOUTS: Registry[Layout] = Registry("layout", Layout, field="load", error=DataError)


def register_layout(name: str, *, order: int, detect: Callable[[str], bool], description: str
                    ) -> Callable[[Callable[..., Source]], Callable[..., Source]]:
    """Register `load(data, *, image_size, seed, options) -> Source` under `name`."""
    return LAYOUTS.decorator(name, order=order, detect=detect, description=description)


def list_layouts() -> list[str]:
    """Layout names in detection order."""
    return [layout.name for layout in sorted(LAYOUTS.specs(), key=lambda layout: layout.order)]


def get_layout(name: str) -> Layout:
    return LAYOUTS.get(name)


def detect_layout(data: str) -> Layout:
    """The first layout, in declared order, that accepts `data`; a one-line DataError otherwise."""
    for name in list_layouts():
        if LAYOUTS.get(name).detect(data):
            return LAYOUTS.get(name)
    if not Path(data).exists():
        raise DataError(
            f"--data {data!r} is not 'synthetic', 'medmnist:<name>@<size>', a dataset card in "
            f"datasets/, or an existing .npz file or directory"
        )
    raise DataError(f"--data {data!r}: no image layout recognised (tried {', '.join(list_layouts())})")


def content_fingerprint(source: Source) -> str:
    """Hash of what a layout found: relative paths, labels, official splits, groups, options, and the
    content of every file (its `sha1` column, filled by the decode pass), never sizes or mtimes, so
    the same files copied to another machine give the same fingerprint."""
    digest = hashlib.sha256(f"{source.layout}|{source.class_names}|{sorted(source.options.items())!r}".encode())
    if source.files is not None:
        if "sha1" not in source.files:
            raise ValueError("content_fingerprint needs the files' sha1 column (set by the decode pass)")
        cols = ["file", "class", "official", "group", "sha1"]
        digest.update(pd.util.hash_pandas_object(source.files[cols], index=False).values.tobytes())
    if source.x is not None:
        digest.update(np.ascontiguousarray(source.x).data)
        digest.update(pd.util.hash_pandas_object(source.table, index=False).values.tobytes())
    return digest.hexdigest()
