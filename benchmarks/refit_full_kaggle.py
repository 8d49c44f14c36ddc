"""Does training on train + validation lift the official TEST? (the question behind `refit_full`)

One configuration (the scratch space's defaults), one seed, `--epochs` epochs, on the Kaggle blood cells at the card's
geometry. First it trains on train alone and keeps its best epoch E on validation, as a trial does (test read once).
Then the same configuration and seed train on train + validation (bench.search.refit_full's data) with test traced
after every epoch: the epoch-E row is what `refit_full` would register; the others show how far that choice moves.
The test trace decides nothing. Under each fit, the test's costliest source groups (bench.metrics.group_losses).

    python benchmarks/refit_full_kaggle.py --seed 1
"""

from __future__ import annotations

import argparse
import dataclasses
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="datasets/blood_cells_kaggle.yaml")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()

    from bench.data import load_dataset
    from bench.metrics import group_losses
    from bench.search.refit_full import train_and_validation
    from bench.search.space import defaults, load_space
    from bench.training import fit_and_score, predict_proba, start_trial

    ds = load_dataset(args.data, seed=0)
    params = defaults(load_space("scratch_cnn"))
    print(f"train {len(ds.y_train)}, validation {len(ds.y_val)}, test {len(ds.y_test)}; seed {args.seed}", flush=True)

    def report(what: str, model) -> None:
        pred = predict_proba(model, ds.x_test).argmax(axis=1)
        print(f"{what}: test accuracy {(pred == ds.y_test).mean():.3f}", flush=True)
        if ds.groups_test is not None:
            print(group_losses(ds.y_test, pred, ds.groups_test, ds.class_names).head(4).to_string(), flush=True)

    start_trial(args.seed)
    started = time.perf_counter()
    alone = fit_and_score(params, ds, family="scratch_cnn", epochs=args.epochs, seed=args.seed)
    print(f"train alone: best epoch {alone.best_epoch} on validation (val_f1_macro {alone.best_value:.3f}), "
          f"{time.perf_counter() - started:.0f} s", flush=True)
    report(f"train alone, epoch {alone.best_epoch}", alone.model)

    traced = dataclasses.replace(train_and_validation(ds), x_val=ds.x_test, y_val=ds.y_test)  # a trace, not a choice
    start_trial(args.seed)
    started = time.perf_counter()
    both = fit_and_score(params, traced, family="scratch_cnn", epochs=args.epochs, seed=args.seed)
    trace = [round(row["val_accuracy"], 3) for row in both.history]
    print(f"train + validation, {time.perf_counter() - started:.0f} s: test accuracy after each epoch {trace}; "
          f"at epoch {alone.best_epoch} (refit_full's): {trace[alone.best_epoch - 1]:.3f}", flush=True)


if __name__ == "__main__":
    main()
