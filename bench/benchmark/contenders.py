"""Benchmark contenders: a registry of (name, kind, config), read from the reference YAMLs and the backbone
spaces, so that a new reference setup or backbone is a new contender without an edit here."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from bench import paths
from bench.errors import ConfigError
from bench.search import SearchConfig, list_spaces, load_space

REFERENCE_DIR = "reference"
# The default set: the null floor, both scratch references, the cheap frozen backbone (its features are computed
# once; it runs only with real pretrained weights) and three search strategies on the scratch space (TPE + median
# pruning, random + no pruning, Hyperband). `contenders=all` adds the rest: KerasTuner random search, the ResNet50
# references and an Optuna search of every backbone space.
DEFAULT_REFERENCES = ("keras_sequential_cnn", "four_block_cnn_sgd", "mobilenet_v2_frozen")


@dataclass(frozen=True)
class Contender:
    name: str
    kind: str  # a key of KINDS
    config: dict[str, Any] = field(default_factory=dict)  # reference: space; search: SearchConfig fields
    default: bool = True  # in the default set (sized to finish in minutes on 2 CPU cores)


def _backbone_spaces() -> list[str]:
    """Spaces of the pretrained-backbone family, found by reading the YAMLs: a new backbone is a new contender."""
    out = []
    for name in list_spaces():
        try:
            if load_space(name).family == "backbone":
                out.append(name)
        except Exception:  # noqa: BLE001 - a broken space fails when it is run, not when contenders are listed
            continue
    return out


def list_contenders() -> list[Contender]:
    refs = [Contender(p.stem, "reference", {"space": str(p)}, default=p.stem in DEFAULT_REFERENCES)
            for p in sorted((paths.SEARCH_SPACES_DIR / REFERENCE_DIR).glob("*.yaml"))]
    searches = [
        Contender("optuna_tpe_scratch", "search", {"space": "scratch_cnn", "engine": "optuna", "sampler": "tpe", "pruner": "median"}),
        Contender("optuna_random_scratch", "search", {"space": "scratch_cnn", "engine": "optuna", "sampler": "random", "pruner": "none"}),
        Contender("kt_random_scratch", "search", {"space": "scratch_cnn", "engine": "keras-tuner", "tuner": "random"},
                  default=False),
        Contender("kt_hyperband_scratch", "search", {"space": "scratch_cnn", "engine": "keras-tuner", "tuner": "hyperband"}),
    ]
    backbones = [Contender(f"optuna_tpe_{name}", "search", {"space": name, "engine": "optuna", "sampler": "tpe", "pruner": "median"},
                           default=False) for name in _backbone_spaces()]
    return [Contender("null_model", "null"), *refs, *searches, *backbones]


def select(spec: str) -> list[Contender]:
    known = list_contenders()
    if spec.strip() in ("default", "all"):
        return [c for c in known if spec.strip() == "all" or c.default]
    by_name = {c.name: c for c in known}
    names = [n.strip() for n in spec.split(",") if n.strip()]
    missing = [n for n in names if n not in by_name]
    if missing:
        raise ConfigError(f"unknown contender {missing[0]!r}; available: default, all, {', '.join(by_name)}")
    return [by_name[n] for n in dict.fromkeys(names)]


@dataclass
class Outcome:
    """What a contender hands back for one seed: its test probabilities and what the table reports beside them."""

    name: str
    kind: str
    run_id: str
    seed: int = 0
    test_prob: np.ndarray | None = None
    val_value: float = float("nan")  # the objective on validation (the selection rule)
    val_f1: float = float("nan")
    train_seconds: float = float("nan")  # summed fit time of every trial
    wall_seconds: float = float("nan")  # the contender's whole wall-clock time
    cpu_seconds: float = float("nan")  # process CPU time over the same span (every thread of this process)
    epochs: int = 0  # training epochs summed over every trial, pruned and failed ones included
    trials: int = 0
    n_params: float = float("nan")
    model_uri: str = ""
    model_run_id: str = ""
    search_config: SearchConfig | None = None
    space: str = ""
    weights: str = ""  # what a pretrained backbone started from ("" for the rest)
    trial: int = 0
    study: str = ""
    started: float = 0.0  # epoch seconds, for the search race
    error: str = ""
