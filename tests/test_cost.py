"""Cost-aware trials: `timeout` is a deadline (the running trial stops at its next epoch end and completes with its
best epoch), every trial logs FLOPs per image and images/s, and a space's cost ceilings reject a trial."""

from __future__ import annotations

import time
from pathlib import Path

import keras
import pytest

from bench.data import load_dataset
from bench.errors import SpaceError
from bench.search import list_engines
from bench.search import study as search
from bench.search.space import parse_space
from bench.training import CostCeiling, OverCostCeiling, fit_and_score, flops_per_image
from tests.conftest import TINY_DATA, children, tiny_config

PARAMS = {"n_blocks": 2, "filters_1": 8, "filters_2": 16, "learning_rate": 1e-3, "batch_size": 16}


@pytest.fixture(scope="module")
def tiny():
    return load_dataset(TINY_DATA, image_size=32, seed=0)


def test_flops_count_conv_and_dense_multiply_adds_from_layer_shapes() -> None:
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same")(inputs)  # 8*8*4 outputs x 3*3*3 multiply-adds
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)  # 8*8*4 outputs x 3*3
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(5)(x)  # 256 x 5
    assert flops_per_image(keras.Model(inputs, outputs)) == 2 * (8 * 8 * 4 * 27 + 8 * 8 * 4 * 9 + 256 * 5)


def test_a_passed_deadline_stops_at_the_epoch_end_and_keeps_the_best_epoch(tiny) -> None:
    measured: dict[str, float] = {}
    fit = fit_and_score(PARAMS, tiny, family="scratch_cnn", epochs=5, seed=0, deadline=time.monotonic(),
                        measured=measured)
    assert fit.stopped == "deadline" and len(fit.history) == 1 and fit.best_epoch == 1
    assert fit.mflops_per_image > 0 and fit.images_per_second > 0
    assert measured["mflops_per_image"] == fit.mflops_per_image and measured["train_images_per_second"] > 0


def test_a_flops_ceiling_rejects_before_training_and_a_slow_first_epoch_stops(tiny) -> None:
    measured: dict[str, float] = {}
    with pytest.raises(OverCostCeiling, match=r"MFLOPs per image > max_mflops_per_image 0.01; rejected before training"):
        fit_and_score(PARAMS, tiny, family="scratch_cnn", epochs=3, seed=0, ceiling=CostCeiling(max_mflops_per_image=0.01),
                      measured=measured)
    assert "train_images_per_second" not in measured and measured["mflops_per_image"] > 0.01
    with pytest.raises(OverCostCeiling, match="> max_seconds_per_epoch 1e-06; stopped in the first epoch"):
        fit_and_score(PARAMS, tiny, family="scratch_cnn", epochs=3, seed=0, ceiling=CostCeiling(max_seconds_per_epoch=1e-6))


def test_space_cost_ceilings_are_positive_numbers() -> None:
    base = {"name": "t", "family": "scratch_cnn", "params": {"n_blocks": 2}}
    assert parse_space({**base, "max_mflops_per_image": 400}).extra["max_mflops_per_image"] == 400
    with pytest.raises(SpaceError, match="'max_seconds_per_epoch' must be a positive number; got -1"):
        parse_space({**base, "max_seconds_per_epoch": -1})


@pytest.mark.parametrize("engine", ["optuna", "keras-tuner"])
def test_search_timeout_is_a_deadline_for_the_running_trial(tracking: Path, engine: str) -> None:
    """2 s of search, 60 epochs asked for: the first trial stops at the first epoch end after the deadline,
    completes (it is not failed), and no further trial starts after it."""
    config = tiny_config(tracking, trials=5, epochs=60, timeout=2.0, engine=engine, tuner="random", register=False,
                         refit="never")  # the refit of a 60-epoch setup is tests/test_refit.py's business
    result = search.run(config)
    c = search.tracking.client()
    runs = children(c, result.parent_run_id)
    assert 1 <= len(runs) <= 2  # Optuna may start one more trial in the moments before its own clock runs out
    for run in runs:
        assert run.data.tags["hemabench.state"] == "COMPLETE"
        assert "stopped at the search deadline" in run.data.tags["hemabench.reason"]
        assert run.data.metrics["epochs_run"] < 60
        assert run.data.metrics["mflops_per_image"] > 0 and run.data.metrics["train_images_per_second"] > 0
    assert result.best is not None


@pytest.mark.parametrize("engine", list_engines())
def test_a_trial_over_the_cost_ceiling_is_pruned_with_its_reason(tracking: Path, engine: str,
                                                                  capsys: pytest.CaptureFixture) -> None:
    space = tracking / "tiny_space.yaml"
    space.write_text("name: tiny\nfamily: scratch_cnn\nmax_mflops_per_image: 1\nparams:\n"
                     "  n_blocks: 2\n  filters_1: {type: categorical, choices: [8, 64], default: 8}\n  filters_2: 8\n"
                     "  learning_rate: 1.0e-3\n  batch_size: 16\n")
    config = tiny_config(tracking, space=str(space), trials=4, register=False, sampler="random", engine=engine,
                         tuner="random")
    result = search.run(config)
    assert "Traceback" not in capsys.readouterr().err  # one line on the trial, no engine's traceback dump
    states = {r.data.tags["hemabench.state"]: r for r in children(search.tracking.client(), result.parent_run_id)}
    assert "over the cost ceiling" in states["PRUNED"].data.tags["hemabench.reason"]  # filters_1=64 costs > 1 MFLOP at 32 px
    assert states["PRUNED"].data.metrics["mflops_per_image"] > 1 and "COMPLETE" in states
