"""Every path HemaBench uses comes from here, each overridable by an environment variable."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

PROJECT_ROOT = Path(__file__).resolve().parent.parent
SEARCH_SPACES_DIR = Path(os.environ.get("BENCH_SEARCH_SPACES", PROJECT_ROOT / "search_spaces"))
DATASET_CARDS_DIR = Path(os.environ.get("BENCH_DATASETS", PROJECT_ROOT / "datasets"))
SHARED_DIR = Path(os.environ.get("BENCH_SHARED_DIR", PROJECT_ROOT.parent / "shared"))


def cache_dir() -> Path:
    """Decoded-image and feature caches (`BENCH_CACHE_DIR`, default `~/.cache/hemabench`)."""
    return Path(os.environ.get("BENCH_CACHE_DIR", Path.home() / ".cache" / "hemabench"))


def data_dir() -> Path | None:
    """Root that relative dataset-card paths may resolve against (`BENCH_DATA_DIR`)."""
    value = os.environ.get("BENCH_DATA_DIR")
    return Path(value) if value else None


def tracking_uri() -> str:
    """`MLFLOW_TRACKING_URI` when set, else `sqlite:///mlflow.db` in the working directory."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{Path.cwd() / 'mlflow.db'}"


def write_atomically(path: Path, write: Callable[[BinaryIO], None]) -> None:
    """Write `path` through `write(handle)` into a temporary file beside it (`.<name>-<random>.tmp`), then rename it
    into place: a reader sees the whole file or none, and a failed write leaves no temporary file behind."""
    tmp = path.with_name(f".{path.name}-{uuid.uuid4().hex[:8]}.tmp")
    try:
        with open(tmp, "wb") as handle:
            write(handle)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
