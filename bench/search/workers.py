"""Worker processes: N processes on one machine (or many machines) working on one study through its storage.

The coordinator (a plain `python -m bench search`) creates the parent MLflow run and the study, starts
`workers` processes of the same command with `BENCH_PARENT_RUN_ID` set, waits for them (and for trials still
running on other machines), ends what dead workers left RUNNING, and writes the summary once. A process started with `BENCH_PARENT_RUN_ID` is a worker: it attaches
its trials to that parent run and skips the summary, so more workers can join from other machines.

Workers are separate interpreters (subprocesses), never forks: TensorFlow does not survive `fork`.

Each process also has an identity (host, boot id, pid, start time) that trials record, so that a later process
on the same host can tell that the process running a trial is gone (SIGKILL, OOM killer, power loss).
"""

from __future__ import annotations

import dataclasses
import os
import signal
import socket
import subprocess
import sys
import time
import zlib
from pathlib import Path
from typing import Any

from bench.errors import BenchError, ConfigError
from bench.search.config import SearchConfig
from bench.search.engines import ENGINES

PARENT_ENV = "BENCH_PARENT_RUN_ID"
WORKER_ENV = "BENCH_WORKER"  # the worker's index, for its output prefix and run tags
HOST_ENV = "BENCH_HOST"  # this machine's name in trial records (default: the hostname); distinct per machine
HEARTBEAT_ENV = "BENCH_HEARTBEAT_S"  # RDB storages: heartbeat interval; a trial silent for 4x that is dead
HEARTBEAT_S = 30
STOP_GRACE_S = 30.0  # after SIGINT, how long a worker may take to end its trial as FAILED before SIGKILL


def parent_run_id() -> str | None:
    """The parent run this process works for, when it was started as a worker."""
    return os.environ.get(PARENT_ENV) or None


def heartbeat() -> tuple[int, int]:
    """(interval, grace) in seconds for an RDB storage's trial heartbeat: `BENCH_HEARTBEAT_S` (default 30) and
    four times that. Every process on a study must use the same values."""
    value = os.environ.get(HEARTBEAT_ENV, "")
    if value and not (value.isdigit() and int(value) >= 1):
        raise ConfigError(f"{HEARTBEAT_ENV} must be a whole number of seconds >= 1. Got {value!r} instead.")
    interval = int(value or HEARTBEAT_S)
    return interval, 4 * interval


def host() -> str:
    """This machine's name in trial records: `BENCH_HOST`, else the hostname. Machines that share a hostname
    (cloned VMs, containers) need distinct names, or one could judge the other's trials by its own pids."""
    return os.environ.get(HOST_ENV) or socket.gethostname()


# --- process identity and liveness -------------------------------------------------------------------------

def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _start_ticks(pid: int) -> str:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat); "" when unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return ""
    return stat.rsplit(")", 1)[1].split()[19]  # fields after "(comm)" start at field 3


def identity() -> dict[str, Any]:
    """Who runs a trial: host, boot, pid and start time (pid + start time survive pid reuse)."""
    pid = os.getpid()
    return {"host": host(), "boot": _boot_id(), "pid": pid, "start": _start_ticks(pid)}


def is_dead(who: dict[str, Any] | None) -> bool:
    """True only when `who` ran on this host and that process is certainly gone; other hosts are unknown
    (False): their trials are failed by the storage heartbeat (RDB) instead."""
    if not who or who.get("host") != host():
        return False
    if who.get("boot") and _boot_id() and who["boot"] != _boot_id():
        return True  # the machine rebooted since
    pid = int(who.get("pid", 0))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, owned by someone else
    started = _start_ticks(pid)
    return bool(who.get("start") and started and started != who["start"])  # the pid now belongs to another process


def sampler_seed(seed: int) -> int:
    """The coordinator samples with `seed` (reproducible alone); each worker with its own seed derived from it."""
    if parent_run_id() is None:
        return seed
    return seed + 1 + zlib.crc32(f"{host()}:{os.getpid()}".encode()) % 1_000_000


# --- spawning ----------------------------------------------------------------------------------------------

def command(config: SearchConfig) -> list[str]:
    """`python -m bench search` with every parameter of `config`, as one worker process (workers=1), with the
    storage and study resolved here so that every worker opens the same study."""
    argv = [sys.executable, "-m", "bench", "search"]
    for field in dataclasses.fields(config):
        value = {"workers": 1, "storage": config.storage_url, "study": config.study_name}.get(field.name,
                                                                                              getattr(config, field.name))
        argv += [f"--{field.name.replace('_', '-')}", str(value)]
    return argv


@dataclasses.dataclass
class Pool:
    """Worker subprocesses started by the coordinator."""

    procs: list[subprocess.Popen]

    def wait(self) -> None:
        """Wait for every worker; on an interrupt or error here, stop them first. A failed worker is reported
        (its finished trials are kept); when every worker failed, the search stops with one line."""
        try:
            codes = [p.wait() for p in self.procs]
        except BaseException:
            self.stop()
            raise
        failed = [(index, rc) for index, rc in enumerate(codes, start=1) if rc != 0]
        for index, rc in failed:
            print(f"worker {index} exited with status {rc}; its finished trials are kept", flush=True)
        if failed and len(failed) == len(codes):
            raise BenchError(f"all {len(codes)} workers failed (exit status {', '.join(str(rc) for _, rc in failed)}; "
                             f"their error lines are above); the same command resumes the study")

    def stop(self) -> None:
        """Ask each worker to stop (SIGINT: its trial ends FAILED, not RUNNING), then kill stragglers."""
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + STOP_GRACE_S
        for p in self.procs:
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()


def spawn(config: SearchConfig, n: int, parent_run_id: str) -> Pool:
    """Start `n` worker processes for `config` attached to `parent_run_id` (same environment and directory)."""
    procs = []
    for i in range(1, n + 1):
        env = {**os.environ, PARENT_ENV: parent_run_id, WORKER_ENV: str(i)}
        env.pop("MLFLOW_RUN_ID", None)  # `mlflow run`'s run is the coordinator's; workers attach to the parent
        procs.append(subprocess.Popen(command(config), env=env))
    if procs:
        print(f"started {n} worker process(es): pid {', '.join(str(p.pid) for p in procs)}", flush=True)
    return Pool(procs)


def start(config: SearchConfig, parent_run_id: str) -> Pool:
    """Prepare the engine's shared storage, then start `config.workers` worker processes (none for 1: the
    caller runs the trials itself). All start together, so they share the trials from the first one.

    `workers=0` starts none: this process only coordinates. It prepares the storage, prints how other machines
    join (`BENCH_PARENT_RUN_ID=<id>`), and the engine then waits for their trials before the summary."""
    if config.workers == 1:
        return Pool([])
    if config.workers == 0 and os.environ.get(PARENT_ENV):
        raise ConfigError(f"The 'workers' parameter must be at least 1 in a worker ({PARENT_ENV} is set; 0 means "
                          f"coordinate only). Got 0 instead.")
    spec = ENGINES.get(config.engine)
    if not spec.shared_storage:
        raise ConfigError(f"The 'workers' parameter must be 1 for engine {config.engine!r} (it has no shared storage). "
                          f"Got {config.workers} instead.")
    spec.prepare(config)
    if config.workers == 0:
        print(f"coordinating only: workers join study {config.study_name} with {PARENT_ENV}={parent_run_id} "
              f"and the same arguments", flush=True)
        return Pool([])
    return spawn(config, config.workers, parent_run_id)
