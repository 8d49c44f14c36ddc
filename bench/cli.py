"""`python -m bench <command>`: parse, build a config, call the module that does the work.

Errors the user can fix (`BenchError`) print as one line on stderr and exit with status 2.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Callable

from bench.errors import BenchError

Command = tuple[str, Callable[[argparse.ArgumentParser], None], Callable[[argparse.Namespace], int]]


def _search_args(p: argparse.ArgumentParser) -> None:
    from bench.search import SearchConfig

    for field in dataclasses.fields(SearchConfig):
        p.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, default=None, metavar=type(field.default).__name__.upper(),
                       help=f"default: {field.default!r}")


def _search(ns: argparse.Namespace) -> int:
    from bench import search
    from bench.search import SearchConfig, make_config

    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(SearchConfig)}
    config = make_config(**values)  # validated before `search.run` loads TensorFlow
    search.run(config)
    return 0


def _inspect_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("action", choices=["inspect"], help="inspect: class counts per split, sizes, groups, duplicates, leakage")
    p.add_argument("--data", default="synthetic")
    p.add_argument("--image-size", type=int, default=None, help="default: the dataset card's image_size, else 64")
    p.add_argument("--seed", type=int, default=0)


def _inspect(ns: argparse.Namespace) -> int:
    from bench.data import inspect

    print(inspect(ns.data, image_size=ns.image_size, seed=ns.seed))
    return 0


def _predict_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="models:/bloodcell-classifier@champion", help="an MLflow model URI")
    p.add_argument("--output", choices=["table", "csv"], default="table")
    p.add_argument("--out", default=None, help="file for --output csv (default stdout)")
    p.add_argument("images", nargs="+")


def _predict(ns: argparse.Namespace) -> int:
    from bench.serving import predict

    return predict.main(ns.model, ns.images, output=ns.output, out_file=ns.out)


def _benchmark_args(p: argparse.ArgumentParser) -> None:
    from bench.benchmark import BenchmarkConfig

    for field in dataclasses.fields(BenchmarkConfig):
        p.add_argument(f"--{field.name.replace('_', '-')}", dest=field.name, default=None, metavar=type(field.default).__name__.upper(),
                       help=f"default: {field.default!r}")


def _benchmark(ns: argparse.Namespace) -> int:
    from bench import benchmark

    values = {f.name: getattr(ns, f.name) for f in dataclasses.fields(benchmark.BenchmarkConfig)}
    config = benchmark.make_benchmark_config(**values)  # validated before the runner loads TensorFlow
    benchmark.run(config)
    return 0


def _ui_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", default="hemabench")
    p.add_argument("--study", default=None, help="only this study's trials (default: every study)")
    p.add_argument("--objective", default=None, help="sort key (default: the objective the studies used)")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--backend-store-uri", default=None, help="default: MLFLOW_TRACKING_URI or sqlite:///mlflow.db")


def _ui(ns: argparse.Namespace) -> int:
    from bench.reporting import ui

    return ui.main(ns.experiment, port=ns.port, backend_store_uri=ns.backend_store_uri, study=ns.study,
                   objective=ns.objective)


def _leaderboard_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", default="hemabench")
    p.add_argument("--study", default=None, help="only this study's trials (default: every study)")
    p.add_argument("--objective", default=None, help="sort key (default: the objective the studies used)")
    p.add_argument("--output", choices=["table", "csv", "html"], default="table")
    p.add_argument("--out", default=None, help="write to this file instead of stdout")
    p.add_argument("--top", type=int, default=None, help="only the best N trials")


def _leaderboard(ns: argparse.Namespace) -> int:
    from bench.reporting import leaderboard

    return leaderboard.main(ns.experiment, study=ns.study, objective=ns.objective, output=ns.output,
                            out_file=ns.out, top=ns.top)


COMMANDS: list[Command] = [
    ("search", _search_args, _search),
    ("data", _inspect_args, _inspect),
    ("predict", _predict_args, _predict),
    ("benchmark", _benchmark_args, _benchmark),
    ("ui", _ui_args, _ui),
    ("leaderboard", _leaderboard_args, _leaderboard),
]


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m bench", description="HemaBench: AutoML benchmarking of blood-cell "
                                   "image classifiers, tracked in MLflow.")
    sub = root.add_subparsers(dest="command", required=True, metavar="command")
    for name, add_args, handler in COMMANDS:
        p = sub.add_parser(name, help=HELP.get(name, ""), description=HELP.get(name, ""))
        add_args(p)
        p.set_defaults(handler=handler)
    return root


HELP = {
    "search": "run a search study (Optuna or KerasTuner); every trial is an MLflow child run; registers the best model",
    "data": "inspect a dataset: class counts per split, image sizes, groups, duplicates, leakage",
    "predict": "classify image files with a registered model",
    "benchmark": "reference CNNs, searches and search strategies on the same data and budget: one table with bootstrap CIs",
    "ui": "start the MLflow UI (one worker, ~0.5 GB) and print a link that opens the experiment as a leaderboard",
    "leaderboard": "every trial of an experiment (all studies, engines, spaces), best first: table, csv or html",
}


def main(argv: list[str] | None = None) -> int:
    ns = parser().parse_args(argv)
    try:
        return ns.handler(ns)
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
