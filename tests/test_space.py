"""The YAML search-space interpreter: conditions, defaults, validation messages, both engines' suggestions."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
import yaml

from bench.errors import SpaceError
from bench.search.space import defaults, list_spaces, load_space, parse_space, suggest_keras_tuner, suggest_optuna

SPACE = {
    "name": "t",
    "family": "scratch_cnn",
    "params": {
        "n_blocks": {"type": "int", "low": 1, "high": 3, "default": 2},
        "filters": {"type": "categorical", "choices": [8, 16, 32], "default": [8, 16], "repeat": "n_blocks"},
        "optimizer": {"type": "categorical", "choices": ["adam", "sgd"], "default": "adam"},
        "momentum": {"type": "float", "low": 0.5, "high": 0.99, "default": 0.9, "when": {"optimizer": "sgd"}},
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True, "default": 1e-3},
        "epochs_fixed": 3,
    },
}


def test_repeat_parameters_exist_only_for_active_blocks() -> None:
    space = parse_space(SPACE)
    assert [p for p in space.names() if p.startswith("filters")] == ["filters_1", "filters_2", "filters_3"]
    for n_blocks in (1, 2, 3):
        fixed = {"n_blocks": n_blocks, "filters_1": 8, "filters_2": 16, "filters_3": 32, "optimizer": "adam",
                 "learning_rate": 1e-3}
        values = suggest_optuna(space, optuna.trial.FixedTrial(fixed))
        assert sorted(k for k in values if k.startswith("filters")) == [f"filters_{i}" for i in range(1, n_blocks + 1)]


def test_when_condition_adds_momentum_only_for_sgd() -> None:
    space = parse_space(SPACE)
    base = {"n_blocks": 1, "filters_1": 8, "learning_rate": 1e-3}
    adam = suggest_optuna(space, optuna.trial.FixedTrial({**base, "optimizer": "adam"}))
    sgd = suggest_optuna(space, optuna.trial.FixedTrial({**base, "optimizer": "sgd", "momentum": 0.8}))
    assert "momentum" not in adam and sgd["momentum"] == 0.8


def test_defaults_are_a_definite_model_with_per_repeat_defaults_and_fixed_values() -> None:
    assert defaults(parse_space(SPACE)) == {"n_blocks": 2, "filters_1": 8, "filters_2": 16, "optimizer": "adam",
                                            "learning_rate": 1e-3, "epochs_fixed": 3}


def test_optuna_study_samples_inside_the_declared_ranges() -> None:
    space = parse_space(SPACE)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=1))
    for _ in range(20):
        trial = study.ask()
        values = suggest_optuna(space, trial)
        study.tell(trial, 0.0)
        assert 1 <= values["n_blocks"] <= 3 and 1e-4 <= values["learning_rate"] <= 1e-1
        assert all(values[f"filters_{i}"] in (8, 16, 32) for i in range(1, values["n_blocks"] + 1))
        assert ("momentum" in values) == (values["optimizer"] == "sgd")


def test_keras_tuner_gets_the_same_names_and_defaults() -> None:
    import keras_tuner as kt

    space = parse_space(SPACE)
    hp = kt.HyperParameters()
    values = suggest_keras_tuner(space, hp)
    assert values == defaults(space)
    assert hp.get("learning_rate") == 1e-3


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": {"type": "float", "low": 0.1, "high": 0.01, "default": 0.05}}, "'lr' must have low < high; got low=0.1, high=0.01"),
        ({"lr": {"type": "float", "low": 0.0, "high": 0.1, "log": True, "default": 0.05}}, "log-scaled, so low must be > 0"),
        ({"lr": {"type": "float", "low": 0.01, "high": 0.1, "default": 0.5}}, "'lr' default must lie in [0.01, 0.1]; got 0.5"),
        ({"lr": {"type": "float", "low": 0.01, "high": 0.1, "defualt": 0.05}}, "'lr' has unknown key 'defualt'"),
        ({"lr": {"type": "double", "low": 0.01, "high": 0.1, "default": 0.05}}, "'lr' must have type one of"),
        ({"opt": {"type": "categorical", "choices": ["a"], "default": "b"}}, "'opt' default must be one of its choices"),
        ({"m": {"type": "float", "low": 0, "high": 1, "default": 0.5, "when": {"nope": 1}}}, "names unknown parameter 'nope'"),
        ({"f": {"type": "categorical", "choices": [1], "default": 1, "repeat": "optimizer"}}, "'repeat' must name an int parameter"),
        ({"n": {"type": "int", "low": 1.5, "high": 3, "default": 2}}, "must be integers"),
    ],
)
def test_a_bad_parameter_stops_with_one_line_naming_it(change: dict, message: str) -> None:
    raw = {**SPACE, "params": {**SPACE["params"], **change}}
    with pytest.raises(SpaceError) as info:
        parse_space(raw, where="bad.yaml")
    text = str(info.value)
    assert message in text and text.startswith("bad.yaml: ") and "\n" not in text


def test_unknown_top_level_key_and_missing_family_are_reported() -> None:
    with pytest.raises(SpaceError, match="unknown top-level key 'parms'"):
        parse_space({**SPACE, "parms": {}})
    with pytest.raises(SpaceError, match="missing required key 'family'"):
        parse_space({k: v for k, v in SPACE.items() if k != "family"})


def test_invalid_yaml_and_missing_file_are_one_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\nparams: {a: [1, 2\n")
    with pytest.raises(SpaceError, match="is not valid YAML") as info:
        load_space(str(bad))
    assert "\n" not in str(info.value)
    with pytest.raises(SpaceError, match="search space 'nope' not found.*available: .*scratch_cnn"):
        load_space("nope")


@pytest.mark.parametrize("name", list_spaces())
def test_every_shipped_space_loads_and_its_defaults_build_a_model(name: str) -> None:
    from bench.models import build_model

    space = load_space(name)
    model = build_model(space.family, defaults(space), image_size=32, n_classes=3, weights="none")
    assert model.output_shape == (None, 3)


def test_shipped_space_is_plain_yaml() -> None:
    raw = yaml.safe_load((Path(__file__).parent.parent / "search_spaces" / "scratch_cnn.yaml").read_text())
    assert raw["family"] == "scratch_cnn" and "learning_rate" in raw["params"]
