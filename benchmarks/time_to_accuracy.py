"""Time to accuracy: what a search's champion scores on the test split after 10, 30 and 60 minutes.

Runs one study with a deadline (`--minutes`' largest value), then, for each checkpoint, takes the trial that was
best on VALIDATION among those finished by then (the champion a user would have had, had they stopped there),
loads its logged model and scores it on the test split with class- (and group-) stratified 95 % bootstrap
intervals. Test decides nothing: it is read once per checkpoint, after the search. Prints one Markdown row per
checkpoint, with the command, date and machine.

    python benchmarks/time_to_accuracy.py --data datasets/blood_cells_kaggle.yaml --space mobilenet_v2 \\
        --weights ../shared/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_1.0_224_no_top.h5 --minutes 10,30,60

With `--finish`, the search then runs its own finish as `make search` does (the refit of the best configuration
at full budget when it trained on less, and the greedy ensemble adopted only when it wins on validation), registers
the champion, and one more row scores that champion on the test split, at the minute the search ended. With
`--refit-full` too, the champion is retrained on train + validation (bench.search.refit_full): a `(chosen fit)` row
scores the fit it retrains, the finished row the retrained model; both carry the chosen fit's validation score.
With `--bag-folds K` instead, the best trial's configuration is bagged over K grouped folds of train + validation
(bench.search.bag): the finished row scores the bag, with its out-of-fold score in the Val F1 column (the search's
own output also prints the fit validation chose before it: the `final fit` line).

Under the table it prints the last row's test mistakes by source group (bench.metrics.group_losses): on the Kaggle
TEST one monocyte smear is 155 images, 6.2 accuracy points. `--score-run PARENT_RUN_ID` searches nothing and scores
the checkpoints of a study already in the store (one whose process died after its deadline, say).

Tracking goes to `MLFLOW_TRACKING_URI` (default: sqlite under `--workdir`), so the study can be opened in the UI.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
from pathlib import Path

import mlflow
import pandas as pd

LOST_ROWS = 5


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--space", default="scratch_cnn")
    parser.add_argument("--minutes", default="10,30,60", help="checkpoints; the largest is the search's deadline")
    parser.add_argument("--weights", default="imagenet")
    parser.add_argument("--image-size", default="")
    parser.add_argument("--epochs", default="10")
    parser.add_argument("--seed", default="0")
    parser.add_argument("--pruner", default="median")
    parser.add_argument("--finish", action="store_true", help="refit and ensemble after the deadline, as `search` does")
    parser.add_argument("--refit-full", action="store_true",
                        help="with --finish: retrain the champion on train + validation (search's refit_full); the "
                             "table then has a row for the chosen fit and one for it retrained")
    parser.add_argument("--bag-folds", type=int, default=0,
                        help="with --finish: bag the best configuration over K grouped folds of train + validation "
                             "(search's bag_folds); the finished row scores the bag")
    parser.add_argument("--workdir", default="time_to_accuracy")
    parser.add_argument("--experiment", default="time-to-accuracy")
    parser.add_argument("--score-run", default="", metavar="PARENT_RUN_ID",
                        help="search nothing: score the checkpoints of this finished study's parent run (in the "
                             "same store), e.g. one whose search died after its deadline")
    args = parser.parse_args(argv)
    checkpoints = sorted(float(m) for m in args.minutes.split(","))
    work = Path(args.workdir).resolve()
    work.mkdir(parents=True, exist_ok=True)
    if "MLFLOW_TRACKING_URI" not in os.environ:
        # The store and the models both under --workdir (MLflow would put the artifacts in ./mlruns of the cwd).
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{work / 'mlflow.db'}"
        if mlflow.MlflowClient().get_experiment_by_name(args.experiment) is None:
            mlflow.create_experiment(args.experiment, artifact_location=(work / "artifacts").as_uri())
    mlflow.set_tracking_uri(os.environ["MLFLOW_TRACKING_URI"])

    from bench.data import load_dataset
    from bench.metrics import bootstrap_intervals, group_losses
    from bench.search import make_config
    from bench.search import study as search
    from bench.search.budget import UNLIMITED_TRIALS
    from bench.search.finish import load_keras_model
    from bench.search.refit_full import RETRAINED
    from bench.tracking import tags as tag
    from bench.training import predict_proba

    values = dict(data=args.data, space=args.space, trials=UNLIMITED_TRIALS, timeout=checkpoints[-1] * 60,
                  epochs=args.epochs, weights=args.weights, seed=args.seed, pruner=args.pruner,
                  experiment=args.experiment,
                  # Without --finish it scores trials, so it trains nothing after the deadline.
                  **(dict(register="true", registered_model=f"tta-{args.space}", refit_full=args.refit_full,
                          bag_folds=args.bag_folds)
                     if args.finish else
                     dict(register="false", refit="never", ensemble="false")),
                  storage=str(work / "optuna.journal"),
                  study=f"tta-{args.space}-{dt.datetime.now():%Y%m%d%H%M%S}")
    if args.image_size:
        values["image_size"] = args.image_size
    config = make_config(**values)
    result = None if args.score_run else search.run(config)
    parent_run_id = args.score_run or result.parent_run_id
    dataset = load_dataset(config.data, image_size=config.image_size, seed=config.seed)

    runs = mlflow.search_runs(filter_string=f"tags.mlflow.parentRunId = '{parent_run_id}'",
                              search_all_experiments=True)
    start = pd.to_datetime(mlflow.get_run(parent_run_id).info.start_time, unit="ms", utc=True)
    runs = runs[runs["tags.hemabench.state"] == "COMPLETE"]
    objective = f"metrics.{config.objective}"
    rows, last = [], None

    def row(minutes: str, champion: str, done: int, val: float, model) -> str:
        nonlocal last
        prob = last = predict_proba(model, dataset.x_test)
        ci = bootstrap_intervals(dataset.y_test, prob, groups=dataset.groups_test, n_resamples=1000)
        acc, f1 = ci["accuracy"], ci["f1_macro"]
        return (f"| {minutes} | {champion} | {done} | {val:.3f} | {acc.value:.3f} [{acc.low:.3f}, {acc.high:.3f}] | "
                f"{f1.value:.3f} [{f1.low:.3f}, {f1.high:.3f}] | {val - f1.value:+.3f} |")

    for minutes in checkpoints:
        done = runs[runs["end_time"] <= start + pd.Timedelta(minutes=minutes)]
        with_model = done[done["tags.hemabench.model_uri"].fillna("") != ""] if len(done) else done
        if with_model.empty:
            rows.append(f"| {minutes:g} | – | {len(done)} | – | – | – | – |")
            continue
        best = with_model.sort_values(objective, ascending=False).iloc[0]
        rows.append(row(f"{minutes:g}", best["tags.hemabench.trial"], len(done), float(best[objective]),
                        load_keras_model(best["tags.hemabench.model_uri"])))
    if args.finish and result is not None and result.model_version:
        c = mlflow.MlflowClient()
        version = c.get_model_version(config.registered_model, result.model_version)
        label = c.get_run(result.parent_run_id).data.tags[tag.CHAMPION_FIT]
        if tag.REFIT_FULL_OF in version.tags:  # the fit it retrains, like with like: same setup, train alone
            chosen = c.get_run(version.tags[tag.REFIT_FULL_OF]).data.tags
            rows.append(row("(chosen fit)", label.removesuffix(RETRAINED), len(runs),
                            float(version.tags[config.objective]), load_keras_model(chosen[tag.MODEL_URI])))
        rows.append(row(f"{result.seconds / 60:.0f} (finished)", label, len(runs),
                        float(version.tags[config.objective]), load_keras_model(version.source)))
    from bench import machine
    print(f"\n{args.space} on {dataset.name} ({config.image_size} px), {dt.date.today()}, "
          f"{machine.describe()}, command: python "
          f"{' '.join([sys.argv[0], *(argv or sys.argv[1:])])}")
    print("| Minutes | Champion trial | Trials complete | Val F1 | Test accuracy [95 % CI] | Test F1 (macro) [95 % CI] "
          "| Val − test F1 |\n|---|---|---|---|---|---|---|")
    print("\n".join(rows))
    if last is not None and dataset.groups_test is not None:
        lost = group_losses(dataset.y_test, last.argmax(axis=1), dataset.groups_test, dataset.class_names)
        print(f"\nThe last row's test mistakes by source group (the {LOST_ROWS} costing most accuracy points of "
              f"{len(lost)} groups):\n")
        print("| Class | Source group | Images | Accuracy | Most predicted | Accuracy points lost |\n"
              "|---|---|---:|---:|---|---:|")
        for r in lost.head(LOST_ROWS).to_dict("records"):
            print(f"| {r['class']} | {r['group']} | {r['images']} | {r['accuracy']:.3f} | {r['most_predicted']} | "
                  f"{100 * r['points_lost']:.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
