"""Real `python -m bench search` processes for the worker, resume and fault tests: a tiny space (1–2 conv
blocks of 4–8 filters), tiny synthetic data, 32 px, 1 epoch, and helpers to read the study back."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from bench import paths
from tests.conftest import TINY_DATA

TINY_SPACE: dict[str, Any] = {
    "name": "tiny",
    "family": "scratch_cnn",
    "params": {
        "n_blocks": {"type": "int", "low": 1, "high": 2, "default": 2},
        "filters": {"type": "categorical", "choices": [4, 8], "default": 8, "repeat": "n_blocks"},
        "kernel_size": 3, "convs_per_block": 1, "batch_norm": False, "conv_dropout": 0.0, "pooling": "global_avg",
        "dense_layers": 0, "dropout": 0.0, "optimizer": "adam",
        "learning_rate": {"type": "float", "low": 1.0e-3, "high": 1.0e-2, "log": True, "default": 3.0e-3},
        "batch_size": 16, "class_weight": "none",
        "aug_flip": False, "aug_rotation": 0.0, "aug_zoom": 0.0, "aug_contrast": 0.0,
    },
}


def write_space(folder: Path, name: str = "tiny", **params: Any) -> Path:
    """TINY_SPACE with `params` replacing entries, as `<folder>/<name>.yaml`."""
    space = {**TINY_SPACE, "name": name, "params": {**TINY_SPACE["params"], **params}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False))
    return path


def argv(space: Path, storage: str, **params: Any) -> list[str]:
    values = dict(data=TINY_DATA, space=str(space), trials=2, epochs=1, image_size=32, experiment="tests",
                  storage=storage, registered_model="tests-model", sampler="random", pruner="none")
    values.update(params)
    out = [sys.executable, "-m", "bench", "search"]
    for key, value in values.items():
        out += [f"--{key.replace('_', '-')}", str(value)]
    return out


def env(**extra: str) -> dict[str, str]:
    """This process's environment (the `tracking` fixture's MLflow URI and cache), quiet TensorFlow."""
    return {**os.environ, "PYTHONPATH": str(paths.PROJECT_ROOT), "TF_CPP_MIN_LOG_LEVEL": "2", **extra}


def run(space: Path, storage: str, *, cwd: Path, timeout: float = 240, **params: Any) -> subprocess.CompletedProcess:
    return subprocess.run(argv(space, storage, **params), cwd=cwd, env=env(), capture_output=True, text=True,
                          timeout=timeout)


def trial_runs(c: Any, study: str) -> list[Any]:
    """Every MLflow trial run of `study`, by trial number."""
    experiment = c.get_experiment_by_name("tests")
    runs = c.search_runs([experiment.experiment_id], f"tags.`hemabench.study` = '{study}' and "
                                                      f"tags.`hemabench.role` = 'trial'", max_results=1000)
    return sorted(runs, key=lambda r: int(r.data.tags["hemabench.trial"]))


def parents(c: Any, study: str) -> list[Any]:
    experiment = c.get_experiment_by_name("tests")
    return c.search_runs([experiment.experiment_id], f"tags.`hemabench.study` = '{study}' and "
                                                     f"tags.`hemabench.role` = 'parent'")
