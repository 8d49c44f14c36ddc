"""The thin entry points: every MLproject parameter reaches the command, bad values are one line and exit 2."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from bench.cli import main
from bench.search import SearchConfig, make_config

ROOT = Path(__file__).resolve().parent.parent


def test_every_search_parameter_reaches_the_command_and_the_config() -> None:
    entry = yaml.safe_load((ROOT / "MLproject").read_text())["entry_points"]["search"]
    fields = {f.name for f in dataclasses.fields(SearchConfig)}
    declared = set(entry["parameters"])
    assert declared == fields - {"verbose"}
    for name in declared:
        assert f"--{name.replace('_', '-')} {{{name}}}" in entry["command"], name
        default = entry["parameters"][name]["default"]
        assert make_config(**{name: str(default)}) is not None  # MLproject's defaults parse (floats for ints too)


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["search", "--sampler", "bayes"], "The 'sampler' parameter must be one of tpe, random, cmaes, qmc. Got 'bayes' instead."),
        (["search", "--trials", "two"], "The 'trials' parameter must be of type int. Got 'two' instead."),
        (["search", "--trials", "0"], "The 'trials' parameter must be an integer >= 1. Got 0 instead."),
        (["search", "--space", "nope"], "search space 'nope' not found"),
    ],
)
def test_bad_values_stop_with_one_line_and_status_2(argv: list[str], message: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, cwd=ROOT).stdout
    for command in ("search", "benchmark", "data", "predict", "ui", "leaderboard"):
        assert command in out


@pytest.mark.parametrize("argv", [["search", "--sampler", "bayes"], ["benchmark", "--budget-unit", "hours"], ["--help"]])
def test_bad_parameters_and_help_answer_before_tensorflow_or_mlflow_load(argv: list[str]) -> None:
    code = ("import sys\nfrom bench.cli import main\ntry:\n    rc = main(sys.argv[1:])\nexcept SystemExit as e:\n"
            "    rc = e.code\nheavy = sorted(m for m in ('tensorflow', 'keras', 'mlflow', 'sklearn') if m in sys.modules)\n"
            "print('heavy:', heavy, 'rc:', rc)")
    out = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert out.stdout.strip().splitlines()[-1] == f"heavy: [] rc: {0 if argv == ['--help'] else 2}"
    assert "absl" not in out.stderr and "oneDNN" not in out.stderr


def test_importing_tensorflow_through_bench_prints_no_absl_or_onednn_lines() -> None:
    code = "import bench.models, keras\nkeras.layers.Dense(2)(keras.ops.ones((1, 3)))\nprint('built')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert out.stdout.strip() == "built"
    assert "absl" not in out.stderr and "oneDNN" not in out.stderr
