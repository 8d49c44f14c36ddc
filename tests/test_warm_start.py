"""Warm start: a new study's first trials are the reference setups its space can express and the best trial of an
earlier study on the same dataset."""

from __future__ import annotations

from pathlib import Path

import optuna
import yaml

from bench import paths
from bench.search import study as search
from bench.search.engines.optuna_storage import make_storage
from bench.search.space import defaults, load_space
from bench.search.warm_start import fit_to_space, references, searched
from tests.conftest import children, tiny_config


def _reference(name: str) -> dict:
    return yaml.safe_load((paths.SEARCH_SPACES_DIR / "reference" / f"{name}.yaml").read_text())["params"]


def test_a_setup_fits_only_when_the_space_can_take_every_value_it_names() -> None:
    space = load_space("scratch_cnn")
    keras_cnn = fit_to_space(space, _reference("keras_sequential_cnn"))
    assert keras_cnn is not None and {k: keras_cnn[k] for k in _reference("keras_sequential_cnn")} == _reference(
        "keras_sequential_cnn")
    assert fit_to_space(space, _reference("four_block_cnn_sgd")) is None  # dense_layers 3: the space stops at 2
    assert fit_to_space(space, {"n_blocks": 2, "kernel_size": 4}) is None  # not a choice
    assert fit_to_space(space, {"n_blocks": 2, "no_such_parameter": 1}) is None
    assert fit_to_space(space, {"n_blocks": 2, "momentum": 0.9}) is None  # inactive: the default optimizer is not sgd
    assert [name for name, _ in references(space)] == ["keras_sequential_cnn"]
    assert [name for name, _ in references(load_space("mobilenet_v2"))] == ["mobilenet_v2_frozen"]


def test_a_new_study_starts_with_the_references_then_with_an_earlier_studys_best(tracking: Path) -> None:
    first = search.run(tiny_config(tracking, trials=2, register=False))
    c = search.tracking.client()
    runs = children(c, first.parent_run_id)
    expected = fit_to_space(load_space("scratch_cnn"), _reference("keras_sequential_cnn"))
    assert {k: runs[0].data.params[k] for k in expected} == {k: str(v) for k, v in expected.items()}
    own = searched(load_space("scratch_cnn"), defaults(load_space("scratch_cnn")))  # then the space's own defaults
    assert {k: runs[1].data.params[k] for k in own} == {k: str(v) for k, v in own.items()}

    config = tiny_config(tracking, trials=1, register=False, study="second")
    second = search.run(config)
    top = max(r.data.metrics["val_f1_macro"] for r in runs)
    again = children(c, second.parent_run_id)[0]
    assert again.data.params in [r.data.params for r in runs if r.data.metrics["val_f1_macro"] == top]
    trial = optuna.load_study(study_name="second", storage=make_storage(config.storage_url)).trials[0]
    assert trial.user_attrs["warm_start"].startswith("best of study scratch_cnn-synthetic")
