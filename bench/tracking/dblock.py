"""Create or migrate a sqlite database under a file lock, so that processes starting together do not crash.

Two processes that open a fresh sqlite file at the same moment both try to create the tables, and one dies
with `table ... already exists` or `UNIQUE constraint failed: alembic_version` (3 of 4 tries on these
machines, for Optuna's RDB storage; MLflow's tracking store migrates the same way). Holding `<db>.lock`
while a process creates its store makes the second one find the tables ready. Server databases
(PostgreSQL, MySQL) are left alone: the coordinator creates them before it starts workers.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from filelock import FileLock

LOCK_TIMEOUT_S = 300.0  # a first MLflow migration takes ~6 s; minutes mean a stuck process, not a slow one


def sqlite_path(url: str) -> Path | None:
    """The file behind a `sqlite:///…` URL (relative or absolute), or None for any other URL or in-memory sqlite."""
    if not url.startswith("sqlite:"):
        return None
    path = urlsplit(url).path  # "sqlite:////abs/x.db" -> "//abs/x.db"; "sqlite:///rel.db" -> "/rel.db"
    path = path[1:] if path.startswith("/") else path
    return Path(path) if path and path != ":memory:" else None


@contextlib.contextmanager
def creating(url: str) -> Iterator[None]:
    """Hold `<db file>.lock` while the body creates or migrates the sqlite database at `url`; no-op otherwise."""
    path = sqlite_path(url)
    if path is None:
        yield
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(f"{path}.lock", timeout=LOCK_TIMEOUT_S):
        yield


def with_driver(url: str) -> str:
    """`postgresql://` means psycopg 3 to SQLAlchemy 2.1; with only psycopg2 installed (our pin), name it."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    return url


def redact(url: str) -> str:
    """`url` with its password shown as `***`, for output and run parameters; a path or plain name unchanged."""
    if "://" not in url:
        return url
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url


_READY: set[str] = set()


def prepare_mlflow(uri: str) -> None:
    """Open MLflow's tracking and registry stores once per process, under the lock when they are sqlite.

    Both stores run their migrations when first opened; MLflow caches the opened stores per URI, so later
    clients in this process reuse them.
    """
    if uri in _READY or sqlite_path(uri) is None:
        return
    from mlflow.tracking import MlflowClient

    with creating(uri):
        c = MlflowClient(tracking_uri=uri, registry_uri=uri)
        c.search_experiments(max_results=1)
        c.search_registered_models(max_results=1)
    _READY.add(uri)
