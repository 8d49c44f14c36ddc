"""A throwaway PostgreSQL cluster for tests: Debian's server binaries, a temporary data directory, a free
loopback port, a unix socket in the same directory; stopped and deleted by its owner.

As root, `initdb` and `postgres` refuse to run, so they run as the `postgres` user (which must own the
directory; pytest's tmp_path lives under a root-only folder, so the cluster gets its own temporary folder).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path


def bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb, or None when the server is not installed."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3].split(".")[0]))
    return Path(found[-1]).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Cluster:
    root: Path
    port: int
    bin: Path
    run_as: list[str]

    def url(self, database: str = "postgres", *, driver: str = "postgresql") -> str:
        return f"{driver}://postgres@127.0.0.1:{self.port}/{database}"

    def _run(self, tool: str, *args: str) -> None:
        subprocess.run([*self.run_as, str(self.bin / tool), *args], check=True, capture_output=True, text=True,
                       timeout=120)

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def stop(self) -> None:
        try:
            self._run("pg_ctl", "-D", str(self.root / "data"), "-m", "immediate", "-w", "stop")
        except subprocess.SubprocessError:
            pass
        shutil.rmtree(self.root, ignore_errors=True)


def start() -> Cluster:
    """initdb + pg_ctl start on 127.0.0.1:<free port>, trust auth, fsync off (a test database, not a store)."""
    bin = bin_dir()
    if bin is None:
        raise FileNotFoundError("no /usr/lib/postgresql/*/bin/initdb: install Debian's postgresql")
    root = Path(tempfile.mkdtemp(prefix="hemabench-pg-"))
    run_as: list[str] = []
    if os.geteuid() == 0:
        user = pwd.getpwnam("postgres")
        os.chown(root, user.pw_uid, user.pw_gid)
        run_as = ["runuser", "-u", "postgres", "--"]
    cluster = Cluster(root, _free_port(), bin, run_as)
    try:
        cluster._run("initdb", "-D", str(root / "data"), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                     "--no-sync", "--no-instructions")
        options = (f"-p {cluster.port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off "
                   f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=100")
        cluster._run("pg_ctl", "-D", str(root / "data"), "-l", str(root / "server.log"), "-o", options, "-w",
                     "-t", "60", "start")
    except BaseException:
        cluster.stop()
        raise
    return cluster

