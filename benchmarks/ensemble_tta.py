"""What ensembling and test-time augmentation do to a finished study's scores, without training anything again.

Reads the study's leaderboard from MLflow, loads the best trials' logged models (at most bench.search.ensemble.TOP)
and, for every TTA set (bench.serving.tta), prints the validation objective and test metrics of the best trial alone
and of the greedy ensemble selected on validation, with the seconds each evaluation took (validation + test).

    MLFLOW_TRACKING_URI=sqlite:///mlflow.db .venv/bin/python benchmarks/ensemble_tta.py \\
        --experiment hemabench --study scratch_cnn-synthetic-64px [--data synthetic --image-size 64]
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="hemabench")
    parser.add_argument("--study", required=True)
    parser.add_argument("--data", default="synthetic")
    parser.add_argument("--image-size", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--objective", default="val_f1_macro")
    args = parser.parse_args(argv)

    from bench import paths, tracking
    from bench.data import load_dataset
    from bench.metrics import classification_metrics, test_key
    from bench.search import ensemble
    from bench.search.finish import leaderboard
    from bench.serving.tta import TRANSFORMS

    c = tracking.client()
    experiment = c.get_experiment_by_name(args.experiment)
    if experiment is None:
        raise SystemExit(f"no experiment {args.experiment!r} in {paths.tracking_uri()}")
    board = leaderboard(experiment.experiment_id, args.study, args.objective)
    rows = ensemble.candidates(board[board["state"] == "COMPLETE"], ensemble.TOP)
    if rows.empty:
        raise SystemExit(f"study {args.study!r} has no COMPLETE trial with a logged model")
    ds = load_dataset(args.data, image_size=args.image_size, seed=args.seed)
    models = [ensemble.load_keras_model(uri) for uri in rows["model_uri"]]
    key = test_key(args.objective)
    from bench import machine
    print(f"{datetime.date.today()}, {machine.describe()}, load average {os.getloadavg()[0]:.1f}; study "
          f"{args.study}: candidates trials {', '.join(str(t) for t in rows['trial'])} (every COMPLETE trial that "
          f"logged a model); {ds.summary}")
    print(f"\n| fit | TTA | {args.objective} | {key} | test_accuracy | test_loss | seconds (val + test) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for tta in TRANSFORMS:
        for name, pool in (("best trial", models[:1]), (f"ensemble of top {len(models)}", models)):
            if len(pool) == 1 and name != "best trial":
                continue
            started = time.perf_counter()
            bag = ensemble.select(pool, ds, args.objective, tta)
            seconds = time.perf_counter() - started
            test = classification_metrics(ds.y_test, bag.test_prob, ds.class_names, prefix="test", per_class=False)
            members = ", ".join(f"{rows['trial'].iloc[i]}:{w:.2f}" for i, w in zip(bag.keep, bag.weights))
            label = name if len(pool) == 1 else f"{name} → {members}"
            print(f"| {label} | {tta} | {bag.value:.4f} | {test[key]:.4f} | {test['test_accuracy']:.4f} | "
                  f"{test['test_loss']:.4f} | {seconds:.1f} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
