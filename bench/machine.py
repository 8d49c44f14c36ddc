"""The machine a run's numbers come from, in one line: CPU model, cores, architecture, the vector units that
change TensorFlow's speed (AVX2, AVX-512, AMX), memory and GPUs. Machines drawn for one project can differ ~2× in
speed, so every study, trial and benchmark run records it (`hemabench.machine`), and every benchmark script that
times something prints it. Linux's /proc/cpuinfo names the CPU and its flags; elsewhere `platform.processor()` is
all there is."""

from __future__ import annotations

import functools
import os
import platform
import sys
from pathlib import Path

# cpuinfo flags worth naming, in this order, as the line names them (the widest of AVX2 / AVX-512 is enough).
_UNITS = (("amx_bf16", "AMX"), ("avx512f", "AVX-512"), ("avx2", "AVX2"))


def _cpuinfo() -> tuple[str, set[str]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.processor() or platform.machine(), set()
    fields = {key.strip(): value.strip() for key, value in (line.split(":", 1) for line in text.splitlines()
                                                             if ":" in line)}
    model = fields.get("model name") or fields.get("Model") or platform.processor() or platform.machine()
    return model, set(fields.get("flags", fields.get("Features", "")).split())


def _memory_gib() -> float | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    except (ValueError, OSError, AttributeError):
        return None


def _gpus() -> list[str] | None:
    """GPU names TensorFlow sees; None (unknown) when TensorFlow is not loaded yet: describing a machine must not
    load it."""
    tf = sys.modules.get("tensorflow")
    if tf is None or not hasattr(tf, "config"):
        return None
    try:
        return [tf.config.experimental.get_device_details(d).get("device_name", d.name)
                for d in tf.config.list_physical_devices("GPU")]
    except Exception:  # noqa: BLE001 - a description never fails a run
        return None


@functools.cache
def _cpu() -> str:
    model, flags = _cpuinfo()
    units = [name for flag, name in _UNITS if flag in flags]
    if "AVX-512" in units:
        units = [unit for unit in units if unit != "AVX2"]
    try:
        cpus = len(os.sched_getaffinity(0))  # what this process may use (a container's or taskset's share)
    except AttributeError:
        cpus = os.cpu_count() or 1
    memory = _memory_gib()
    return ", ".join([model, f"{cpus} CPUs", platform.machine(), *units, *([f"{memory:.0f} GiB"] if memory else [])])


def describe() -> str:
    """E.g. `Intel(R) Xeon(R) Processor, 2 CPUs, x86_64, AMX, AVX-512, 24 GiB, no GPU`; the GPU part is left out
    while TensorFlow is not loaded. The host's name is not part of it (`hemabench.process` records that)."""
    gpus = _gpus()
    gpu = [] if gpus is None else [", ".join(gpus) if gpus else "no GPU"]
    return ", ".join([_cpu(), *gpu])
