"""The one-line machine description every run and benchmark script records (bench.machine)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

from bench.paths import PROJECT_ROOT


def test_describing_the_machine_names_its_cpus_and_architecture_without_loading_tensorflow() -> None:
    code = ("import sys; from bench.machine import describe; print(describe()); "
            "print('tensorflow' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    line, loaded = out.stdout.splitlines()
    assert loaded == "False"
    assert f"{len(os.sched_getaffinity(0))} CPUs" in line and platform.machine() in line
    assert "GPU" not in line  # unknown until TensorFlow is loaded, so not claimed either way


def test_with_tensorflow_loaded_the_description_says_which_gpus_it_sees() -> None:
    code = ("import bench, tensorflow as tf; from bench.machine import describe; "
            "print(describe()); print(len(tf.config.list_physical_devices('GPU')))")
    out = subprocess.run([sys.executable, "-c", code], cwd=PROJECT_ROOT, capture_output=True, text=True, check=True)
    line, gpus = out.stdout.splitlines()[-2:]
    assert line.endswith("no GPU") if gpus == "0" else "no GPU" not in line
